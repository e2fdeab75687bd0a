#include "core/losses/dml.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <atomic>
#include <cmath>
#include <cstring>

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
  const scalar_t* hard;   // [B,N] class indices as scalar_t (exact for any class count), or null
  const bool* keep;       // [B,N] or null
  int64_t classes, n;

  // Target value of class c at pixel i of image b, and whether the pixel is kept.
  inline scalar_t y(int64_t b, int64_t c, int64_t i) const {
    return soft ? soft[(b * classes + c) * n + i] : static_cast<scalar_t>(hard[b * n + i] == static_cast<scalar_t>(c));
  }
  inline bool kept(int64_t b, int64_t i) const { return keep == nullptr || keep[b * n + i]; }
};

// The target of a kernel call: hard labels converted to scalar_t (the class compares then
// vectorise; int64 compares do not with SSE2), kept alive as long as the pointers into them.
template <typename scalar_t>
struct TargetView {
  Tensor labels;
  PixelTarget<scalar_t> target;

  explicit TargetView(const Flat& f)
      : labels(f.hard ? f.target.to(f.prob.scalar_type()) : Tensor()),
        target{f.hard ? nullptr : f.target.data_ptr<scalar_t>(), f.hard ? labels.data_ptr<scalar_t>() : nullptr,
               f.keep.defined() ? f.keep.data_ptr<bool>() : nullptr, f.prob.size(1), f.prob.size(2)} {}
};

// The incoming gradient of a [B,C] statistic in the kernel's dtype; zeros when autograd gave none.
Tensor per_class_gradient(const Tensor& grad, const Flat& f) {
  return grad.defined() ? grad.to(f.prob.scalar_type()).contiguous()
                        : torch::zeros({f.prob.size(0), f.prob.size(1)}, f.prob.options());
}

template <typename scalar_t>
void fused_forward(const Flat& f, double p, Tensor& sx, Tensor& sy, Tensor& sd, Tensor& ymax) {
  const int64_t batch = f.prob.size(0), classes = f.prob.size(1), n = f.prob.size(2);
  const int64_t pairs = batch * classes, chunks = chunk_count(pairs, n);
  const int64_t chunk = (n + chunks - 1) / chunks;
  const scalar_t* x = f.prob.data_ptr<scalar_t>();
  const TargetView<scalar_t> view(f);
  const PixelTarget<scalar_t>& t = view.target;
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
  const Tensor gx = per_class_gradient(gx_in, f), gd = per_class_gradient(gd_in, f);
  Tensor grad = torch::empty_like(f.prob);
  const scalar_t* x = f.prob.data_ptr<scalar_t>();
  const scalar_t* gxp = gx.data_ptr<scalar_t>();
  const scalar_t* gdp = gd.data_ptr<scalar_t>();
  scalar_t* g = grad.data_ptr<scalar_t>();
  const TargetView<scalar_t> view(f);
  const PixelTarget<scalar_t>& t = view.target;
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

// --- fused softmax + statistics on CPU ---------------------------------------------------------
// dml_loss on CPU never materialises the probabilities: each pixel's softmax is computed in
// registers, accumulated into the per-class sums, and recomputed in backward, where the
// gradient is taken through the softmax analytically: dz_c = p_c (g_c - sum_k p_k g_k).
// Pixels are processed in blocks of kLanes with class-outer loops and a branch-free exp, so
// that the compiler vectorises every loop (no -ffast-math needed).

constexpr int64_t kMaxFusedClasses = 32;
constexpr int kLanes = 16;

// exp(x) for x <= 0 without calls or branches: n = round(x / ln 2) by the 1.5 * 2^mantissa
// trick, a polynomial on the reduced argument, and 2^n assembled in the exponent bits.
// float: degree-6 minimax polynomial (Cephes), ~1 ulp; double: Taylor to r^12, ~2 ulp.
[[gnu::always_inline]] inline float exp_nonpositive(float x) {
  x = x < -87.0f ? -87.0f : x;
  const float magic = 12582912.0f;  // 1.5 * 2^23
  const float t = x * 1.44269504088896341f + magic;
  const float n = t - magic;
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits, magic_bits;
  std::memcpy(&bits, &t, sizeof bits);
  std::memcpy(&magic_bits, &magic, sizeof magic_bits);
  const int32_t scale_bits = (bits - magic_bits + 127) << 23;
  float scale;
  std::memcpy(&scale, &scale_bits, sizeof scale);
  return p * scale;
}
[[gnu::always_inline]] inline double exp_nonpositive(double x) {
  x = x < -708.0 ? -708.0 : x;
  const double magic = 6755399441055744.0;  // 1.5 * 2^52
  const double t = x * 1.4426950408889634 + magic;
  const double n = t - magic;
  const double r = (x - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10;
  double p = 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  int64_t bits, magic_bits;
  std::memcpy(&bits, &t, sizeof bits);
  std::memcpy(&magic_bits, &magic, sizeof magic_bits);
  const int64_t scale_bits = (bits - magic_bits + 1023) << 52;
  double scale;
  std::memcpy(&scale, &scale_bits, sizeof scale);
  return p * scale;
}

// How |v|^p is computed: the common p = 1 and p = 2 as compile-time cases.
enum class Norm { kL1, kL2, kGeneral };

template <Norm kNorm, typename T>
inline T lp_t(T v, double p) {
  if constexpr (kNorm == Norm::kL1) return std::abs(v);
  else if constexpr (kNorm == Norm::kL2) return v * v;
  else return lp(v, p);
}
template <Norm kNorm, typename T>
inline T dlp_t(T v, double p) {
  if constexpr (kNorm == Norm::kL1) return v > T(0) ? T(1) : (v < T(0) ? T(-1) : T(0));
  else if constexpr (kNorm == Norm::kL2) return T(2) * v;
  else return dlp(v, p);
}

// One block of kLanes pixels of one image: probabilities prob[c][l] (the softmax of the
// input, or the input itself when `softmax` is false), the target y[c][l] and the keep weight
// k[l] (0 or 1); prob and y are masked by k. A block at the end of a chunk is copied into
// padded buffers first (padding lanes have k = 0).
template <typename scalar_t>
struct PixelBlock {
  scalar_t prob[kMaxFusedClasses][kLanes];
  scalar_t y[kMaxFusedClasses][kLanes];
  scalar_t k[kLanes];
  bool bad_label = false;
  bool softmax = true;

  void load(const scalar_t* z, const PixelTarget<scalar_t>& t, int64_t b, int64_t i0, int width) {
    const int64_t classes = t.classes, n = t.n;
    if (width == kLanes) {
      fill(z + b * classes * n + i0, n, t.hard ? t.hard + b * n + i0 : nullptr,
           t.soft ? t.soft + b * classes * n + i0 : nullptr, t.keep ? t.keep + b * n + i0 : nullptr, classes);
      return;
    }
    scalar_t zt[kMaxFusedClasses][kLanes] = {}, st[kMaxFusedClasses][kLanes] = {};
    scalar_t lt[kLanes] = {};
    bool kt[kLanes] = {};
    for (int l = 0; l < width; ++l) {
      for (int64_t c = 0; c < classes; ++c) {
        zt[c][l] = z[(b * classes + c) * n + i0 + l];
        if (t.soft) st[c][l] = t.soft[(b * classes + c) * n + i0 + l];
      }
      if (t.hard) lt[l] = t.hard[b * n + i0 + l];
      kt[l] = t.kept(b, i0 + l);
    }
    fill(&zt[0][0], kLanes, t.hard ? lt : nullptr, t.soft ? &st[0][0] : nullptr, kt, classes);
  }

 private:
  // z, soft: class c of lane l at [c * stride + l]; labels and keep at [l] (keep may be null).
  void fill(const scalar_t* zb, int64_t stride, const scalar_t* labels, const scalar_t* soft, const bool* keep,
            int64_t classes) {
    // Written as plain loops over kLanes with selects instead of branches, so that GCC
    // vectorises them at -O3 with the baseline instruction set.
    for (int l = 0; l < kLanes; ++l) k[l] = keep == nullptr ? scalar_t(1) : static_cast<scalar_t>(keep[l]);
    if (softmax) {
      normalise(zb, stride, classes);
    } else {
      for (int64_t c = 0; c < classes; ++c) {
        const scalar_t* zc = zb + c * stride;
        for (int l = 0; l < kLanes; ++l) {
          const scalar_t v = zc[l];
          prob[c][l] = k[l] > scalar_t(0) ? v : scalar_t(0);  // a select: excluded pixels may hold anything
        }
      }
    }
    fill_target(labels, soft, stride, classes);
  }

  // prob = softmax over classes of the logits, times k.
  void normalise(const scalar_t* zb, int64_t stride, int64_t classes) {
    scalar_t top[kLanes], total[kLanes];
    for (int l = 0; l < kLanes; ++l) {
      top[l] = zb[l];
      total[l] = 0;
    }
    for (int64_t c = 1; c < classes; ++c) {
      const scalar_t* zc = zb + c * stride;
      for (int l = 0; l < kLanes; ++l) {
        const scalar_t current = top[l], candidate = zc[l];  // loads hoisted: selects, not branches
        top[l] = current > candidate ? current : candidate;
      }
    }
    for (int64_t c = 0; c < classes; ++c) {
      const scalar_t* zc = zb + c * stride;
      scalar_t* pc = prob[c];
#pragma GCC ivdep
      for (int l = 0; l < kLanes; ++l) {
        pc[l] = exp_nonpositive(zc[l] - top[l]);
        total[l] += pc[l];
      }
    }
    for (int l = 0; l < kLanes; ++l) total[l] = k[l] / total[l];
    for (int64_t c = 0; c < classes; ++c) {
      scalar_t* pc = prob[c];
      for (int l = 0; l < kLanes; ++l) pc[l] *= total[l];
    }
  }

  // y: one-hot of the labels or the soft target, times k; flags labels outside [0, classes).
  void fill_target(const scalar_t* labels, const scalar_t* soft, int64_t stride, int64_t classes) {
    if (labels) {
      const scalar_t limit = static_cast<scalar_t>(classes);
      scalar_t bad = 0;
      for (int l = 0; l < kLanes; ++l) {
        const scalar_t kv = k[l], lv = labels[l];
        bad += kv * static_cast<scalar_t>((lv < 0) | (lv >= limit));  // no short-circuit branches
      }
      bad_label |= bad != 0;
      // One-hot as arithmetic on integral values, max(0, 1 - |label - c|): GCC vectorises this
      // where it turns a compare-and-select into branches.
      scalar_t kl[kLanes], ll[kLanes];
      for (int l = 0; l < kLanes; ++l) {
        kl[l] = k[l];
        ll[l] = labels[l];
      }
      for (int64_t c = 0; c < classes; ++c) {
        const scalar_t cc = static_cast<scalar_t>(c);
        scalar_t* __restrict yc = y[c];
        for (int l = 0; l < kLanes; ++l) {
          const scalar_t match = scalar_t(1) - std::abs(ll[l] - cc);
          yc[l] = kl[l] * (match > scalar_t(0) ? match : scalar_t(0));
        }
      }
    } else {
      for (int64_t c = 0; c < classes; ++c) {
        for (int l = 0; l < kLanes; ++l) y[c][l] = soft[c * stride + l] * k[l];
      }
    }
  }
};

// The statistics of blocks of pixels: of softmax(f.prob) (kSoftmax: logits in) or of f.prob
// itself (probabilities in). Lane sums in scalar_t over at most 256 blocks, then in double.
template <typename scalar_t, Norm kNorm, bool kSoftmax>
void blocked_forward(const Flat& f, double p, Tensor& sx, Tensor& sy, Tensor& sd, Tensor& ymax, bool& bad_label) {
  const int64_t batch = f.prob.size(0), classes = f.prob.size(1), n = f.prob.size(2);
  const int64_t chunks = chunk_count(batch, n), chunk = (n + chunks - 1) / chunks;
  const scalar_t* z = f.prob.data_ptr<scalar_t>();
  const TargetView<scalar_t> view(f);
  const PixelTarget<scalar_t>& t = view.target;
  std::vector<double> partial(static_cast<size_t>(batch * chunks * classes * 4), 0.0);
  std::atomic<bool> bad{false};
  at::parallel_for(0, batch * chunks, 1, [&](int64_t begin, int64_t end) {
    PixelBlock<scalar_t> block;
    block.softmax = kSoftmax;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / chunks, lo = (item % chunks) * chunk, hi = std::min(n, lo + chunk);
      double* acc = &partial[static_cast<size_t>(item * classes * 4)];
      constexpr int64_t kFlushEvery = 256 * kLanes;
      for (int64_t start = lo; start < hi; start += kFlushEvery) {
        const int64_t stop = std::min(hi, start + kFlushEvery);
        scalar_t lx[kMaxFusedClasses][kLanes] = {}, ly[kMaxFusedClasses][kLanes] = {},
                 ld[kMaxFusedClasses][kLanes] = {}, lm[kMaxFusedClasses][kLanes] = {};
        for (int64_t i0 = start; i0 < stop; i0 += kLanes) {
          block.load(z, t, b, i0, static_cast<int>(std::min<int64_t>(kLanes, stop - i0)));
          for (int64_t c = 0; c < classes; ++c) {
            for (int l = 0; l < kLanes; ++l) {
              const scalar_t xv = block.prob[c][l], yv = block.y[c][l];
              lx[c][l] += lp_t<kNorm>(xv, p);
              ly[c][l] += lp_t<kNorm>(yv, p);
              ld[c][l] += lp_t<kNorm>(static_cast<scalar_t>(xv - yv), p);
              const scalar_t m = lm[c][l];
              lm[c][l] = m > yv ? m : yv;
            }
          }
        }
        for (int64_t c = 0; c < classes; ++c) {
          for (int l = 0; l < kLanes; ++l) {
            acc[c * 4 + 0] += lx[c][l];
            acc[c * 4 + 1] += ly[c][l];
            acc[c * 4 + 2] += ld[c][l];
            acc[c * 4 + 3] = std::max(acc[c * 4 + 3], static_cast<double>(lm[c][l]));
          }
        }
      }
      if (block.bad_label) bad = true;
    }
  });
  bad_label = bad;
  auto opts = torch::TensorOptions().dtype(torch::kDouble);
  const Tensor all = torch::from_blob(partial.data(), {batch, chunks, classes, 4}, opts);
  const Tensor sums = all.sum(1).to(f.prob.scalar_type());
  sx = sums.select(2, 0).contiguous();
  sy = sums.select(2, 1).contiguous();
  sd = sums.select(2, 2).contiguous();
  ymax = all.select(3, 3).amax(1).to(f.prob.scalar_type());
}

// The gradient of blocked_forward's sx and sd: through the softmax analytically (kSoftmax), or
// directly with respect to the probabilities.
template <typename scalar_t, Norm kNorm, bool kSoftmax>
Tensor blocked_backward(const Flat& f, double p, const Tensor& gx_in, const Tensor& gd_in) {
  const int64_t batch = f.prob.size(0), classes = f.prob.size(1), n = f.prob.size(2);
  const int64_t chunks = chunk_count(batch, n), chunk = (n + chunks - 1) / chunks;
  const Tensor gx = per_class_gradient(gx_in, f), gd = per_class_gradient(gd_in, f);
  Tensor grad = torch::empty_like(f.prob);
  const scalar_t* z = f.prob.data_ptr<scalar_t>();
  const scalar_t* gxp = gx.data_ptr<scalar_t>();
  const scalar_t* gdp = gd.data_ptr<scalar_t>();
  scalar_t* out = grad.data_ptr<scalar_t>();
  const TargetView<scalar_t> view(f);
  const PixelTarget<scalar_t>& t = view.target;
  at::parallel_for(0, batch * chunks, 1, [&](int64_t begin, int64_t end) {
    PixelBlock<scalar_t> block;
    block.softmax = kSoftmax;
    scalar_t g[kMaxFusedClasses][kLanes];
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / chunks, lo = (item % chunks) * chunk, hi = std::min(n, lo + chunk);
      scalar_t* ob = out + b * classes * n;
      for (int64_t i0 = lo; i0 < hi; i0 += kLanes) {
        const int width = static_cast<int>(std::min<int64_t>(kLanes, hi - i0));
        block.load(z, t, b, i0, width);
        scalar_t dot[kLanes] = {};
        for (int64_t c = 0; c < classes; ++c) {
          const scalar_t ax = gxp[b * classes + c], ad = gdp[b * classes + c];
          for (int l = 0; l < kLanes; ++l) {
            const scalar_t xv = block.prob[c][l];
            g[c][l] = block.k[l] * (ax * dlp_t<kNorm>(xv, p) + ad * dlp_t<kNorm>(static_cast<scalar_t>(xv - block.y[c][l]), p));
            dot[l] += xv * g[c][l];
          }
        }
        for (int64_t c = 0; c < classes; ++c) {
          scalar_t* oc = ob + c * n + i0;
          if constexpr (kSoftmax) {
            for (int l = 0; l < width; ++l) oc[l] = block.prob[c][l] * (g[c][l] - dot[l]);
          } else {
            for (int l = 0; l < width; ++l) oc[l] = g[c][l];
          }
        }
      }
    }
  });
  return grad;
}

// blocked_forward and blocked_backward for f's dtype and the norm p (1 and 2 compiled apart).
// Forward returns whether a kept pixel holds a hard label outside [0, classes).
template <bool kSoftmax>
bool dispatch_blocked_forward(const Flat& f, double p, Tensor& sx, Tensor& sy, Tensor& sd, Tensor& ymax) {
  bool bad = false;
  AT_DISPATCH_FLOATING_TYPES(f.prob.scalar_type(), "dml_blocked_forward", [&] {
    if (p == 1.0) blocked_forward<scalar_t, Norm::kL1, kSoftmax>(f, p, sx, sy, sd, ymax, bad);
    else if (p == 2.0) blocked_forward<scalar_t, Norm::kL2, kSoftmax>(f, p, sx, sy, sd, ymax, bad);
    else blocked_forward<scalar_t, Norm::kGeneral, kSoftmax>(f, p, sx, sy, sd, ymax, bad);
  });
  return bad;
}
template <bool kSoftmax>
Tensor dispatch_blocked_backward(const Flat& f, double p, const Tensor& gx, const Tensor& gd) {
  Tensor grad;
  AT_DISPATCH_FLOATING_TYPES(f.prob.scalar_type(), "dml_blocked_backward", [&] {
    if (p == 1.0) grad = blocked_backward<scalar_t, Norm::kL1, kSoftmax>(f, p, gx, gd);
    else if (p == 2.0) grad = blocked_backward<scalar_t, Norm::kL2, kSoftmax>(f, p, gx, gd);
    else grad = blocked_backward<scalar_t, Norm::kGeneral, kSoftmax>(f, p, gx, gd);
  });
  return grad;
}

// Autograd node of the fused statistics of probabilities: outputs (|x|_p^p, |y|_p^p, |x-y|_p^p,
// max y), each [B,C]; only the first and third depend on the prediction. Up to
// kMaxFusedClasses classes the blocked, vectorised kernels; beyond, the per-class ones.
class FusedStatistics : public torch::autograd::Function<FusedStatistics> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& prob, const Tensor& target, const Tensor& keep,
                               bool hard, double p) {
    Flat f{prob, target, keep.numel() > 0 ? keep : Tensor(), hard};
    Tensor sx, sy, sd, ymax;
    if (prob.size(1) <= kMaxFusedClasses) {
      if (dispatch_blocked_forward<false>(f, p, sx, sy, sd, ymax)) check_hard_range(f, prob.size(1));  // throws
    } else {
      if (hard) check_hard_range(f, prob.size(1));
      AT_DISPATCH_FLOATING_TYPES(prob.scalar_type(), "dml_fused_forward", [&] { fused_forward<scalar_t>(f, p, sx, sy, sd, ymax); });
    }
    save_inputs(ctx, prob, target, keep, hard, p);
    ctx->mark_non_differentiable({sy, ymax});
    return {sx, sy, sd, ymax};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    double p = 1;
    const Flat f = saved_inputs(ctx, p);
    if (f.prob.size(1) <= kMaxFusedClasses) {
      return {dispatch_blocked_backward<false>(f, p, grads[0], grads[2]), Tensor(), Tensor(), Tensor(), Tensor()};
    }
    Tensor grad;
    AT_DISPATCH_FLOATING_TYPES(f.prob.scalar_type(), "dml_fused_backward",
                               [&] { grad = fused_backward<scalar_t>(f, p, grads[0], grads[2]); });
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
    Tensor sx, sy, sd, ymax;
    if (dispatch_blocked_forward<true>(f, p, sx, sy, sd, ymax)) check_hard_range(f, logits.size(1));  // throws
    save_inputs(ctx, logits, target, keep, hard, p);
    ctx->mark_non_differentiable({sy, ymax});
    return {sx, sy, sd, ymax};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    double p = 1;
    const Flat f = saved_inputs(ctx, p);
    return {dispatch_blocked_backward<true>(f, p, grads[0], grads[2]), Tensor(), Tensor(), Tensor(), Tensor()};
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

// Masked means without data-dependent shapes, so no host synchronisation on a GPU: 0 with zero
// gradient when nothing is active. (where, not a product, so that an inactive entry passes no
// gradient at all, as with masked_select.)
Tensor masked_mean(const Tensor& values, const Tensor& active) {
  return torch::where(active, values, torch::zeros_like(values)).sum() / active.sum().clamp_min(1).to(values.scalar_type());
}

// Mean over active rows (dim 1: per image) or columns (dim 0: per class) of a masked matrix.
Tensor masked_mean_of_means(const Tensor& loss, const Tensor& active, int64_t dim) {
  const Tensor count = active.sum(dim);
  const Tensor means = torch::where(active, loss, torch::zeros_like(loss)).sum(dim) / count.clamp_min(1).to(loss.scalar_type());
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

DmlStatistics dml_statistics(const Tensor& prob, const Tensor& target, const Tensor& keep,
                             const DmlOptions& options) {
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
  Flat f = flatten_inputs(prob, target, keep, options);
  const int64_t classes = f.prob.size(1);
  Tensor y;
  if (f.hard) {
    if (options.check_labels()) check_hard_range(f, classes);
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
  Tensor z = logits;
  if (z.scalar_type() != torch::kFloat && z.scalar_type() != torch::kDouble) z = z.to(torch::kFloat);
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
  return masked_mean(per_class, active);
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
