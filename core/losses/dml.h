// The Dice semimetric loss family (Wang et al., MICCAI 2023) in Tversky form.
//
// For prediction x and target y (per class, over the pixels of one image), with the L^p
// "cardinalities" |v|_p^p:
//   tp = (|x| + |y| - |x-y|) / 2,  fp = |x| - tp,  fn = |y| - tp,
//   score = (tp + s) / (tp + alpha*fp + beta*fn + s),  loss = 1 - score  (or -log score).
// alpha = beta = 0.5 is the Dice semimetric loss DML1 (equal to the soft Dice loss on hard
// labels, correct on soft labels); alpha = beta = 1 the Jaccard metric loss; any other pair a
// Tversky loss. norm p = 2 gives the squared-L2 form.
//
// The loss is computed in two public steps so that data parallel training can reduce the
// per-class statistics across ranks (with gradient) before the score is formed:
//   DmlStatistics s = dml_statistics(prob, target, keep, options);   // [B,C] sums
//   s = reducer(s);                                                   // e.g. all-reduce
//   Tensor loss = dml_from_statistics(s, options);
// N ranks with batch B/N then optimise exactly the loss of one rank with batch B.
//
// Shapes: prediction [B,C,*spatial] (2D [B,C,H,W] or 3D [B,C,D,H,W]); hard target int64
// [B,*spatial] with values in [0,C) or ignore_index; soft target floating [B,C,*spatial]
// (probabilities over dim 1); keep mask bool [B,*spatial]. float32 and float64; reduced
// precision inputs (bf16/f16, e.g. under autocast) are computed in float32. Gradients flow to
// the prediction only: targets are constants.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/arg.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

namespace kdseg::losses {

// Which classes a loss term averages over. kAll: every class. kPresent: classes whose target
// maximum (over the pixels that the term reduces over) exceeds `threshold`.
enum class ActiveClasses { kAll, kPresent };

struct DmlOptions {
  // Throws kdseg::Error naming the offending option when a value is out of range.
  void validate() const;

  // Weights of the three reductions (the reference's mIoUD, mIoUI, mIoUC):
  //   dataset: per-class sums over the whole batch, mean over active classes;
  //   image:   per image and class, mean over the image's active classes, then over images;
  //   class:   per image and class, mean over the images where the class is active, then
  //            over classes.
  TORCH_ARG(double, dataset_weight) = 1.0;
  TORCH_ARG(double, image_weight) = 0.0;
  TORCH_ARG(double, class_weight) = 0.0;
  // Tversky coefficients of false positives and false negatives (0.5/0.5 = Dice).
  TORCH_ARG(double, alpha) = 0.5;
  TORCH_ARG(double, beta) = 0.5;
  // Focal exponent (>= 1) applied to each per-class loss.
  TORCH_ARG(double, gamma) = 1.0;
  // Added to numerator and denominator of the score.
  TORCH_ARG(double, smooth) = 1.0;
  // kPresent keeps classes whose target maximum exceeds this.
  TORCH_ARG(double, threshold) = 0.01;
  // p of the L^p cardinalities (>= 1).
  TORCH_ARG(double, norm) = 1.0;
  // -log(score) instead of 1 - score.
  TORCH_ARG(bool, log_loss) = false;
  // Hard-label value whose pixels are excluded (as by a keep mask).
  TORCH_ARG(std::optional<int64_t>, ignore_index) = std::nullopt;
  // Per-class multipliers of the per-class losses; empty means all 1.
  TORCH_ARG(std::vector<double>, class_weights) = {};
  TORCH_ARG(ActiveClasses, active_hard) = ActiveClasses::kPresent;
  TORCH_ARG(ActiveClasses, active_soft) = ActiveClasses::kAll;
  // Whether hard targets are checked to lie in [0, C). Off the CPU the check reads a device
  // value back, a host synchronisation: a caller that checked the labels on the host turns
  // it off (targets outside the range are then clamped into it).
  TORCH_ARG(bool, check_labels) = true;
};

// Per image and class sums, [B,C] each, in the prediction's (float32/float64) dtype.
// tp/fp/fn carry the gradient of the prediction; target_max does not.
struct DmlStatistics {
  at::Tensor tp;
  at::Tensor fp;
  at::Tensor fn;
  at::Tensor target_max;  // max of the kept target per image and class (for kPresent)
  bool hard_target = true;

  // The batch-summed statistics, [1,C]: all that the dataset reduction needs. All-reducing
  // these (sum for tp/fp/fn, max for target_max) is the cheap global-batch path when the
  // image and class weights are 0; those reductions need the per-image rows (all-gather).
  DmlStatistics summed_over_batch() const;
};

// Maps the statistics of this rank to the statistics the loss is formed from (identity for
// one process; an all-reduce or all-gather with gradient under data parallelism).
using DmlStatisticsReducer = std::function<DmlStatistics(const DmlStatistics&)>;

// Per image and class statistics of probabilities `prob` [B,C,*] against `target`.
// `keep` [B,*] (bool, optional) and options.ignore_index() exclude pixels. Hard targets
// outside [0,C) that are not excluded are an error. CPU tensors use a fused kernel that
// never materialises the one-hot target; other devices use a composition of ATen ops.
DmlStatistics dml_statistics(const at::Tensor& prob, const at::Tensor& target, const at::Tensor& keep = {},
                             const DmlOptions& options = {});

// The loss from (possibly reduced) statistics: a scalar tensor.
//
// Edge cases, defined rather than NaN: a class whose denominator tp + alpha*fp + beta*fn + s
// is 0 (empty prediction and target with smooth 0, or every pixel excluded) scores 1 (loss 0)
// with zero gradient; a term with no active class is 0 with zero gradient; the log loss
// clamps the score at 1e-12 (so smooth 0 with tp = 0 gives 27.6 instead of infinity).
at::Tensor dml_from_statistics(const DmlStatistics& stats, const DmlOptions& options = {});

// softmax(logits, dim 1), statistics, optional reducer, loss: the usual entry point.
at::Tensor dml_loss(const at::Tensor& logits, const at::Tensor& target, const at::Tensor& keep = {},
                    const DmlOptions& options = {}, const DmlStatisticsReducer& reducer = nullptr);

// The paper's DML2 per class over the whole batch, 1 - (<x,y> + s) / (<x,y> + |x-y|_1/2 + s),
// mean over active classes (present: target max > 0.01). Equal to DML1 on hard labels.
at::Tensor dml2_loss(const at::Tensor& logits, const at::Tensor& target, const at::Tensor& keep = {},
                     double smooth = 1.0, bool present_only = true);

// The plain soft Dice loss 1 - (2<x,y> + 2s) / (|x|_1 + |y|_1 + 2s) per class over the whole
// batch, mean over active classes. Equal to DML1 on hard labels, not on soft labels.
at::Tensor soft_dice_loss(const at::Tensor& logits, const at::Tensor& target, const at::Tensor& keep = {},
                          double smooth = 1.0, bool present_only = true);

namespace detail {
// The composition-of-ATen-ops statistics (any device); the fused CPU kernel must agree.
DmlStatistics dml_statistics_composite(const at::Tensor& prob, const at::Tensor& target, const at::Tensor& keep,
                                       const DmlOptions& options);
}  // namespace detail

}  // namespace kdseg::losses
