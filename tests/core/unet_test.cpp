// The paper's networks: the parameter counts the paper gives (2 classes, BatchNorm running
// statistics not counted), timm-compatible names, shapes, parameter groups.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/error.h"
#include "core/models/unet.h"

namespace {
namespace M = kdseg::models;

int64_t count(const std::vector<at::Tensor>& params) {
  int64_t n = 0;
  for (const auto& p : params) n += p.numel();
  return n;
}
int64_t count_prefix(M::UNet& net, const std::string& prefix) {
  int64_t n = 0;
  for (const auto& item : net->named_parameters()) {
    if (item.key().rfind(prefix, 0) == 0) n += item.value().numel();
  }
  return n;
}

struct Expected {
  const char* arch;
  int64_t total, encoder, decoder, head, aux;
};

TEST(UNet, ParameterCountsMatchThePaper) {
  for (const Expected& e : {Expected{"unet-resnet18d", 14494468, 11195168, 3151552, 34, 147714},
                            Expected{"unet-resnet34d", 24602628, 21303328, 3151552, 34, 147714},
                            Expected{"unet-resnet50d", 76066980, 23526688, 50179840, 130, 2360322}}) {
    M::UNet net(M::UNetOptions().encoder(kdseg::parse_enum<M::Encoder>("--arch", e.arch)));
    EXPECT_EQ(count(net->parameters()), e.total) << e.arch;
    EXPECT_EQ(count_prefix(net, "encoder."), e.encoder) << e.arch;
    EXPECT_EQ(count_prefix(net, "decoder."), e.decoder) << e.arch;
    EXPECT_EQ(count_prefix(net, "head."), e.head) << e.arch;
    EXPECT_EQ(count_prefix(net, "aux_head."), e.aux) << e.arch;
    EXPECT_EQ(count(net->encoder_parameters()) + count(net->decoder_parameters()), e.total) << e.arch;
  }
}

TEST(UNet, EncoderNamesFollowTimm) {
  M::UNet net(M::UNetOptions().encoder(M::Encoder::kResNet50d).width(0.125));
  const auto params = net->named_parameters();
  const auto buffers = net->named_buffers();
  for (const char* name : {"encoder.conv1.0.weight", "encoder.conv1.1.weight", "encoder.conv1.3.weight",
                           "encoder.conv1.6.weight", "encoder.bn1.bias", "encoder.layer1.0.conv3.weight",
                           "encoder.layer1.0.downsample.1.weight", "encoder.layer4.2.bn3.weight"}) {
    EXPECT_NE(params.find(name), nullptr) << name;
  }
  EXPECT_NE(buffers.find("encoder.layer2.0.downsample.2.running_mean"), nullptr);
  EXPECT_EQ(params.find("encoder.layer1.1.downsample.1.weight"), nullptr) << "no shortcut conv when shapes match";
}

TEST(UNet, OutputsMatchInputSizeForEveryArchitecture) {
  torch::manual_seed(0);
  for (const auto encoder : {M::Encoder::kResNet18d, M::Encoder::kResNet34d, M::Encoder::kResNet50d}) {
    M::UNet net(M::UNetOptions().encoder(encoder).width(0.125).classes(3));
    const at::Tensor x = torch::randn({2, 1, 64, 96});
    const M::UNetOutput out = net(x);
    EXPECT_EQ(out.logits.sizes(), (std::vector<int64_t>{2, 3, 64, 96}));
    EXPECT_EQ(out.aux.sizes(), (std::vector<int64_t>{2, 3, 64, 96}));
    net->eval();
    EXPECT_TRUE(net(x).logits.isfinite().all().item<bool>());
  }
  M::UNet no_aux(M::UNetOptions().width(0.125).aux_head(false));
  EXPECT_FALSE(no_aux(torch::randn({2, 1, 32, 32})).aux.defined());
}

TEST(UNet, GradientsReachEveryParameter) {
  torch::manual_seed(1);
  M::UNet net(M::UNetOptions().width(0.125).dropout(0));
  const M::UNetOutput out = net(torch::randn({2, 1, 32, 32}));
  (out.logits.pow(2).mean() + out.aux.pow(2).mean()).backward();
  for (const auto& item : net->named_parameters()) {
    ASSERT_TRUE(item.value().grad().defined()) << item.key();
    EXPECT_GT(item.value().grad().abs().sum().item<double>(), 0.0) << item.key();
  }
}

TEST(UNet, BadArchitectureOrInputIsAClearError) {
  EXPECT_THROW(kdseg::parse_enum<M::Encoder>("--arch", "unet-resnet101"), kdseg::Error);
  M::UNet net(M::UNetOptions().width(0.125));
  EXPECT_THROW(net(torch::randn({1, 3, 32, 32})), kdseg::Error);
}

}  // namespace
