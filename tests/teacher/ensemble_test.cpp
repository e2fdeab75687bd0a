// Ensembles of teachers (`kdseg precompute --teacher A --teacher B`): the cache holds the mean of
// the teachers' probabilities, every teacher's hash is in its provenance, and an ensemble whose
// members disagree on classes, repeat a file or are not finite is refused naming the file.
#include <gtest/gtest.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/hash.h"
#include "data/cache_folder.h"
#include "data/prepared_store.h"
#include "data/soft_label_cache.h"
#include "dist/communicator.h"
#include "teacher/model_loader.h"
#include "teacher/precompute.h"
#include "tests/data/temp_dir.h"

namespace {
namespace fs = std::filesystem;

// A TorchScript teacher: a 1x1 convolution from the image to `bias.size()` classes, each class's
// weight `weight * (class + 1)`.
std::string save_teacher(const std::string& path, float weight, const std::vector<float>& bias) {
  const auto classes = static_cast<int64_t>(bias.size());
  torch::jit::Module module("FrozenModel");
  module.register_parameter("w", torch::arange(1, classes + 1).to(torch::kFloat).mul(weight).view({classes, 1, 1, 1}),
                            false);
  module.register_parameter("b", torch::tensor(bias), false);
  module.define("def forward(self, x):\n    return torch.conv2d(x, self.w, self.b)\n");
  module.save(path);
  return path;
}

kdseg::teacher::PrecomputeSummary run(const kdseg::teacher::PrecomputeOptions& o) {
  auto comm = kdseg::dist::make_communicator({kdseg::dist::Backend::kLocal});
  return kdseg::teacher::precompute(o, *comm);
}

std::string error_of(const kdseg::teacher::PrecomputeOptions& o) {
  try {
    run(o);
  } catch (const kdseg::Error& e) {
    return e.message();
  }
  return "no error";
}

class Ensemble : public ::testing::Test {
 protected:
  void SetUp() override {
    store_path_ = kdseg::test::write_small_store(dir_.path(), 4, 24, 6, kdseg::data::SliceSelection::kAll);
    a_ = save_teacher(dir_.file("a.pt"), 0.8f, {0.f, 0.3f});
    b_ = save_teacher(dir_.file("b.pt"), -1.5f, {0.4f, 0.f});
  }
  kdseg::teacher::PrecomputeOptions options(std::vector<std::string> teachers, const std::string& output) const {
    kdseg::teacher::PrecomputeOptions o;
    o.teachers = std::move(teachers);
    o.data = store_path_;
    o.output = dir_.file(output);
    o.workers = 1;
    o.batch_size = 4;
    return o;
  }

  kdseg::test::TempDir dir_;
  std::string store_path_, a_, b_;
};

TEST_F(Ensemble, CachesTheMeanOfTheTeachersProbabilities) {
  run(options({a_}, "a"));
  run(options({b_}, "b"));
  run(options({a_, b_}, "ab"));
  const kdseg::data::SoftLabelCache a(dir_.file("a")), b(dir_.file("b")), ab(dir_.file("ab"));
  const kdseg::data::PreparedStore store(store_path_);
  double largest = 0, spread = 0;
  for (int64_t row = 0; row < store.slices(); ++row) {
    const at::Tensor mean = (a.probabilities(row, 1) + b.probabilities(row, 1)) / 2;
    largest = std::max(largest, (ab.probabilities(row, 1) - mean).abs().max().item<double>());
    spread = std::max(spread, (a.probabilities(row, 1) - b.probabilities(row, 1)).abs().max().item<double>());
  }
  // float16 logits: a probability to within a few thousandths; the teachers differ by far more.
  EXPECT_LT(largest, 4e-3);
  EXPECT_GT(spread, 0.2) << "the two teachers agree: the test would not see an average";

  const auto& p = ab.provenance();
  EXPECT_EQ(p.teacher_hash, kdseg::hash_file(a_) + "+" + kdseg::hash_file(b_));
  EXPECT_EQ(p.teacher_file, fs::absolute(a_).string() + " + " + fs::absolute(b_).string());
  // A cache of a single teacher keeps its one hash, as before ensembles.
  EXPECT_EQ(a.provenance().teacher_hash, kdseg::hash_file(a_));
}

TEST_F(Ensemble, TheTemperatureIsFittedToTheEnsemble) {
  auto o = options({a_, b_}, "fit");
  o.fit_temperature = true;
  o.calibration_folds = {1};
  o.folds = {0};
  const auto s = run(o);
  EXPECT_GT(s.calibration_temperature, 0);
  EXPECT_LE(s.nll_after, s.nll_before);
  EXPECT_NE(kdseg::data::SoftLabelCache(o.output).provenance().calibration.find("fitted on folds 1"),
            std::string::npos);
}

TEST_F(Ensemble, RefusesMembersThatDisagreeRepeatOrAreNotFinite) {
  const std::string copy = dir_.file("copy-of-a.pt");
  fs::copy_file(a_, copy);
  std::string message = error_of(options({a_, copy}, "repeat"));
  EXPECT_NE(message.find(copy + ": the same teacher as " + a_), std::string::npos) << message;

  const std::string three = save_teacher(dir_.file("three.pt"), 1.f, {0.f, 0.f, 0.f});
  message = error_of(options({a_, three}, "three"));
  EXPECT_NE(message.find(three + ": the teacher predicts 3 classes"), std::string::npos) << message;

  const std::string nan = save_teacher(dir_.file("nan.pt"), std::nanf(""), {0.f, 0.f});
  message = error_of(options({a_, nan}, "nan"));
  EXPECT_NE(message.find("ensemble of 2 models"), std::string::npos) << message;
  EXPECT_NE(message.find("its logits are not finite"), std::string::npos) << message;
  for (const char* name : {"repeat", "three", "nan"}) {
    EXPECT_FALSE(fs::exists(kdseg::data::CacheFolder(dir_.file(name)).master_path())) << name << " was cached";
  }

  // make_ensemble itself names the member whose classes differ.
  std::vector<std::unique_ptr<kdseg::FrozenModel>> members;
  members.push_back(kdseg::teacher::load_model(a_));
  members.push_back(kdseg::teacher::load_model(three));
  try {
    kdseg::teacher::make_ensemble(std::move(members), {a_, three});
    ADD_FAILURE() << "an ensemble of 2 and 3 classes was made";
  } catch (const kdseg::Error& e) {
    EXPECT_NE(e.message().find(three + ": predicts 3 classes but " + a_ + " predicts 2"), std::string::npos)
        << e.message();
  }
}

}  // namespace
