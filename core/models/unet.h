// The paper's UNet on a ResNet-d encoder (Wang et al., MICCAI 2023): deep three-conv stem,
// average-pool shortcut downsampling, five decoder blocks (bilinear x2, concatenation with the
// skip feature, two conv3x3-BN-ReLU) of widths out x [16,8,4,2,1], dropout and a 1x1 head
// resized to the input, and an auxiliary head on the encoder's stride-16 feature.
//
// Module names follow timm's ResNets (encoder.conv1.0, encoder.layer1.0.downsample.1, ...), so
// ImageNet weights exported from timm map one to one.
#pragma once

#include <c10/core/Device.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>

#include <functional>
#include <string>
#include <vector>

#include "core/models/architecture.h"

namespace kdseg::models {

// Makes the normalisation layer for `channels` channels: BatchNorm2d by default; data
// parallel training passes SyncBatchNorm2d (kdseg::dist), which has the same parameters.
using NormFactory = std::function<torch::nn::AnyModule(int64_t channels)>;
NormFactory batch_norm_factory();

struct UNetOptions {
  TORCH_ARG(Encoder, encoder) = Encoder::kResNet18d;
  TORCH_ARG(int64_t, in_channels) = 1;
  TORCH_ARG(int64_t, classes) = 2;
  // Multiplies every channel count (tests use 1/8); 1 is the paper's network.
  TORCH_ARG(double, width) = 1.0;
  // Dropout2d before the heads.
  TORCH_ARG(double, dropout) = 0.1;
  TORCH_ARG(bool, aux_head) = true;
  TORCH_ARG(NormFactory, norm) = batch_norm_factory();
};

struct UNetOutput {
  at::Tensor logits;  // [B,classes,H,W]
  at::Tensor aux;     // [B,classes,H,W], or undefined without the auxiliary head
};

class UNetImpl : public torch::nn::Module {
 public:
  explicit UNetImpl(UNetOptions options = {});

  // x [B,in_channels,H,W] of any size: the encoder pools with ceil_mode, and the decoder resizes
  // each stage to its skip's size and the head to the input's (exact halvings when H and W are
  // divisible by 32).
  UNetOutput forward(const at::Tensor& x);

  const UNetOptions& options() const { return options_; }
  // Parameter groups: the encoder (base learning rate), the decoder and heads (10x).
  std::vector<at::Tensor> encoder_parameters() const;
  std::vector<at::Tensor> decoder_parameters() const;

 private:
  UNetOptions options_;
  std::shared_ptr<torch::nn::Module> encoder_;
  torch::nn::ModuleList decoder_{nullptr};
  torch::nn::Sequential head_{nullptr};
  torch::nn::Sequential aux_{nullptr};
};
TORCH_MODULE(UNet);

// Stores the 4-d weights of `module` channels-last (NHWC), the layout of cuDNN's fastest
// convolutions; activations follow from the first convolution on. Parameters keep their
// identity, so optimisers and hooks made before still see them.
void use_channels_last(torch::nn::Module& module);

// Whether channels-last is the faster layout for the network on `device`: on CUDA (cuDNN), and
// on CPUs with AVX-512, where oneDNN's NHWC convolutions trained 1.07-1.28x faster; on CPUs
// with AVX2 only, contiguous NCHW trained 1.36x faster (docs/benchmarks.md). A rule of the
// machine, not a timing, so that every run on it (and every rank) chooses the same.
bool channels_last_is_faster(c10::Device device);

}  // namespace kdseg::models
