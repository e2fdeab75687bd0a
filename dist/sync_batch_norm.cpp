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
// with both sums over all ranks (one all-reduce of [2C]) and N the global count.
class NormaliseWithGlobalStatistics : public torch::autograd::Function<NormaliseWithGlobalStatistics> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& input, const Tensor& weight, const Tensor& bias,
                        const Tensor& mean, const Tensor& var, double eps, double count, int64_t comm) {
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["count"] = count;
    ctx->saved_data["comm"] = comm;
    ctx->save_for_backward({input, weight, mean, var});
    return std::get<0>(at::native_batch_norm(input, weight, bias, mean, var, /*training=*/false, 0.0, eps));
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor &input = saved[0], &weight = saved[1], &mean = saved[2], &var = saved[3];
    const double eps = ctx->saved_data["eps"].toDouble(), count = ctx->saved_data["count"].toDouble();
    auto* comm = reinterpret_cast<Communicator*>(ctx->saved_data["comm"].toInt());
    const Tensor grad = grads[0].contiguous(input.suggest_memory_format());
    // Evaluation-mode backward: dx = w invstd g, dw = sum(g xhat), db = sum(g), all local.
    auto [dx, dw, db] = at::native_batch_norm_backward(grad, input, weight, mean, var, Tensor(), Tensor(),
                                                        /*train=*/false, eps, {true, true, true});
    const int64_t c = input.size(1);
    Tensor sums = torch::cat({db, dw}).to(torch::kDouble);
    if (comm != nullptr && comm->size() > 1) comm->all_reduce(sums, ReduceOp::kSum);
    const Tensor sum_g = sums.narrow(0, 0, c), sum_g_xhat = sums.narrow(0, c, c);
    const Tensor invstd = torch::rsqrt(var.to(torch::kDouble) + eps);
    const Tensor w = weight.to(torch::kDouble);
    // dx += a x + b per channel, from -w invstd (sum_g + xhat sum_g_xhat) / N.
    const Tensor a = -w * invstd * invstd * sum_g_xhat / count;
    const Tensor b = -w * invstd * sum_g / count - mean.to(torch::kDouble) * a;
    dx.addcmul_(input, a.to(dx.scalar_type()).view({1, c, 1, 1})).add_(b.to(dx.scalar_type()).view({1, c, 1, 1}));
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
  at::Tensor mean, var;
  double total = 0;
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
    const at::Tensor count = torch::full({1}, static_cast<double>(input.numel() / c), m.options());
    at::Tensor stats = torch::cat({m * count, (v + m * m) * count, count});
    if (comm_ != nullptr && comm_->size() > 1) comm_->all_reduce(stats, ReduceOp::kSum);
    const at::Tensor n = stats.narrow(0, 2 * c, 1);
    total = n.item<double>();
    KDSEG_CHECK(total > 1, "SyncBatchNorm2d: a batch of ", total, " values per channel has no variance");
    const at::Tensor mean64 = stats.narrow(0, 0, c) / n;
    const at::Tensor var64 = (stats.narrow(0, c, c) / n - mean64 * mean64).clamp_min(0);
    if (is_training() && options.track_running_stats()) {
      num_batches_tracked.add_(1);
      // No momentum means a cumulative average, as in BatchNorm2d.
      const double momentum = options.momentum().has_value()
                                  ? *options.momentum()
                                  : 1.0 / static_cast<double>(num_batches_tracked.item<int64_t>());
      running_mean.mul_(1 - momentum).add_(mean64.to(running_mean.scalar_type()), momentum);
      running_var.mul_(1 - momentum).add_((var64 * (total / (total - 1))).to(running_var.scalar_type()), momentum);
    }
    // The statistics in the parameters' dtype, as the fused kernels take them.
    const auto dtype = weight.defined() ? weight.scalar_type() : (low_precision ? torch::kFloat : input.scalar_type());
    mean = mean64.to(dtype);
    var = var64.to(dtype);
  }
  // Without affine parameters: the identity ones (autograd's function inputs must be defined).
  const at::Tensor w = weight.defined() ? weight : torch::ones({c}, mean.options());
  const at::Tensor b = bias.defined() ? bias : torch::zeros({c}, mean.options());
  return NormaliseWithGlobalStatistics::apply(input, w, b, mean, var, options.eps(), total,
                                              reinterpret_cast<int64_t>(comm_));
}

}  // namespace kdseg::dist
