#include "core/losses/dml.h"

#include <torch/torch.h>

#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/losses/dml_cpu_kernels.h"

namespace kdseg::losses {
namespace {

using detail::Flat;
using detail::KernelSums;
using detail::kMaxFusedClasses;
using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::string shape_str(const Tensor& t) {
  std::ostringstream out;
  out << t.sizes();
  return out.str();
}

// Reduced precision (bf16/f16, e.g. under autocast) is computed in float32.
Tensor to_compute_dtype(const Tensor& t) {
  return t.scalar_type() == torch::kFloat || t.scalar_type() == torch::kDouble ? t : t.to(torch::kFloat);
}

Flat flatten_inputs(const Tensor& prob_in, const Tensor& target, const Tensor& keep_in, const DmlOptions& options) {
  KDSEG_CHECK(prob_in.defined() && prob_in.dim() >= 3,
              "DML: prediction must be [B,C,*spatial] with at least one spatial dimension, got ",
              prob_in.defined() ? shape_str(prob_in) : std::string("an undefined tensor"));
  KDSEG_CHECK(prob_in.is_floating_point(), "DML: prediction must be floating point, got ", prob_in.scalar_type());
  Flat f;
  const Tensor prob = to_compute_dtype(prob_in);
  const int64_t batch = prob.size(0), classes = prob.size(1);
  const auto spatial = prob.sizes().slice(2);
  f.prob = prob.reshape({batch, classes, -1}).contiguous();
  f.hard = !target.is_floating_point();
  if (f.hard) {
    KDSEG_CHECK(target.scalar_type() == torch::kLong, "DML: hard target must be int64, got ", target.scalar_type());
    KDSEG_CHECK(target.dim() == prob.dim() - 1 && target.size(0) == batch && target.sizes().slice(1) == spatial,
                "DML: hard target shape ", shape_str(target), " does not match prediction ", shape_str(prob),
                " (expected [B,*spatial])");
    f.target = target.reshape({batch, -1}).contiguous();
  } else {
    KDSEG_CHECK(target.sizes() == prob.sizes(), "DML: soft target shape ", shape_str(target),
                " differs from prediction ", shape_str(prob));
    f.target = target.detach().to(prob.scalar_type()).reshape({batch, classes, -1}).contiguous();
  }
  Tensor keep;
  if (keep_in.defined()) {
    KDSEG_CHECK(keep_in.scalar_type() == torch::kBool, "DML: keep mask must be bool, got ", keep_in.scalar_type());
    KDSEG_CHECK(keep_in.dim() == prob.dim() - 1 && keep_in.size(0) == batch && keep_in.sizes().slice(1) == spatial,
                "DML: keep mask shape ", shape_str(keep_in), " does not match prediction ", shape_str(prob));
    keep = keep_in.reshape({batch, -1});
  }
  if (f.hard && options.ignore_index().has_value()) {
    const Tensor not_ignored = f.target != *options.ignore_index();
    keep = keep.defined() ? keep.logical_and(not_ignored) : not_ignored;
  }
  if (keep.defined()) f.keep = keep.to(prob.device()).contiguous();
  return f;
}

void check_hard_range(const Flat& f, int64_t classes) {
  Tensor bad = (f.target < 0).logical_or(f.target >= classes);
  if (f.keep.defined()) bad = bad.logical_and(f.keep);
  if (bad.any().item<bool>()) {
    const Tensor values = std::get<0>(at::_unique(f.target.masked_select(bad)));
    KDSEG_THROW("DML: hard target holds values ", shape_str(values), " ", values.slice(0, 0, 8).cpu(), " outside [0, ",
                classes, ") on pixels that are not excluded; set ignore_index or pass a keep mask");
  }
}

DmlStatistics finish_statistics(const Tensor& sx, const Tensor& sy, const Tensor& sd, Tensor target_max, bool hard) {
  DmlStatistics s;
  s.tp = (sx + sy - sd) * 0.5;
  s.fp = sx - s.tp;
  s.fn = sy - s.tp;
  s.target_max = std::move(target_max);
  s.hard_target = hard;
  return s;
}

// The prediction x and the target y of f as [B,C,N] in f's dtype, both zero on excluded pixels;
// hard labels become their one-hot, clamped into [0,C) after the range check if `check_labels`.
struct DenseMasked {
  Tensor x, y;
};
DenseMasked one_hot_masked(const Flat& f, bool check_labels) {
  const int64_t classes = f.prob.size(1);
  Tensor y = f.target;
  if (f.hard) {
    if (check_labels) check_hard_range(f, classes);
    y = torch::one_hot(f.target.clamp(0, classes - 1), classes).permute({0, 2, 1}).to(f.prob.scalar_type());
  }
  Tensor x = f.prob;
  if (f.keep.defined()) {
    const Tensor k = f.keep.unsqueeze(1).to(x.scalar_type());
    x = x * k;
    y = y * k;
  }
  return {x, y};
}

// What both autograd nodes below keep for backward: the flattened inputs, the target kind
// and p. An empty keep tensor stands for "keep everything" (autograd saves defined tensors).
void save_inputs(AutogradContext* ctx, const Tensor& values, const Tensor& target, const Tensor& keep, bool hard,
                 double p) {
  ctx->save_for_backward({values, target, keep});
  ctx->saved_data["hard"] = hard;
  ctx->saved_data["p"] = p;
}
Flat saved_inputs(AutogradContext* ctx, double& p) {
  const auto saved = ctx->get_saved_variables();
  p = ctx->saved_data["p"].toDouble();
  return Flat{saved[0], saved[1], saved[2].numel() > 0 ? saved[2] : Tensor(), ctx->saved_data["hard"].toBool()};
}

// Autograd node of the fused statistics of probabilities: outputs (|x|_p^p, |y|_p^p, |x-y|_p^p,
// max y), each [B,C]; only the first and third depend on the prediction. Up to
// kMaxFusedClasses classes the blocked, vectorised kernels; beyond, the per-class ones.
class FusedStatistics : public torch::autograd::Function<FusedStatistics> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& prob, const Tensor& target, const Tensor& keep,
                               bool hard, double p) {
    Flat f{prob, target, keep.numel() > 0 ? keep : Tensor(), hard};
    KernelSums s;
    if (prob.size(1) <= kMaxFusedClasses) {
      s = detail::blocked_statistics(f, p, /*softmax=*/false);
      if (s.bad_label) check_hard_range(f, prob.size(1));  // throws
    } else {
      if (hard) check_hard_range(f, prob.size(1));
      s = detail::per_class_statistics(f, p);
    }
    save_inputs(ctx, prob, target, keep, hard, p);
    ctx->mark_non_differentiable({s.sy, s.ymax});
    return {s.sx, s.sy, s.sd, s.ymax};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    double p = 1;
    const Flat f = saved_inputs(ctx, p);
    const Tensor grad = f.prob.size(1) <= kMaxFusedClasses
                            ? detail::blocked_statistics_backward(f, p, /*softmax=*/false, grads[0], grads[2])
                            : detail::per_class_statistics_backward(f, p, grads[0], grads[2]);
    return {grad, Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

// Autograd node of the fused softmax + statistics: logits in, the same four [B,C] outputs as
// FusedStatistics.
class FusedLogitStatistics : public torch::autograd::Function<FusedLogitStatistics> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& logits, const Tensor& target, const Tensor& keep,
                               bool hard, double p) {
    Flat f{logits, target, keep.numel() > 0 ? keep : Tensor(), hard};
    const KernelSums s = detail::blocked_statistics(f, p, /*softmax=*/true);
    if (s.bad_label) check_hard_range(f, logits.size(1));  // throws
    save_inputs(ctx, logits, target, keep, hard, p);
    ctx->mark_non_differentiable({s.sy, s.ymax});
    return {s.sx, s.sy, s.sd, s.ymax};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    double p = 1;
    const Flat f = saved_inputs(ctx, p);
    const Tensor grad = detail::blocked_statistics_backward(f, p, /*softmax=*/true, grads[0], grads[2]);
    return {grad, Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

Tensor active_mask(const Tensor& target_max, ActiveClasses mode, double threshold) {
  if (mode == ActiveClasses::kAll) return torch::ones_like(target_max, target_max.options().dtype(torch::kBool));
  return target_max > threshold;
}

// Per-class loss from summed statistics, any shape.
Tensor class_losses(const Tensor& tp, const Tensor& fp, const Tensor& fn, const DmlOptions& o) {
  const Tensor num = tp + o.smooth();
  const Tensor den = tp + o.alpha() * fp + o.beta() * fn + o.smooth();
  const Tensor defined = den > 0;
  const Tensor score =
      torch::where(defined, num / torch::where(defined, den, torch::ones_like(den)), torch::ones_like(den));
  Tensor loss = o.log_loss() ? -torch::log(score.clamp_min(1e-12)) : 1.0 - score;
  if (o.gamma() > 1.0) loss = loss.clamp_min(0).pow(o.gamma());
  if (!o.class_weights().empty()) {
    const int64_t classes = tp.size(-1);
    KDSEG_CHECK(static_cast<int64_t>(o.class_weights().size()) == classes, "DML: class_weights has ",
                o.class_weights().size(), " entries but the prediction has ", classes, " classes");
    loss = loss * torch::tensor(o.class_weights(), loss.options().dtype(torch::kDouble)).to(loss.options());
  }
  return loss;
}

// Masked means without data-dependent shapes, so no host synchronisation on a GPU: 0 with zero
// gradient when nothing is active. (where, not a product, so that an inactive entry passes no
// gradient at all, as with masked_select.)
Tensor masked_mean(const Tensor& values, const Tensor& active) {
  return torch::where(active, values, torch::zeros_like(values)).sum() /
         active.sum().clamp_min(1).to(values.scalar_type());
}

// Mean over active rows (dim 1: per image) or columns (dim 0: per class) of a masked matrix.
Tensor masked_mean_of_means(const Tensor& loss, const Tensor& active, int64_t dim) {
  const Tensor count = active.sum(dim);
  const Tensor means =
      torch::where(active, loss, torch::zeros_like(loss)).sum(dim) / count.clamp_min(1).to(loss.scalar_type());
  return masked_mean(means, count > 0);
}

}  // namespace

void DmlOptions::validate() const {
  KDSEG_CHECK(dataset_weight() >= 0 && image_weight() >= 0 && class_weight() >= 0,
              "DML: reduction weights must be >= 0, got dataset ", dataset_weight(), ", image ", image_weight(),
              ", class ", class_weight());
  KDSEG_CHECK(alpha() >= 0 && beta() >= 0, "DML: alpha and beta must be >= 0, got ", alpha(), " and ", beta());
  KDSEG_CHECK(gamma() >= 1, "DML: gamma must be >= 1, got ", gamma());
  KDSEG_CHECK(smooth() >= 0, "DML: smooth must be >= 0, got ", smooth());
  KDSEG_CHECK(threshold() >= 0, "DML: threshold must be >= 0, got ", threshold());
  KDSEG_CHECK(norm() >= 1, "DML: norm p must be >= 1, got ", norm());
}

DmlStatistics DmlStatistics::summed_over_batch() const {
  DmlStatistics s;
  s.tp = tp.sum(0, /*keepdim=*/true);
  s.fp = fp.sum(0, true);
  s.fn = fn.sum(0, true);
  s.target_max = target_max.amax(0, true);
  s.hard_target = hard_target;
  return s;
}

DmlStatistics dml_statistics(const Tensor& prob, const Tensor& target, const Tensor& keep, const DmlOptions& options) {
  if (!prob.device().is_cpu()) return detail::dml_statistics_composite(prob, target, keep, options);
  options.validate();
  Flat f = flatten_inputs(prob, target, keep, options);
  // Autograd functions take defined tensors only: an empty mask stands for "keep everything".
  const Tensor keep_arg = f.keep.defined() ? f.keep : torch::empty({0}, f.prob.options().dtype(torch::kBool));
  const auto out = FusedStatistics::apply(f.prob, f.target, keep_arg, f.hard, options.norm());
  return finish_statistics(out[0], out[1], out[2], out[3], f.hard);
}

namespace detail {
DmlStatistics dml_statistics_composite(const Tensor& prob, const Tensor& target, const Tensor& keep,
                                       const DmlOptions& options) {
  options.validate();
  const Flat f = flatten_inputs(prob, target, keep, options);
  const auto [x, y] = one_hot_masked(f, options.check_labels());
  const double p = options.norm();
  const auto card = [p](const Tensor& v) { return p == 1.0 ? v.abs().sum(2) : v.abs().pow(p).sum(2); };
  return finish_statistics(card(x), card(y), card(x - y), y.amax(2), f.hard);
}
}  // namespace detail

Tensor dml_from_statistics(const DmlStatistics& stats, const DmlOptions& options) {
  options.validate();
  KDSEG_CHECK(stats.tp.dim() == 2, "DML: statistics must be [B,C], got ", shape_str(stats.tp));
  const ActiveClasses mode = stats.hard_target ? options.active_hard() : options.active_soft();
  Tensor loss = torch::zeros({}, stats.tp.options());
  if (options.dataset_weight() > 0) {
    const Tensor active = active_mask(stats.target_max.amax(0), mode, options.threshold());
    const Tensor per_class = class_losses(stats.tp.sum(0), stats.fp.sum(0), stats.fn.sum(0), options);
    loss = loss + options.dataset_weight() * masked_mean(per_class, active);
  }
  if (options.image_weight() > 0 || options.class_weight() > 0) {
    const Tensor active = active_mask(stats.target_max, mode, options.threshold());
    const Tensor matrix = class_losses(stats.tp, stats.fp, stats.fn, options);
    if (options.image_weight() > 0) loss = loss + options.image_weight() * masked_mean_of_means(matrix, active, 1);
    if (options.class_weight() > 0) loss = loss + options.class_weight() * masked_mean_of_means(matrix, active, 0);
  }
  return loss;
}

Tensor dml_loss(const Tensor& logits, const Tensor& target, const Tensor& keep, const DmlOptions& options,
                const DmlStatisticsReducer& reducer) {
  KDSEG_CHECK(logits.defined() && logits.dim() >= 3, "DML: logits must be [B,C,*spatial]");
  const Tensor z = to_compute_dtype(logits);
  DmlStatistics stats;
  if (z.device().is_cpu() && z.size(1) <= kMaxFusedClasses) {
    options.validate();
    const Flat f = flatten_inputs(z, target, keep, options);
    const Tensor keep_arg = f.keep.defined() ? f.keep : torch::empty({0}, f.prob.options().dtype(torch::kBool));
    const auto out = FusedLogitStatistics::apply(f.prob, f.target, keep_arg, f.hard, options.norm());
    stats = finish_statistics(out[0], out[1], out[2], out[3], f.hard);
  } else {
    stats = dml_statistics(torch::softmax(z, 1), target, keep, options);
  }
  if (reducer) stats = reducer(stats);
  return dml_from_statistics(stats, options);
}

namespace {
// <x,y>, |x|_1, |y|_1, |x-y|_1 per class over the batch, and the target max, of softmax(logits).
struct Overlap {
  Tensor inner, sx, sy, sd, ymax;
};
Overlap overlap(const Tensor& logits, const Tensor& target, const Tensor& keep) {
  const Flat f = flatten_inputs(torch::softmax(to_compute_dtype(logits), 1), target, keep, DmlOptions());
  const auto [x, y] = one_hot_masked(f, /*check_labels=*/true);
  const std::vector<int64_t> dims{0, 2};
  return {(x * y).sum(dims), x.abs().sum(dims), y.abs().sum(dims), (x - y).abs().sum(dims), y.amax(dims)};
}

Tensor mean_over_present(const Tensor& per_class, const Tensor& ymax, bool present_only) {
  const Tensor active = present_only ? ymax > 0.01 : torch::ones_like(ymax, ymax.options().dtype(torch::kBool));
  return masked_mean(per_class, active);
}
}  // namespace

Tensor dml2_loss(const Tensor& logits, const Tensor& target, const Tensor& keep, double smooth, bool present_only) {
  const Overlap o = overlap(logits, target, keep);
  const Tensor den = o.inner + 0.5 * o.sd + smooth;
  const Tensor ok = den > 0;
  const Tensor score =
      torch::where(ok, (o.inner + smooth) / torch::where(ok, den, torch::ones_like(den)), torch::ones_like(den));
  return mean_over_present(1.0 - score, o.ymax, present_only);
}

Tensor soft_dice_loss(const Tensor& logits, const Tensor& target, const Tensor& keep, double smooth,
                      bool present_only) {
  const Overlap o = overlap(logits, target, keep);
  const Tensor den = o.sx + o.sy + 2 * smooth;
  const Tensor ok = den > 0;
  const Tensor score = torch::where(ok, (2 * o.inner + 2 * smooth) / torch::where(ok, den, torch::ones_like(den)),
                                    torch::ones_like(den));
  return mean_over_present(1.0 - score, o.ymax, present_only);
}

}  // namespace kdseg::losses
