// Encoder weights from timm/torchvision exports, with files the tests write through the same LibTorch serialisation
// that Python's torch.save / torch.jit.save use.
#include <gtest/gtest.h>
#include <torch/script.h>
#include <torch/torch.h>

#include "core/error.h"
#include "core/file_util.h"
#include "core/models/pretrained.h"
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
  EXPECT_EQ(M::encoder_tensor_name("layer2.0.downsample.1.running_var", true),
            "encoder.layer2.0.downsample.2.running_var");
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
    EXPECT_NE(std::string(e.what()).find("layer1.0.conv1.weight has shape [64, 64, 3, 3]"), std::string::npos)
        << e.what();
  }
  kdseg::write_file_atomic(dir.file("junk.pt"), "not a pickle");
  EXPECT_THROW(M::load_pretrained_encoder(*small, dir.file("junk.pt")), kdseg::Error);
}

}  // namespace
