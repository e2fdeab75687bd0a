#include "dist/sync_batch_norm.h"

#include <torch/torch.h>

#include "core/error.h"
#include "dist/autograd_collectives.h"

namespace kdseg::dist {

SyncBatchNorm2dImpl::SyncBatchNorm2dImpl(torch::nn::BatchNormOptions options_, Communicator* comm)
    : options(std::move(options_)), comm_(comm) {
  reset();
}

void SyncBatchNorm2dImpl::reset() {
  const int64_t c = options.num_features();
  if (options.affine()) {
    weight = register_parameter("weight", torch::ones({c}));
    bias = register_parameter("bias", torch::zeros({c}));
  }
  if (options.track_running_stats()) {
    running_mean = register_buffer("running_mean", torch::zeros({c}));
    running_var = register_buffer("running_var", torch::ones({c}));
    num_batches_tracked = register_buffer("num_batches_tracked", torch::zeros({}, torch::kLong));
  }
}

at::Tensor SyncBatchNorm2dImpl::forward(const at::Tensor& input) {
  KDSEG_CHECK(input.dim() == 4 && input.size(1) == options.num_features(), "SyncBatchNorm2d: expected [B,",
              options.num_features(), ",H,W], got ", input.sizes());
  namespace F = torch::nn::functional;
  const bool use_batch_stats = is_training() || !options.track_running_stats();
  if (!use_batch_stats) {
    return F::batch_norm(input, running_mean, running_var,
                         F::BatchNormFuncOptions().weight(weight).bias(bias).training(false).eps(options.eps()));
  }
  const int64_t c = options.num_features();
  // Sums in float64 so that E[x^2] - E[x]^2 keeps its precision at large batch sizes.
  const std::vector<int64_t> dims{0, 2, 3};
  const at::Tensor x64 = input.to(torch::kDouble);
  const at::Tensor count = torch::full({1}, static_cast<double>(input.numel() / c), x64.options());
  at::Tensor stats = torch::cat({x64.sum(dims), (x64 * x64).sum(dims), count});
  if (comm_ != nullptr && comm_->size() > 1) stats = all_reduce_sum_with_grad(stats, *comm_);
  const at::Tensor n = stats.narrow(0, 2 * c, 1);
  const at::Tensor mean = stats.narrow(0, 0, c) / n;
  const at::Tensor var = (stats.narrow(0, c, c) / n - mean * mean).clamp_min(0);
  const double total = n.item<double>();
  KDSEG_CHECK(total > 1, "SyncBatchNorm2d: a batch of ", total, " values per channel has no variance");
  if (is_training() && options.track_running_stats()) {
    torch::NoGradGuard no_grad;
    num_batches_tracked.add_(1);
    // No momentum means a cumulative average, as in BatchNorm2d.
    const double momentum = options.momentum().has_value()
                                ? *options.momentum()
                                : 1.0 / static_cast<double>(num_batches_tracked.item<int64_t>());
    running_mean.mul_(1 - momentum).add_(mean.to(running_mean.scalar_type()), momentum);
    running_var.mul_(1 - momentum).add_((var * (total / (total - 1))).to(running_var.scalar_type()), momentum);
  }
  const at::Tensor invstd = torch::rsqrt(var + options.eps()).to(input.scalar_type());
  at::Tensor out = (input - mean.to(input.scalar_type()).view({1, c, 1, 1})) * invstd.view({1, c, 1, 1});
  if (options.affine()) out = out * weight.view({1, c, 1, 1}) + bias.view({1, c, 1, 1});
  return out;
}

}  // namespace kdseg::dist
