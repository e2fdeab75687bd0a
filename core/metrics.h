// Segmentation metrics accumulated per case, in a form that sums across ranks: per case and
// class the voxels predicted, labelled and both (Dice), and per case the expected calibration
// error's bins (10 equal-width bins on the max-class probability).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace kdseg {

class SegmentationMetrics {
 public:
  SegmentationMetrics(int64_t cases, int64_t classes, int64_t bins = 10, int64_t ignore_index = 255);

  // probabilities [B,C,H,W], labels [B,H,W] int64, case of each image [B]. Pixels labelled
  // ignore_index are left out.
  void add(const at::Tensor& probabilities, const at::Tensor& labels, const std::vector<int64_t>& cases);

  // Every counter as one float64 tensor: sum it over ranks (all_reduce) and set it back, so
  // that each case is counted once across ranks.
  at::Tensor state() const { return state_; }
  void set_state(const at::Tensor& state);

  // Dice of `cls` per case over all its voxels; a case whose prediction and label are both
  // empty for the class scores 1. Cases without any evaluated voxel are NaN.
  std::vector<double> dice_per_case(int64_t cls) const;
  // Expected calibration error per case (NaN without voxels).
  std::vector<double> ece_per_case() const;
  // Means over the cases that have voxels.
  double mean_dice(int64_t cls) const;
  double mean_ece() const;

 private:
  int64_t cases_, classes_, bins_, ignore_index_, stride_;
  at::Tensor state_;  // [cases, 3*classes + 3*bins] float64
};

}  // namespace kdseg
