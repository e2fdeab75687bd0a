// SyncBatchNorm2d: batch normalisation whose batch statistics (and their gradients) are
// reduced across the ranks of a communicator, so that N ranks with batch B/N normalise like
// one rank with batch B. A drop-in for torch::nn::BatchNorm2d: same options, parameters and
// buffer names (checkpoints interchange); with no communicator or world size 1 it computes
// exactly what BatchNorm2d computes. Training-mode forward is collective.
#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/options/batchnorm.h>
#include <torch/nn/pimpl.h>

#include "dist/communicator.h"

namespace kdseg::dist {

class SyncBatchNorm2dImpl : public torch::nn::Cloneable<SyncBatchNorm2dImpl> {
 public:
  explicit SyncBatchNorm2dImpl(int64_t num_features, Communicator* comm = nullptr)
      : SyncBatchNorm2dImpl(torch::nn::BatchNormOptions(num_features), comm) {}
  SyncBatchNorm2dImpl(torch::nn::BatchNormOptions options, Communicator* comm = nullptr);

  void reset() override;
  // input [B,C,H,W].
  at::Tensor forward(const at::Tensor& input);

  torch::nn::BatchNormOptions options;
  at::Tensor weight, bias, running_mean, running_var, num_batches_tracked;

 private:
  Communicator* comm_;
};
TORCH_MODULE(SyncBatchNorm2d);

}  // namespace kdseg::dist
