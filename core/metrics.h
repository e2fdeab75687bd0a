// Segmentation metrics accumulated per case, in a form that sums across ranks (each case is
// counted once however its slices were split): for each Dice region the voxels predicted,
// labelled and both, over the whole case and per slice; calibration bins on the max-class
// probability (ECE) and on each class's probability (class-wise ECE); NLL and Brier sums.
//
// Conventions (docs/formats.md, report.json): Dice of a region whose prediction and label are
// both empty is `empty_dice` (1 by default), per slice and per case alike. Bins are `bins`
// equal-width bins of [0, 1]; ECE = sum_b |sum conf - sum correct| / N; class-wise ECE is the
// mean over classes of the same on p_k against [y == k]; NLL = -mean log p_y (p clamped to
// 1e-12); Brier = mean over voxels of sum_k (p_k - [y == k])^2. ACE and MCE reduce the ECE's
// bins as MONAI's CalibrationErrorMetric does ("average" and "maximum"): the mean and the largest
// |mean confidence - accuracy| over the bins that hold voxels. Voxels labelled ignore_index are
// left out; a case without voxels has NaN everywhere.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace kdseg {

// Classes counted together for Dice, e.g. {"kidney+tumor", {1, 2}}.
struct DiceRegion {
  std::string name;
  std::vector<int64_t> classes;
  // > 0: the region's surfel surface Dice at this tolerance (mm) is measured too
  // (core/surface_distance.h, surfel_surface_dice; KiTS23's regions).
  double surfel_tolerance_mm = 0;
};

class SegmentationMetrics {
 public:
  // Without regions: one per foreground class, named "class <k>".
  SegmentationMetrics(int64_t cases, int64_t classes, std::vector<DiceRegion> regions = {}, int64_t bins = 10,
                      int64_t ignore_index = 255, double empty_dice = 1.0);

  // probabilities [B,C,H,W], labels [B,H,W] int64, case of each slice [B].
  void add(const at::Tensor& probabilities, const at::Tensor& labels, const std::vector<int64_t>& cases);

  // Every counter as one float64 tensor: sum it over ranks (all_reduce) and set it back.
  at::Tensor state() const { return state_; }
  void set_state(const at::Tensor& state);

  const std::vector<DiceRegion>& regions() const { return regions_; }
  int64_t bins() const { return bins_; }

  // Per case (NaN for a case without evaluated voxels).
  std::vector<double> dice_per_case(size_t region) const;        // over all the case's voxels
  std::vector<double> slice_dice_per_case(size_t region) const;  // mean of the per-slice Dice
  std::vector<double> ece_per_case() const;
  std::vector<double> slice_ece_per_case() const;  // mean of the per-slice ECE
  std::vector<double> classwise_ece_per_case() const;
  std::vector<double> ace_per_case() const;
  std::vector<double> mce_per_case() const;
  std::vector<double> nll_per_case() const;
  std::vector<double> brier_per_case() const;
  std::vector<int64_t> slices_per_case() const;

  // Over every voxel of every case.
  double global_dice(size_t region) const;
  struct Reliability {
    std::vector<double> confidence, accuracy;  // per bin; NaN for an empty bin
    std::vector<int64_t> count;
  };
  Reliability reliability() const;

  // Means over the cases that have voxels.
  double mean_dice(size_t region) const;
  double mean_ece() const;

 private:
  // Offsets into a case's row of state_.
  int64_t region_at(size_t region) const { return 4 * static_cast<int64_t>(region); }
  int64_t bins_at() const { return 4 * static_cast<int64_t>(regions_.size()); }
  int64_t classwise_at() const { return bins_at() + 3 * bins_; }
  int64_t scalars_at() const { return classwise_at() + 3 * bins_ * classes_; }
  std::vector<double> per_case(int64_t offset, bool per_slice) const;

  int64_t cases_, classes_, bins_, ignore_index_;
  double empty_dice_;
  std::vector<DiceRegion> regions_;
  at::Tensor state_;  // [cases, width] float64
};

// The predicted class of every pixel of probabilities [B,C,H,W] (float32, C <= 255): the most
// probable, ties to the lower class as torch's argmax; [B,H,W] uint8, in one pass.
at::Tensor predicted_classes(const at::Tensor& probabilities);

// The pixels of a slice that reach into the band of `half_width_mm` either side of the boundary
// of `foreground` [H,W] bool, in the plane (pixels `row_mm` x `col_mm`): a pixel belongs to it
// when its footprint (a row_mm x col_mm rectangle) comes nearer than the half width to the
// footprint of a pixel of the other side, so pixels touching the boundary always do, however
// coarse the grid (outside the image counts as neither side). [H,W] bool; all false for an empty
// or full slice and for a half width of 0. (The first definition took distances between pixel
// centres and held no pixel when the half width was below the pixel spacing.)
at::Tensor boundary_band(const at::Tensor& foreground, double row_mm, double col_mm, double half_width_mm);

// Metrics against a soft reference q (the raters' mean), per case, summed across ranks like
// SegmentationMetrics:
//   threshold Dice (QUBIQ): for each region, the mean over t = 0.1, 0.2, ..., 0.9 of the case's
//     Dice between {p_region > t} and {q_region > t}, where p_region and q_region sum the region's
//     classes; a threshold where both are empty counts 1;
//   soft L1: mean over voxels of sum_k |p_k - q_k|;  soft Brier: mean over voxels of sum_k (p_k - q_k)^2;
//   rater ECE: the ECE's equal-width bins of the max-class probability, with a voxel's accuracy the
//     fraction of raters who chose its predicted class (q at the predicted class).
// Voxels outside `keep` are left out; a case without voxels has NaN everywhere.
class SoftReferenceMetrics {
 public:
  static constexpr int64_t kThresholds = 9;

  SoftReferenceMetrics(int64_t cases, int64_t classes, std::vector<DiceRegion> regions, int64_t bins = 10);

  // probabilities and reference [B,C,H,W], keep [B,H,W] bool, case of each slice [B].
  void add(const at::Tensor& probabilities, const at::Tensor& reference, const at::Tensor& keep,
           const std::vector<int64_t>& cases);

  at::Tensor state() const { return state_; }
  void set_state(const at::Tensor& state);

  std::vector<double> threshold_dice_per_case(size_t region) const;
  std::vector<double> l1_per_case() const;
  std::vector<double> brier_per_case() const;
  std::vector<double> rater_ece_per_case() const;

 private:
  int64_t scalars_at() const { return 3 * kThresholds * static_cast<int64_t>(regions_.size()); }
  int64_t bins_at() const;
  std::vector<double> scalar_per_case(int64_t offset) const;

  int64_t cases_, classes_, bins_;
  std::vector<DiceRegion> regions_;
  at::Tensor state_;  // [cases, width] float64
};

}  // namespace kdseg
