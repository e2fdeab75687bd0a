#include "dist/sync_batch_norm.h"

#include <torch/torch.h>

#include "core/error.h"

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

namespace {
using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Normalisation with given global statistics, and its gradient including the statistics'
// dependence on every rank's input. Forward and the local part of backward are LibTorch's
// fused batch-norm kernels in evaluation mode (the global mean and variance passed as the
// "running" statistics); backward adds the cross-rank terms:
//   dx = w invstd (g - sum(g)/N - xhat sum(g xhat)/N),
// with both sums over all ranks (one all-reduce of [2C]) and N the global count, a float64
// tensor [1] that stays on the device (no host synchronisation).
class NormaliseWithGlobalStatistics : public torch::autograd::Function<NormaliseWithGlobalStatistics> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& input, const Tensor& weight, const Tensor& bias,
                        const Tensor& mean, const Tensor& var, const Tensor& count, double eps, int64_t comm) {
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["comm"] = comm;
    ctx->save_for_backward({input, weight, mean, var, count});
    return std::get<0>(at::native_batch_norm(input, weight, bias, mean, var, /*training=*/false, 0.0, eps));
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor &input = saved[0], &weight = saved[1], &mean = saved[2], &var = saved[3], &count = saved[4];
    const double eps = ctx->saved_data["eps"].toDouble();
    auto* comm = reinterpret_cast<Communicator*>(ctx->saved_data["comm"].toInt());
    const Tensor grad = grads[0].contiguous(input.suggest_memory_format());
    // Evaluation-mode backward: dx = w invstd g, dw = sum(g xhat), db = sum(g), all local. The
    // CPU kernels and CUDA's fused one read the "running" statistics; CUDA's channels-last
    // kernel reads save_mean and save_invstd, which must be defined: the same statistics.
    const Tensor invstd64 = torch::rsqrt(var.to(torch::kDouble) + eps);
    auto [dx, dw, db] =
        at::native_batch_norm_backward(grad, input, weight, mean, var, mean, invstd64.to(var.scalar_type()),
                                       /*train=*/false, eps, {true, true, true});
    const int64_t c = input.size(1);
    Tensor sums = torch::cat({db, dw}).to(torch::kDouble);
    if (comm != nullptr && comm->size() > 1) comm->all_reduce(sums, ReduceOp::kSum);
    const Tensor sum_g = sums.narrow(0, 0, c), sum_g_xhat = sums.narrow(0, c, c);
    const Tensor w = weight.to(torch::kDouble);
    // dx += a (x - mean) + b per channel, from -w invstd (sum_g + xhat sum_g_xhat) / N.
    const Tensor a = -w * invstd64 * invstd64 * sum_g_xhat / count;
    const Tensor b = -w * invstd64 * sum_g / count;
    const auto channel = [&](const Tensor& t, at::ScalarType dtype) { return t.to(dtype).view({1, c, 1, 1}); };
    if (dx.scalar_type() == torch::kFloat || dx.scalar_type() == torch::kDouble) {
      // In place, as a x + (b - a mean): float32 keeps the cancellation harmless.
      dx.addcmul_(input, channel(a, dx.scalar_type())).add_(channel(b - mean.to(torch::kDouble) * a, dx.scalar_type()));
    } else {
      // bf16 activations: the correction in float32 around the mean, rounded once.
      const Tensor centred = input.to(torch::kFloat) - channel(mean, torch::kFloat);
      dx = dx.to(torch::kFloat)
               .addcmul_(centred, channel(a, torch::kFloat))
               .add_(channel(b, torch::kFloat))
               .to(dx.scalar_type());
    }
    return {dx, dw, db, Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

}  // namespace

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
  // Every rank holds at least one value per channel, so the global count exceeds 1 with two
  // ranks or more; checked from shapes, without waiting for the statistics.
  const int64_t local_count = input.numel() / c;
  const int ranks = comm_ != nullptr ? comm_->size() : 1;
  KDSEG_CHECK(local_count >= 1 && local_count * ranks > 1, "SyncBatchNorm2d: a batch of ", local_count,
              " values per channel on ", ranks, " rank(s) has no variance");
  at::Tensor mean, var, n;
  {
    torch::NoGradGuard no_grad;  // NormaliseWithGlobalStatistics differentiates through them itself
    // Each rank's statistics from ATen's Welford reduction (one pass; half-precision activations
    // of bf16 autocast summed in float32), merged across ranks in float64 as sums
    // [n mean, n (var + mean^2), n] so that E[x^2] - E[x]^2 keeps its precision.
    const bool low_precision = input.scalar_type() != torch::kFloat && input.scalar_type() != torch::kDouble;
    const std::vector<int64_t> dims{0, 2, 3};
    const auto [local_var, local_mean] =
        torch::var_mean(low_precision ? input.to(torch::kFloat) : input, dims, /*unbiased=*/false, /*keepdim=*/false);
    const at::Tensor m = local_mean.to(torch::kDouble), v = local_var.to(torch::kDouble);
    const at::Tensor count = torch::full({1}, static_cast<double>(local_count), m.options());
    at::Tensor stats = torch::cat({m * count, (v + m * m) * count, count});
    if (ranks > 1) comm_->all_reduce(stats, ReduceOp::kSum);
    n = stats.narrow(0, 2 * c, 1);
    const at::Tensor mean64 = stats.narrow(0, 0, c) / n;
    const at::Tensor var64 = (stats.narrow(0, c, c) / n - mean64 * mean64).clamp_min(0);
    if (is_training() && options.track_running_stats()) {
      num_batches_tracked.add_(1);
      // No momentum means a cumulative average, as in BatchNorm2d.
      const at::Tensor momentum = options.momentum().has_value()
                                      ? torch::full({1}, *options.momentum(), m.options())
                                      : 1.0 / num_batches_tracked.to(torch::kDouble).reshape({1});
      const auto update = [&](at::Tensor& running, const at::Tensor& batch) {
        running.copy_(running.to(torch::kDouble) * (1 - momentum) + batch * momentum);
      };
      update(running_mean, mean64);
      update(running_var, var64 * (n / (n - 1)));  // unbiased, as BatchNorm2d keeps it
    }
    // The statistics in the parameters' dtype, as the fused kernels take them.
    const auto dtype = weight.defined() ? weight.scalar_type() : (low_precision ? torch::kFloat : input.scalar_type());
    mean = mean64.to(dtype);
    var = var64.to(dtype);
  }
  // Without affine parameters: the identity ones (autograd's function inputs must be defined).
  const at::Tensor w = weight.defined() ? weight : torch::ones({c}, mean.options());
  const at::Tensor b = bias.defined() ? bias : torch::zeros({c}, mean.options());
  return NormaliseWithGlobalStatistics::apply(input, w, b, mean, var, n, options.eps(),
                                              reinterpret_cast<int64_t>(comm_));
}

}  // namespace kdseg::dist
