#include "core/losses/dml.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <cmath>

#include "core/error.h"

namespace kdseg::losses {
namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The inputs of the statistics, flattened and validated.
struct Flat {
  Tensor prob;    // [B,C,N] float32/float64, contiguous
  Tensor target;  // hard: [B,N] int64; soft: [B,C,N] prob's dtype; contiguous
  Tensor keep;    // [B,N] bool contiguous, or undefined
  bool hard = true;
};

std::string shape_str(const Tensor& t) {
  std::ostringstream out;
  out << t.sizes();
  return out.str();
}

Flat flatten_inputs(const Tensor& prob_in, const Tensor& target, const Tensor& keep_in, const DmlOptions& options) {
  KDSEG_CHECK(prob_in.defined() && prob_in.dim() >= 3,
              "DML: prediction must be [B,C,*spatial] with at least one spatial dimension, got ",
              prob_in.defined() ? shape_str(prob_in) : std::string("an undefined tensor"));
  KDSEG_CHECK(prob_in.is_floating_point(), "DML: prediction must be floating point, got ", prob_in.scalar_type());
  Flat f;
  Tensor prob = prob_in;
  if (prob.scalar_type() != torch::kFloat && prob.scalar_type() != torch::kDouble) prob = prob.to(torch::kFloat);
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
    KDSEG_THROW("DML: hard target holds values ", shape_str(values), " ", values.slice(0, 0, 8).cpu(),
                " outside [0, ", classes, ") on pixels that are not excluded; set ignore_index or pass a keep mask");
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

// --- fused CPU kernel ------------------------------------------------------------------------

// |v|^p and its derivative d|v|^p/dv, with the p = 1 and p = 2 cases exact and fast.
template <typename T>
inline T lp(T v, double p) {
  if (p == 1.0) return std::abs(v);
  if (p == 2.0) return v * v;
  return static_cast<T>(std::pow(std::abs(static_cast<double>(v)), p));
}
template <typename T>
inline T dlp(T v, double p) {
  const T sign = static_cast<T>((v > T(0)) - (v < T(0)));
  if (p == 1.0) return sign;
  if (p == 2.0) return T(2) * v;
  return static_cast<T>(p * std::pow(std::abs(static_cast<double>(v)), p - 1.0)) * sign;
}

// Splits N pixels into chunks so that B*C*chunks work items keep every thread busy.
int64_t chunk_count(int64_t pairs, int64_t n) {
  const int64_t threads = at::get_num_threads();
  const int64_t wanted = std::max<int64_t>(1, (4 * threads + pairs - 1) / pairs);
  return std::clamp<int64_t>(n / 16384, 1, wanted);
}

template <typename scalar_t>
struct PixelTarget {
  const scalar_t* soft;   // [B,C,N] or null
  const int64_t* hard;    // [B,N] or null
  const bool* keep;       // [B,N] or null
  int64_t classes, n;

  // Target value of class c at pixel i of image b, and whether the pixel is kept.
  inline scalar_t y(int64_t b, int64_t c, int64_t i) const {
    return soft ? soft[(b * classes + c) * n + i] : static_cast<scalar_t>(hard[b * n + i] == c);
  }
  inline bool kept(int64_t b, int64_t i) const { return keep == nullptr || keep[b * n + i]; }
};

template <typename scalar_t>
void fused_forward(const Flat& f, double p, Tensor& sx, Tensor& sy, Tensor& sd, Tensor& ymax) {
  const int64_t batch = f.prob.size(0), classes = f.prob.size(1), n = f.prob.size(2);
  const int64_t pairs = batch * classes, chunks = chunk_count(pairs, n);
  const int64_t chunk = (n + chunks - 1) / chunks;
  const scalar_t* x = f.prob.data_ptr<scalar_t>();
  const PixelTarget<scalar_t> t{f.hard ? nullptr : f.target.data_ptr<scalar_t>(),
                                f.hard ? f.target.data_ptr<int64_t>() : nullptr,
                                f.keep.defined() ? f.keep.data_ptr<bool>() : nullptr, classes, n};
  // Partial sums in double: exact enough that chunking never changes float32 results visibly.
  std::vector<double> partial(static_cast<size_t>(pairs * chunks * 4), 0.0);
  at::parallel_for(0, pairs * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t pair = item / chunks, b = pair / classes, c = pair % classes;
      const int64_t lo = (item % chunks) * chunk, hi = std::min(n, lo + chunk);
      const scalar_t* xp = x + pair * n;
      double ax = 0, ay = 0, ad = 0, my = 0;
      for (int64_t i = lo; i < hi; ++i) {
        if (!t.kept(b, i)) continue;
        const scalar_t xv = xp[i], yv = t.y(b, c, i);
        ax += lp(xv, p);
        ay += lp(yv, p);
        ad += lp(static_cast<scalar_t>(xv - yv), p);
        my = std::max(my, static_cast<double>(yv));
      }
      double* out = &partial[static_cast<size_t>(item * 4)];
      out[0] = ax, out[1] = ay, out[2] = ad, out[3] = my;
    }
  });
  auto opts = torch::TensorOptions().dtype(torch::kDouble);
  Tensor all = torch::from_blob(partial.data(), {pairs, chunks, 4}, opts).sum(1);
  const Tensor maxes = torch::from_blob(partial.data(), {pairs, chunks, 4}, opts).select(2, 3).amax(1);
  all = all.to(f.prob.scalar_type()).reshape({batch, classes, 4});
  sx = all.select(2, 0).contiguous();
  sy = all.select(2, 1).contiguous();
  sd = all.select(2, 2).contiguous();
  ymax = maxes.to(f.prob.scalar_type()).reshape({batch, classes});
}

template <typename scalar_t>
Tensor fused_backward(const Flat& f, double p, const Tensor& gx_in, const Tensor& gd_in) {
  const int64_t batch = f.prob.size(0), classes = f.prob.size(1), n = f.prob.size(2);
  const int64_t pairs = batch * classes, chunks = chunk_count(pairs, n);
  const int64_t chunk = (n + chunks - 1) / chunks;
  const Tensor gx = gx_in.defined() ? gx_in.to(f.prob.scalar_type()).contiguous()
                                    : torch::zeros({batch, classes}, f.prob.options());
  const Tensor gd = gd_in.defined() ? gd_in.to(f.prob.scalar_type()).contiguous()
                                    : torch::zeros({batch, classes}, f.prob.options());
  Tensor grad = torch::empty_like(f.prob);
  const scalar_t* x = f.prob.data_ptr<scalar_t>();
  const scalar_t* gxp = gx.data_ptr<scalar_t>();
  const scalar_t* gdp = gd.data_ptr<scalar_t>();
  scalar_t* g = grad.data_ptr<scalar_t>();
  const PixelTarget<scalar_t> t{f.hard ? nullptr : f.target.data_ptr<scalar_t>(),
                                f.hard ? f.target.data_ptr<int64_t>() : nullptr,
                                f.keep.defined() ? f.keep.data_ptr<bool>() : nullptr, classes, n};
  at::parallel_for(0, pairs * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t pair = item / chunks, b = pair / classes, c = pair % classes;
      const int64_t lo = (item % chunks) * chunk, hi = std::min(n, lo + chunk);
      const scalar_t ax = gxp[pair], ad = gdp[pair];
      const scalar_t* xp = x + pair * n;
      scalar_t* gp = g + pair * n;
      for (int64_t i = lo; i < hi; ++i) {
        const scalar_t xv = xp[i], yv = t.y(b, c, i);
        gp[i] = t.kept(b, i) ? ax * dlp(xv, p) + ad * dlp(static_cast<scalar_t>(xv - yv), p) : scalar_t(0);
      }
    }
  });
  return grad;
}

// Autograd node of the fused statistics: outputs (|x|_p^p, |y|_p^p, |x-y|_p^p, max y), each
// [B,C]; only the first and third depend on the prediction.
class FusedStatistics : public torch::autograd::Function<FusedStatistics> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& prob, const Tensor& target, const Tensor& keep,
                               bool hard, double p) {
    Flat f{prob, target, keep.numel() > 0 ? keep : Tensor(), hard};
    Tensor sx, sy, sd, ymax;
    AT_DISPATCH_FLOATING_TYPES(prob.scalar_type(), "dml_fused_forward",
                               [&] { fused_forward<scalar_t>(f, p, sx, sy, sd, ymax); });
    ctx->save_for_backward({prob, target, keep});
    ctx->saved_data["hard"] = hard;
    ctx->saved_data["p"] = p;
    ctx->mark_non_differentiable({sy, ymax});
    return {sx, sy, sd, ymax};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    Flat f{saved[0], saved[1], saved[2].numel() > 0 ? saved[2] : Tensor(), ctx->saved_data["hard"].toBool()};
    const double p = ctx->saved_data["p"].toDouble();
    Tensor grad;
    AT_DISPATCH_FLOATING_TYPES(f.prob.scalar_type(), "dml_fused_backward",
                               [&] { grad = fused_backward<scalar_t>(f, p, grads[0], grads[2]); });
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
  const Tensor score = torch::where(defined, num / torch::where(defined, den, torch::ones_like(den)),
                                    torch::ones_like(den));
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

// Mean over active rows (dim 1: per image) or columns (dim 0: per class) of a masked matrix.
Tensor masked_mean_of_means(const Tensor& loss, const Tensor& active, int64_t dim) {
  const Tensor count = active.sum(dim);
  const Tensor used = count > 0;
  const Tensor sums = (loss * active).sum(dim);
  return (sums.masked_select(used) / count.masked_select(used).to(loss.scalar_type())).mean();
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

DmlStatistics dml_statistics(const Tensor& prob, const Tensor& target, const Tensor& keep,
                             const DmlOptions& options) {
  if (!prob.device().is_cpu()) return detail::dml_statistics_composite(prob, target, keep, options);
  options.validate();
  Flat f = flatten_inputs(prob, target, keep, options);
  if (f.hard) check_hard_range(f, f.prob.size(1));
  // Autograd functions take defined tensors only: an empty mask stands for "keep everything".
  const Tensor keep_arg = f.keep.defined() ? f.keep : torch::empty({0}, f.prob.options().dtype(torch::kBool));
  const auto out = FusedStatistics::apply(f.prob, f.target, keep_arg, f.hard, options.norm());
  return finish_statistics(out[0], out[1], out[2], out[3], f.hard);
}

namespace detail {
DmlStatistics dml_statistics_composite(const Tensor& prob, const Tensor& target, const Tensor& keep,
                                       const DmlOptions& options) {
  options.validate();
  Flat f = flatten_inputs(prob, target, keep, options);
  const int64_t classes = f.prob.size(1);
  Tensor y;
  if (f.hard) {
    check_hard_range(f, classes);
    y = torch::one_hot(f.target.clamp(0, classes - 1), classes).permute({0, 2, 1}).to(f.prob.scalar_type());
  } else {
    y = f.target;
  }
  Tensor x = f.prob;
  if (f.keep.defined()) {
    const Tensor k = f.keep.unsqueeze(1).to(x.scalar_type());
    x = x * k;
    y = y * k;
  }
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
    const Tensor term = active.any().item<bool>() ? per_class.masked_select(active).mean() : per_class.sum() * 0.0;
    loss = loss + options.dataset_weight() * term;
  }
  if (options.image_weight() > 0 || options.class_weight() > 0) {
    const Tensor active = active_mask(stats.target_max, mode, options.threshold());
    const Tensor matrix = class_losses(stats.tp, stats.fp, stats.fn, options);
    if (!active.any().item<bool>()) return loss + matrix.sum() * 0.0;
    if (options.image_weight() > 0) loss = loss + options.image_weight() * masked_mean_of_means(matrix, active, 1);
    if (options.class_weight() > 0) loss = loss + options.class_weight() * masked_mean_of_means(matrix, active, 0);
  }
  return loss;
}

Tensor dml_loss(const Tensor& logits, const Tensor& target, const Tensor& keep, const DmlOptions& options,
                const DmlStatisticsReducer& reducer) {
  KDSEG_CHECK(logits.defined() && logits.dim() >= 3, "DML: logits must be [B,C,*spatial]");
  Tensor z = logits;
  if (z.scalar_type() != torch::kFloat && z.scalar_type() != torch::kDouble) z = z.to(torch::kFloat);
  DmlStatistics stats = dml_statistics(torch::softmax(z, 1), target, keep, options);
  if (reducer) stats = reducer(stats);
  return dml_from_statistics(stats, options);
}

namespace {
// <x,y>, |x|_1, |y|_1, |x-y|_1 per class over the batch, and the target max, of softmax(logits).
struct Overlap {
  Tensor inner, sx, sy, sd, ymax;
};
Overlap overlap(const Tensor& logits, const Tensor& target, const Tensor& keep) {
  Tensor z = logits;
  if (z.scalar_type() != torch::kFloat && z.scalar_type() != torch::kDouble) z = z.to(torch::kFloat);
  Flat f = flatten_inputs(torch::softmax(z, 1), target, keep, DmlOptions());
  const int64_t classes = f.prob.size(1);
  Tensor y = f.target;
  if (f.hard) {
    check_hard_range(f, classes);
    y = torch::one_hot(f.target.clamp(0, classes - 1), classes).permute({0, 2, 1}).to(f.prob.scalar_type());
  }
  Tensor x = f.prob;
  if (f.keep.defined()) {
    const Tensor k = f.keep.unsqueeze(1).to(x.scalar_type());
    x = x * k;
    y = y * k;
  }
  const std::vector<int64_t> dims{0, 2};
  return {(x * y).sum(dims), x.abs().sum(dims), y.abs().sum(dims), (x - y).abs().sum(dims), y.amax(dims)};
}

Tensor mean_over_present(const Tensor& per_class, const Tensor& ymax, bool present_only) {
  const Tensor active = present_only ? ymax > 0.01 : torch::ones_like(ymax, ymax.options().dtype(torch::kBool));
  return active.any().item<bool>() ? per_class.masked_select(active).mean() : per_class.sum() * 0.0;
}
}  // namespace

Tensor dml2_loss(const Tensor& logits, const Tensor& target, const Tensor& keep, double smooth, bool present_only) {
  const Overlap o = overlap(logits, target, keep);
  const Tensor den = o.inner + 0.5 * o.sd + smooth;
  const Tensor ok = den > 0;
  const Tensor score = torch::where(ok, (o.inner + smooth) / torch::where(ok, den, torch::ones_like(den)),
                                    torch::ones_like(den));
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
