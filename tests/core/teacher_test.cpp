// Encoder weights from timm/torchvision exports and TorchScript teachers, with files the tests
// write through the same LibTorch serialisation that Python's torch.save / torch.jit.save use.
#include <gtest/gtest.h>
#include <torch/script.h>
#include <torch/torch.h>

#include "core/error.h"
#include "core/file_util.h"
#include "core/models/pretrained.h"
#include "core/teacher.h"
#include "tests/data/temp_dir.h"

namespace {
namespace M = kdseg::models;

void save_dict(const c10::impl::GenericDict& dict, const std::string& path) {
  const std::vector<char> bytes = torch::pickle_save(c10::IValue(dict));
  kdseg::write_file_atomic(path, std::string_view(bytes.data(), bytes.size()));
}

TEST(Pretrained, TimmNamesLoadOneToOneWithTheRgbStemSummed) {
  kdseg::test::TempDir dir;
  torch::manual_seed(0);
  const auto options = M::UNetOptions().encoder(M::Encoder::kResNet50d).width(0.125);
  M::UNet source(options);
  c10::impl::GenericDict dict(c10::StringType::get(), c10::AnyType::get());
  int64_t expected = 0;
  for (const auto& items : {source->named_parameters(), source->named_buffers()}) {
    for (const auto& item : items) {
      if (item.key().rfind("encoder.", 0) != 0) continue;
      at::Tensor t = item.value().detach().clone();
      if (item.key() == "encoder.conv1.0.weight") t = t.repeat({1, 3, 1, 1}) / 3;  // an RGB stem
      dict.insert(item.key().substr(8), t);
      ++expected;
    }
  }
  dict.insert("fc.weight", torch::zeros({10, 16}));
  dict.insert("__source__", std::string("timm:resnet50d"));
  save_dict(dict, dir.file("resnet50d.pt"));

  torch::manual_seed(1);
  M::UNet target(options);
  const M::PretrainedReport report = M::load_pretrained_encoder(*target, dir.file("resnet50d.pt"));
  EXPECT_EQ(report.source, "timm:resnet50d");
  EXPECT_EQ(report.loaded, expected);
  EXPECT_EQ(report.skipped, std::vector<std::string>{"fc.weight"});
  const auto a = source->named_parameters(), b = target->named_parameters();
  for (const auto& item : a) {
    if (item.key().rfind("encoder.", 0) != 0) continue;
    EXPECT_LT((item.value() - *b.find(item.key())).abs().max().item<double>(), 1e-6) << item.key();
  }
  EXPECT_FALSE(source->named_parameters()["decoder.0.0.weight"].equal(target->named_parameters()["decoder.0.0.weight"]))
      << "the decoder keeps its own initialisation";
}

TEST(Pretrained, TorchvisionNamesMapTheStagesAndSkipTheStem) {
  EXPECT_EQ(M::encoder_tensor_name("layer2.0.downsample.0.weight", true), "encoder.layer2.0.downsample.1.weight");
  EXPECT_EQ(M::encoder_tensor_name("layer2.0.downsample.1.running_var", true), "encoder.layer2.0.downsample.2.running_var");
  EXPECT_EQ(M::encoder_tensor_name("layer2.0.downsample.1.weight", false), "encoder.layer2.0.downsample.1.weight");
  EXPECT_EQ(M::encoder_tensor_name("layer3.5.bn2.bias", true), "encoder.layer3.5.bn2.bias");
  EXPECT_EQ(M::encoder_tensor_name("conv1.weight", true), "");
  EXPECT_EQ(M::encoder_tensor_name("conv1.3.weight", false), "encoder.conv1.3.weight");
  EXPECT_EQ(M::encoder_tensor_name("fc.bias", false), "");
}

TEST(Pretrained, WrongNetworkIsAClearError) {
  kdseg::test::TempDir dir;
  c10::impl::GenericDict dict(c10::StringType::get(), c10::AnyType::get());
  dict.insert("layer1.0.conv1.weight", torch::zeros({64, 64, 3, 3}));  // full-width resnet18d
  dict.insert("__source__", std::string("timm:resnet18d"));
  save_dict(dict, dir.file("w.pt"));
  M::UNet small(M::UNetOptions().width(0.125));
  try {
    M::load_pretrained_encoder(*small, dir.file("w.pt"));
    FAIL();
  } catch (const kdseg::Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer1.0.conv1.weight has shape [64, 64, 3, 3]"), std::string::npos) << e.what();
  }
  kdseg::write_file_atomic(dir.file("junk.pt"), "not a pickle");
  EXPECT_THROW(M::load_pretrained_encoder(*small, dir.file("junk.pt")), kdseg::Error);
}

std::string save_script(const std::string& path, const std::string& forward) {
  torch::jit::Module module("Teacher");
  torch::manual_seed(2);
  module.register_parameter("w", torch::randn({3, 1, 1, 1}), false);
  module.define(forward);
  module.save(path);
  return path;
}

TEST(TorchScriptTeacher, LoadsChecksAndRuns) {
  kdseg::test::TempDir dir;
  const auto teacher = kdseg::load_torchscript_teacher(
      save_script(dir.file("t.pt"), "def forward(self, x):\n    return torch.conv2d(x, self.w)\n"));
  EXPECT_EQ(teacher->classes(), 3);
  const at::Tensor x = torch::randn({4, 1, 32, 40});
  const at::Tensor out = teacher->logits(x);
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{4, 3, 32, 40}));
  EXPECT_FALSE(out.requires_grad());
  // Tuples (e.g. main and auxiliary heads): the first element.
  const auto pair = kdseg::load_torchscript_teacher(
      save_script(dir.file("pair.pt"), "def forward(self, x):\n    return (torch.conv2d(x, self.w), x)\n"));
  EXPECT_TRUE(pair->logits(x).equal(out));
}

TEST(TorchScriptTeacher, WrongOutputsAndFilesAreClearErrors) {
  kdseg::test::TempDir dir;
  const auto error_of = [](const std::string& path) {
    try {
      kdseg::load_torchscript_teacher(path);
    } catch (const kdseg::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(error_of(save_script(dir.file("scalar.pt"), "def forward(self, x):\n    return x.mean()\n")).find("returned []; a teacher must"),
            std::string::npos)
      << error_of(dir.file("scalar.pt"));
  EXPECT_NE(error_of(save_script(dir.file("one.pt"), "def forward(self, x):\n    return x\n")).find("with C >= 2"),
            std::string::npos);
  EXPECT_NE(error_of(dir.file("missing.pt")).find("no such TorchScript file"), std::string::npos);
  kdseg::write_file_atomic(dir.file("junk.pt"), "junk");
  EXPECT_NE(error_of(dir.file("junk.pt")).find("not a TorchScript file"), std::string::npos);
}

}  // namespace
