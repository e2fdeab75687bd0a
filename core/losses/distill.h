// Cross-entropy, KL divergence against soft targets, boundary label smoothing and the
// distillation objective of kdseg (docs/losses.md), all on logits [B,C,*spatial].
//
// Every term is a mean over the pixels it keeps; a term whose pixels are all excluded is 0
// with zero gradient (not NaN), so a batch of fully ignored slices cannot poison training.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/arg.h>

#include <cstdint>
#include <functional>
#include <optional>

#include "core/losses/dml.h"

namespace kdseg::losses {

// Mean cross-entropy of `logits` [B,C,*] against hard labels [B,*] (int64) over the pixels
// whose label is not `ignore_index`.
at::Tensor cross_entropy(const at::Tensor& logits, const at::Tensor& labels,
                         std::optional<int64_t> ignore_index = std::nullopt);

// T^2 * KL(target || softmax(logits / T)), summed over classes, mean over kept pixels.
// `target` [B,C,*] holds probabilities (0 log 0 = 0); `keep` [B,*] bool is optional.
at::Tensor kl_divergence(const at::Tensor& logits, const at::Tensor& target, double temperature = 1.0,
                         const at::Tensor& keep = {});

// Boundary label smoothing: pixels near a class boundary get (1 - epsilon) * one_hot + epsilon / C.
struct SmoothedLabels {
  at::Tensor soft;      // [B,C,*] probabilities; all zero on excluded pixels
  at::Tensor boundary;  // [B,*] bool: the smoothed pixels
  at::Tensor keep;      // [B,*] bool: pixels not equal to ignore_index
};

// A kept pixel is a boundary pixel when its own class's one-hot map, eroded with a k x k
// (k x k x k for 3D) window clipped at the image border, is 0 there (a different class lies
// within the window) while the keep mask eroded with the same window is 1 (no excluded pixel
// lies within it: next to unlabelled pixels the boundary is unknown, and the label stays hard).
// Labels outside [0, C) that are not ignore_index are an error unless `check_labels` is false
// (the caller checked them on the host; off the CPU the check waits for the device).
SmoothedLabels boundary_label_smoothing(const at::Tensor& labels, int64_t num_classes, double epsilon,
                                        int64_t kernel_size, std::optional<int64_t> ignore_index = std::nullopt,
                                        bool check_labels = true);

// Weights of the objective; defaults are the paper's.
struct ObjectiveWeights {
  TORCH_ARG(double, ce) = 0.25;      // cross-entropy and KL terms
  TORCH_ARG(double, dml) = 0.75;     // DML terms
  TORCH_ARG(double, label) = 0.5;    // hard-label terms (with a teacher)
  TORCH_ARG(double, teacher) = 0.5;  // teacher terms
  TORCH_ARG(double, main) = 0.5;     // CE/KL of the main head
  TORCH_ARG(double, aux) = 0.5;      // CE/KL of the auxiliary head
  TORCH_ARG(double, temperature) = 1.0;
};

// The parts of an objective, each already weighted; `total` is their sum.
struct LossTerms {
  at::Tensor total;
  at::Tensor ce;        // w_ce * (w_main * CE + w_aux * CE_aux) [* w_label with a teacher]
  at::Tensor kl;        // w_ce * T^2 * (w_main * KL + w_aux * KL_aux) [* w_teacher]
  at::Tensor dml_hard;  // w_dml * DML(z, y) [* w_label]
  at::Tensor dml_soft;  // w_dml * DML(z, p) [* w_teacher]
};

// What the student learns from: hard labels [B,*] int64 or soft labels [B,C,*] (the raters'
// mean), optionally soft targets [B,C,*] (the teacher's probabilities at temperature T, or
// smoothed labels).
struct ObjectiveInputs {
  at::Tensor logits;      // [B,C,*] main head
  at::Tensor aux_logits;  // [B,C,*] auxiliary head, or undefined
  at::Tensor labels;      // [B,*] int64 hard labels, or undefined (soft only)
  at::Tensor soft;        // [B,C,*] soft targets, or undefined (hard only)
  at::Tensor keep;        // [B,*] bool, or undefined (then: labels != ignore_index)
  // The caller checked that labels lie in [0, C) or are ignore_index (on the host), so the
  // objective skips its checks, which on a GPU would each wait for the device.
  bool labels_checked = false;
  at::Tensor label_soft{};  // [B,C,*] soft labels instead of `labels`, or undefined
};

// The segmentation objective. With hard labels and soft targets it is the KD objective of
// docs/losses.md:
//   w_label * (w_ce * CE(z,y) + w_dml * DML(z,y)) + w_teacher * (w_ce * T^2 * KL(p || z/T) + w_dml * DML(z,p)),
// where the CE/KL terms of the main head carry w_main and those of the auxiliary head w_aux,
// hard DML uses `dml` with its hard-label class mode (PRESENT by default) and soft DML its
// soft-label mode (ALL); excluded pixels are masked out of every term.
// With hard labels only: w_ce * CE + w_dml * DML(z,y). With soft targets only (label
// smoothing): w_ce * KL(p || z) + w_dml * DML(z,p).
// With soft labels q (`label_soft`, the raters' mean) the student learns from one soft target:
// q alone, or with the teacher's p the mixture m = (w_label * q + w_teacher * p) / (w_label +
// w_teacher), as w_ce * T^2 * KL(m || z/T) + w_dml * DML(z,m). Soft labels come with no hard
// labels; `keep` then says which pixels count.
//
// Under data parallelism `global` makes every term a global-batch quantity: DML statistics are
// reduced before the scores are formed, and CE/KL are sums over this rank's kept pixels divided
// by the number of kept pixels of all ranks (times the number of ranks, because the gradients
// are then averaged), so that N ranks with batch B/N optimise exactly the loss of one rank with
// batch B even when ranks keep different numbers of pixels.
struct GlobalBatch {
  DmlStatisticsReducer dml_statistics;  // null: this rank only
  // Sums a small float64 tensor of pixel counts over ranks, returning it on the device it came
  // from. Null: this rank only.
  std::function<at::Tensor(const at::Tensor&)> sum_over_ranks;
  int ranks = 1;
};

class SegmentationObjective {
 public:
  SegmentationObjective(ObjectiveWeights weights = {}, DmlOptions dml = {}, std::optional<int64_t> ignore_index = {},
                        GlobalBatch global = {});

  LossTerms operator()(const ObjectiveInputs& in) const;

 private:
  ObjectiveWeights weights_;
  DmlOptions dml_;
  std::optional<int64_t> ignore_index_;
  GlobalBatch global_;
};

}  // namespace kdseg::losses
