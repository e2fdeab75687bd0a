#include "core/losses/dml_cpu_kernels.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

namespace kdseg::losses::detail {
namespace {

using torch::Tensor;

// --- shared by both kernel families ----------------------------------------------------------

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
  const scalar_t* soft;  // [B,C,N] or null
  const scalar_t* hard;  // [B,N] class indices as scalar_t (exact for any class count), or null
  const bool* keep;      // [B,N] or null
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

// What both backward kernels work on: the incoming gradients of sx and sd as [B,C] arrays, the
// gradient they fill (like f.prob) and the target, kept alive as long as the pointers into them.
template <typename scalar_t>
struct BackwardIo {
  Tensor gx, gd, grad;
  const scalar_t* x;
  const scalar_t* gxp;
  const scalar_t* gdp;
  scalar_t* out;
  TargetView<scalar_t> view;

  BackwardIo(const Flat& f, const Tensor& gx_in, const Tensor& gd_in)
      : gx(per_class_gradient(gx_in, f)),
        gd(per_class_gradient(gd_in, f)),
        grad(torch::empty_like(f.prob)),
        x(f.prob.data_ptr<scalar_t>()),
        gxp(gx.data_ptr<scalar_t>()),
        gdp(gd.data_ptr<scalar_t>()),
        out(grad.data_ptr<scalar_t>()),
        view(f) {}
};

// --- per-class kernels -----------------------------------------------------------------------
// One work item per image, class and pixel chunk; any class count, probabilities only.

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
  const BackwardIo<scalar_t> io(f, gx_in, gd_in);
  const PixelTarget<scalar_t>& t = io.view.target;
  at::parallel_for(0, pairs * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t pair = item / chunks, b = pair / classes, c = pair % classes;
      const int64_t lo = (item % chunks) * chunk, hi = std::min(n, lo + chunk);
      const scalar_t ax = io.gxp[pair], ad = io.gdp[pair];
      const scalar_t* xp = io.x + pair * n;
      scalar_t* gp = io.out + pair * n;
      for (int64_t i = lo; i < hi; ++i) {
        const scalar_t xv = xp[i], yv = t.y(b, c, i);
        gp[i] = t.kept(b, i) ? ax * dlp(xv, p) + ad * dlp(static_cast<scalar_t>(xv - yv), p) : scalar_t(0);
      }
    }
  });
  return io.grad;
}

// --- blocked kernels: fused softmax + statistics --------------------------------------------
// dml_loss on CPU never materialises the probabilities: each pixel's softmax is computed in
// registers, accumulated into the per-class sums, and recomputed in backward, where the
// gradient is taken through the softmax analytically: dz_c = p_c (g_c - sum_k p_k g_k).
// Pixels are processed in blocks of kLanes with class-outer loops and a branch-free exp, so
// that the compiler vectorises every loop (no -ffast-math needed).

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
  const BackwardIo<scalar_t> io(f, gx_in, gd_in);
  const scalar_t* z = io.x;
  const PixelTarget<scalar_t>& t = io.view.target;
  at::parallel_for(0, batch * chunks, 1, [&](int64_t begin, int64_t end) {
    PixelBlock<scalar_t> block;
    block.softmax = kSoftmax;
    scalar_t g[kMaxFusedClasses][kLanes];
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / chunks, lo = (item % chunks) * chunk, hi = std::min(n, lo + chunk);
      scalar_t* ob = io.out + b * classes * n;
      for (int64_t i0 = lo; i0 < hi; i0 += kLanes) {
        const int width = static_cast<int>(std::min<int64_t>(kLanes, hi - i0));
        block.load(z, t, b, i0, width);
        scalar_t dot[kLanes] = {};
        for (int64_t c = 0; c < classes; ++c) {
          const scalar_t ax = io.gxp[b * classes + c], ad = io.gdp[b * classes + c];
          for (int l = 0; l < kLanes; ++l) {
            const scalar_t xv = block.prob[c][l];
            g[c][l] = block.k[l] *
                      (ax * dlp_t<kNorm>(xv, p) + ad * dlp_t<kNorm>(static_cast<scalar_t>(xv - block.y[c][l]), p));
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
  return io.grad;
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

}  // namespace

KernelSums blocked_statistics(const Flat& f, double p, bool softmax) {
  KernelSums s;
  s.bad_label = softmax ? dispatch_blocked_forward<true>(f, p, s.sx, s.sy, s.sd, s.ymax)
                        : dispatch_blocked_forward<false>(f, p, s.sx, s.sy, s.sd, s.ymax);
  return s;
}

Tensor blocked_statistics_backward(const Flat& f, double p, bool softmax, const Tensor& grad_sx,
                                   const Tensor& grad_sd) {
  return softmax ? dispatch_blocked_backward<true>(f, p, grad_sx, grad_sd)
                 : dispatch_blocked_backward<false>(f, p, grad_sx, grad_sd);
}

KernelSums per_class_statistics(const Flat& f, double p) {
  KernelSums s;
  AT_DISPATCH_FLOATING_TYPES(f.prob.scalar_type(), "dml_fused_forward",
                             [&] { fused_forward<scalar_t>(f, p, s.sx, s.sy, s.sd, s.ymax); });
  return s;
}

Tensor per_class_statistics_backward(const Flat& f, double p, const Tensor& grad_sx, const Tensor& grad_sd) {
  Tensor grad;
  AT_DISPATCH_FLOATING_TYPES(f.prob.scalar_type(), "dml_fused_backward",
                             [&] { grad = fused_backward<scalar_t>(f, p, grad_sx, grad_sd); });
  return grad;
}

}  // namespace kdseg::losses::detail
