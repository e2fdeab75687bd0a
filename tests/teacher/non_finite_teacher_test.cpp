// A teacher whose logits are NaN or infinite (diverged weights, a broken export) is refused by the
// teacher pass and by the temperature fit, naming the first such slice; nothing is cached.
#include <gtest/gtest.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <filesystem>
#include <string>

#include "core/error.h"
#include "data/cache_folder.h"
#include "data/prepared_store.h"
#include "dist/communicator.h"
#include "teacher/precompute.h"
#include "tests/data/temp_dir.h"

namespace {
namespace fs = std::filesystem;

// A TorchScript teacher of two classes whose weights are `weight` (NaN or inf: every logit is).
std::string save_teacher(const std::string& path, float weight) {
  torch::jit::Module module("FrozenModel");
  module.register_parameter("w", torch::full({2, 1, 1, 1}, weight), false);
  module.register_parameter("b", torch::zeros({2}), false);
  module.define("def forward(self, x):\n    return torch.conv2d(x, self.w, self.b)\n");
  module.save(path);
  return path;
}

std::string error_of(const kdseg::teacher::PrecomputeOptions& o) {
  auto comm = kdseg::dist::make_communicator({kdseg::dist::Backend::kLocal});
  try {
    kdseg::teacher::precompute(o, *comm);
  } catch (const kdseg::Error& e) {
    return e.message();
  }
  return "no error";
}

TEST(NonFiniteTeacher, PrecomputeAndTheTemperatureFitRefuseIt) {
  kdseg::test::TempDir dir;
  const std::string store_path =
      kdseg::test::write_small_store(dir.path(), 4, 24, 6, kdseg::data::SliceSelection::kAll);
  const kdseg::data::PreparedStore store(store_path);
  // The first slice of the pass: row 0 of the store.
  const std::string first = "on slice " + std::to_string(store.slice_index()[0]) + " of case " +
                            store.case_ids()[static_cast<size_t>(store.slice_case()[0])] + " (row 0 of " + store_path +
                            ")";

  kdseg::teacher::PrecomputeOptions o;
  o.teachers = {save_teacher(dir.file("nan.pt"), std::nanf(""))};
  o.data = store_path;
  o.output = dir.file("cache-nan");
  o.workers = 1;
  std::string message = error_of(o);
  EXPECT_NE(message.find("TorchScript " + o.teachers[0] + ": its logits are not finite " + first), std::string::npos)
      << message;
  EXPECT_NE(message.find(" NaN and 0 infinite of "), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(kdseg::data::CacheFolder(o.output).master_path())) << "a NaN teacher was cached";

  // The fit meets the infinite teacher on the calibration folds' first slice, before any pass.
  o.teachers = {save_teacher(dir.file("inf.pt"), std::numeric_limits<float>::infinity())};
  o.output = dir.file("cache-inf");
  o.folds = {0};
  o.calibration_folds = {1};
  o.fit_temperature = true;
  const int64_t row = store.rows_in_folds({1}).front();
  message = error_of(o);
  EXPECT_NE(message.find(": its logits are not finite on slice " +
                         std::to_string(store.slice_index()[static_cast<size_t>(row)]) + " of case " +
                         store.case_ids()[static_cast<size_t>(store.slice_case()[static_cast<size_t>(row)])] +
                         " (row " + std::to_string(row) + " of "),
            std::string::npos)
      << message;
  EXPECT_FALSE(fs::exists(kdseg::data::CacheFolder(o.output).master_path())) << "an infinite teacher was cached";
}

}  // namespace
