// TorchScript models (teachers trained in Python), with files written through the same LibTorch
// serialisation that Python's torch.jit.save uses.
#include <gtest/gtest.h>
#include <torch/script.h>
#include <torch/torch.h>

#include "core/error.h"
#include "core/file_util.h"
#include "teacher/model_loader.h"
#include "tests/data/temp_dir.h"

namespace {

std::string save_script(const std::string& path, const std::string& forward) {
  torch::jit::Module module("FrozenModel");
  torch::manual_seed(2);
  module.register_parameter("w", torch::randn({3, 1, 1, 1}), false);
  module.define(forward);
  module.save(path);
  return path;
}

TEST(TorchScriptModel, LoadsChecksAndRuns) {
  kdseg::test::TempDir dir;
  const auto teacher = kdseg::teacher::load_torchscript_model(
      save_script(dir.file("t.pt"), "def forward(self, x):\n    return torch.conv2d(x, self.w)\n"));
  EXPECT_EQ(teacher->classes(), 3);
  const at::Tensor x = torch::randn({4, 1, 32, 40});
  const at::Tensor out = teacher->logits(x);
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{4, 3, 32, 40}));
  EXPECT_FALSE(out.requires_grad());
  // Tuples (e.g. main and auxiliary heads): the first element.
  const auto pair = kdseg::teacher::load_torchscript_model(
      save_script(dir.file("pair.pt"), "def forward(self, x):\n    return (torch.conv2d(x, self.w), x)\n"));
  EXPECT_TRUE(pair->logits(x).equal(out));
}

TEST(TorchScriptModel, WrongOutputsAndFilesAreClearErrors) {
  kdseg::test::TempDir dir;
  const auto error_of = [](const std::string& path) {
    try {
      kdseg::teacher::load_torchscript_model(path);
    } catch (const kdseg::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(error_of(save_script(dir.file("scalar.pt"), "def forward(self, x):\n    return x.mean()\n"))
                .find("returned []; a teacher must"),
            std::string::npos)
      << error_of(dir.file("scalar.pt"));
  EXPECT_NE(error_of(save_script(dir.file("one.pt"), "def forward(self, x):\n    return x\n")).find("with C >= 2"),
            std::string::npos);
  EXPECT_NE(error_of(dir.file("missing.pt")).find("no such TorchScript file"), std::string::npos);
  kdseg::write_file_atomic(dir.file("junk.pt"), "junk");
  EXPECT_NE(error_of(dir.file("junk.pt")).find("not a TorchScript file"), std::string::npos);
}

}  // namespace
