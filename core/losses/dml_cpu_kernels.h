// The CPU kernels of the DML statistics, internal to core/losses: dml.cpp (its autograd nodes)
// is the only caller.
//
// Input, a Flat built and validated by dml.cpp:
//   prob    [B,C,N] float32 or float64, contiguous, on the CPU: probabilities, or logits when a
//           kernel is asked for the softmax;
//   target  hard: [B,N] int64 class indices; soft: [B,C,N] in prob's dtype; contiguous;
//   keep    [B,N] bool contiguous, or undefined (every pixel kept).
// The caller guarantees these shapes, dtypes and layouts. Excluded pixels contribute nothing and
// get a zero gradient; probabilities there may hold any value, logits must be finite.
//
// Forward: per image and class, over the kept pixels, the sums |x|_p^p, |y|_p^p and |x-y|_p^p
// and the maximum of y (0 when no pixel is kept), each [B,C] in prob's dtype, where x is prob
// or softmax(prob, dim 1) and y the target (one-hot for hard labels). Partial sums are kept in
// double. Backward: the gradient [B,C,N] (prob's dtype) with respect to prob, given the
// incoming gradients of |x|_p^p and |x-y|_p^p ([B,C], any floating dtype; undefined is zero).
//
// Two families: the blocked kernels, up to kMaxFusedClasses classes, with or without the
// softmax, vectorised over blocks of pixels, which report hard labels outside [0,C) on kept
// pixels (KernelSums::bad_label) instead of throwing so that the caller can name them; and the
// per-class kernels, probabilities only, any class count, which assume the caller checked the
// hard labels. Both run on ATen's intra-op thread pool.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace kdseg::losses::detail {

// The most classes the blocked kernels take (their per-block buffers are sized by it).
constexpr int64_t kMaxFusedClasses = 32;

// The inputs of the statistics, flattened and validated.
struct Flat {
  at::Tensor prob;    // [B,C,N] float32/float64, contiguous
  at::Tensor target;  // hard: [B,N] int64; soft: [B,C,N] prob's dtype; contiguous
  at::Tensor keep;    // [B,N] bool contiguous, or undefined
  bool hard = true;
};

// The forward sums, [B,C] each in prob's dtype.
struct KernelSums {
  at::Tensor sx;           // |x|_p^p
  at::Tensor sy;           // |y|_p^p
  at::Tensor sd;           // |x-y|_p^p
  at::Tensor ymax;         // max of y
  bool bad_label = false;  // blocked kernels: a kept pixel holds a hard label outside [0,C)
};

// The blocked kernels: x = softmax(f.prob, dim 1) when `softmax`, else f.prob itself.
// f.prob.size(1) <= kMaxFusedClasses.
KernelSums blocked_statistics(const Flat& f, double p, bool softmax);
at::Tensor blocked_statistics_backward(const Flat& f, double p, bool softmax, const at::Tensor& grad_sx,
                                       const at::Tensor& grad_sd);

// The per-class kernels: x = f.prob, any class count; hard labels already checked.
KernelSums per_class_statistics(const Flat& f, double p);
at::Tensor per_class_statistics_backward(const Flat& f, double p, const at::Tensor& grad_sx, const at::Tensor& grad_sd);

}  // namespace kdseg::losses::detail
