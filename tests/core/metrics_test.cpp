// SegmentationMetrics against values worked out by hand.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "core/metrics.h"

namespace kdseg {
namespace {
using torch::Tensor;

// One-hot probabilities of `labels` [B,H,W] with confidence `p` on the given class.
Tensor confident(const Tensor& predicted, int64_t classes, double p) {
  const Tensor one_hot = torch::one_hot(predicted, classes).permute({0, 3, 1, 2}).to(torch::kDouble);
  return one_hot * p + (1 - one_hot) * (1 - p) / static_cast<double>(classes - 1);
}

TEST(Metrics, PerfectAndInvertedPredictions) {
  const Tensor labels = torch::tensor({0, 0, 1, 1}).view({1, 2, 2});
  SegmentationMetrics perfect(1, 2), inverted(1, 2);
  perfect.add(confident(labels, 2, 1.0), labels, {0});
  inverted.add(confident(1 - labels, 2, 1.0), labels, {0});
  EXPECT_DOUBLE_EQ(perfect.dice_per_case(0)[0], 1.0);
  EXPECT_DOUBLE_EQ(perfect.ece_per_case()[0], 0.0);
  EXPECT_DOUBLE_EQ(perfect.classwise_ece_per_case()[0], 0.0);
  EXPECT_DOUBLE_EQ(perfect.brier_per_case()[0], 0.0);
  EXPECT_NEAR(perfect.nll_per_case()[0], 0.0, 1e-12);
  EXPECT_DOUBLE_EQ(inverted.dice_per_case(0)[0], 0.0);
  EXPECT_DOUBLE_EQ(inverted.ece_per_case()[0], 1.0);
  EXPECT_DOUBLE_EQ(inverted.brier_per_case()[0], 2.0);
  EXPECT_NEAR(inverted.nll_per_case()[0], -std::log(1e-12), 1e-9);
}

TEST(Metrics, CalibrationOfAConstantForecast) {
  // Every pixel says class 1 with probability 0.8; half the pixels are class 1.
  const Tensor labels = torch::tensor({0, 1, 0, 1}).view({1, 2, 2});
  SegmentationMetrics m(1, 2);
  m.add(confident(torch::ones({1, 2, 2}, torch::kLong), 2, 0.8), labels, {0});
  EXPECT_NEAR(m.ece_per_case()[0], 0.3, 1e-12);            // |0.8 - 0.5|
  EXPECT_NEAR(m.classwise_ece_per_case()[0], 0.3, 1e-12);  // class 0: |0.2 - 0.5|, class 1: |0.8 - 0.5|
  EXPECT_NEAR(m.nll_per_case()[0], -(std::log(0.8) + std::log(0.2)) / 2, 1e-12);
  EXPECT_NEAR(m.brier_per_case()[0], (2 * 0.04 + 2 * 0.64) / 2, 1e-12);
  EXPECT_NEAR(m.dice_per_case(0)[0], 2.0 * 2 / (4 + 2), 1e-12);
  const auto r = m.reliability();
  EXPECT_EQ(r.count[8], 4);
  EXPECT_NEAR(r.confidence[8], 0.8, 1e-12);
  EXPECT_NEAR(r.accuracy[8], 0.5, 1e-12);
  EXPECT_TRUE(std::isnan(r.confidence[0]));
}

TEST(Metrics, CalibrationErrorsOfTwoBinsDoNotCancel) {
  // Top row: class 1 at 0.9 and correct (under-confident by 0.1); bottom row: class 1 at 0.6 and
  // wrong (over-confident by 0.6). ECE = (2 * 0.1 + 2 * 0.6) / 4 = 0.35, where one gap over all
  // pixels would give |3.0 - 2| / 4 = 0.25.
  const Tensor p1 = torch::tensor({0.9, 0.9, 0.6, 0.6}, torch::kDouble).view({1, 1, 2, 2});
  const Tensor probs = torch::cat({1 - p1, p1}, 1);
  const Tensor labels = torch::tensor({1, 1, 0, 0}).view({1, 2, 2});
  SegmentationMetrics m(1, 2);
  m.add(probs, labels, {0});
  EXPECT_NEAR(m.ece_per_case()[0], 0.35, 1e-12);
  // Class-wise: class 1 sees 0.9 (bin 9, frequency 1) and 0.6 (bin 6, frequency 0); class 0
  // sees 0.1 (bin 1, frequency 0) and 0.4 (bin 4, frequency 1): (0.2 + 1.2 + 0.2 + 1.2) / 4 / 2.
  EXPECT_NEAR(m.classwise_ece_per_case()[0], 0.35, 1e-12);
  const auto r = m.reliability();
  EXPECT_EQ(r.count[9], 2);
  EXPECT_EQ(r.count[6], 2);
  EXPECT_NEAR(r.accuracy[9], 1.0, 1e-12);
  EXPECT_NEAR(r.accuracy[6], 0.0, 1e-12);
}

TEST(Metrics, AceAndMceReduceTheBinsAsMonaiDoes) {
  // Three pixels at 0.9 and right (gap 0.1 in bin 9), one at 0.6 and wrong (gap 0.6 in bin 6).
  // ECE weighs the bins by their pixels: (3 * 0.1 + 0.6) / 4; ACE does not: (0.1 + 0.6) / 2;
  // MCE is the larger gap. The empty bins count in neither.
  const Tensor p1 = torch::tensor({0.9, 0.9, 0.9, 0.6}, torch::kDouble).view({1, 1, 2, 2});
  const Tensor labels = torch::tensor({1, 1, 1, 0}).view({1, 2, 2});
  SegmentationMetrics m(2, 2);
  m.add(torch::cat({1 - p1, p1}, 1), labels, {0});
  EXPECT_NEAR(m.ece_per_case()[0], 0.225, 1e-12);
  EXPECT_NEAR(m.ace_per_case()[0], 0.35, 1e-12);
  EXPECT_NEAR(m.mce_per_case()[0], 0.6, 1e-12);
  EXPECT_TRUE(std::isnan(m.ace_per_case()[1]) && std::isnan(m.mce_per_case()[1]));  // no pixels
}

TEST(Metrics, BoundaryBandByHand) {
  // A 3x3 square in a 7x7 slice, 1 mm pixels, 1 mm half width: a pixel belongs when its
  // footprint comes nearer than 1 mm to one of the other side, so the pixels that touch the
  // square's boundary, corners included: the 8 edge pixels and the 16 around it, not the centre
  // (its footprint is 1 mm from the background's) nor the image's border (1 mm from the square).
  Tensor square = torch::zeros({7, 7}, torch::kBool);
  square.narrow(0, 2, 3).narrow(1, 2, 3).fill_(true);
  const Tensor band = boundary_band(square, 1.0, 1.0, 1.0);
  EXPECT_EQ(band.sum().item<int64_t>(), 24);
  EXPECT_FALSE(band[3][3].item<bool>());
  EXPECT_TRUE(band[1][3].item<bool>() && band[2][2].item<bool>() && band[1][1].item<bool>());
  EXPECT_FALSE(band[0][1].item<bool>());
  // Rows 0.5 mm apart: 1 mm reaches a footprint two rows away (0.5 mm gap), so every column of
  // the square and those beside it, all 7 rows (35), and not the columns two away.
  const Tensor tall = boundary_band(square, 0.5, 1.0, 1.0);
  EXPECT_EQ(tall.sum().item<int64_t>(), 35);
  EXPECT_FALSE(tall[3][0].item<bool>());
  // Pixels far wider than the band (6.7 mm, a 48-pixel slice of a CT, against 2 mm): the pixels
  // touching the boundary still count, the same 24.
  EXPECT_EQ(boundary_band(square, 6.7, 6.7, 2.0).sum().item<int64_t>(), 24);
  EXPECT_EQ(boundary_band(square, 1.0, 1.0, 0.0).sum().item<int64_t>(), 0);
  // No boundary in an empty or a full slice: the image's edge is not one.
  EXPECT_EQ(boundary_band(torch::zeros({7, 7}, torch::kBool), 1.0, 1.0, 2.0).sum().item<int64_t>(), 0);
  EXPECT_EQ(boundary_band(torch::ones({7, 7}, torch::kBool), 1.0, 1.0, 2.0).sum().item<int64_t>(), 0);
}

TEST(Metrics, EmptyCasesIgnoredSlicesAndRegions) {
  // Case 0: no tumour, none predicted (Dice 1 by convention); case 1: only ignored pixels (NaN);
  // case 2: classes 1 and 2 swapped, so each alone scores 0 and their union 1.
  SegmentationMetrics m(3, 3, {{"organ", {1}}, {"tumor", {2}}, {"organ+tumor", {1, 2}}});
  const Tensor background = torch::zeros({1, 2, 2}, torch::kLong);
  m.add(confident(background, 3, 0.9), background, {0});
  const Tensor ignored = torch::full({1, 2, 2}, 255, torch::kLong);
  m.add(confident(background, 3, 0.9), ignored, {1});
  const Tensor labels = torch::tensor({1, 1, 2, 0}).view({1, 2, 2});
  const Tensor swapped = torch::tensor({2, 2, 1, 0}).view({1, 2, 2});
  m.add(confident(swapped, 3, 0.9), labels, {2});
  EXPECT_DOUBLE_EQ(m.dice_per_case(1)[0], 1.0);
  EXPECT_TRUE(std::isnan(m.dice_per_case(1)[1]));
  EXPECT_TRUE(std::isnan(m.ece_per_case()[1]));
  EXPECT_EQ(m.slices_per_case(), (std::vector<int64_t>{1, 0, 1}));
  EXPECT_DOUBLE_EQ(m.dice_per_case(0)[2], 0.0);
  EXPECT_DOUBLE_EQ(m.dice_per_case(1)[2], 0.0);
  EXPECT_DOUBLE_EQ(m.dice_per_case(2)[2], 1.0);
  EXPECT_DOUBLE_EQ(m.mean_dice(1), 0.5);  // cases 0 and 2; case 1 has no voxels
}

TEST(Metrics, SliceDiceAveragesSlicesAndStateSumsAcrossSplits) {
  // Two slices of one case: one perfect, one with an empty prediction.
  const Tensor labels = torch::tensor({1, 0, 0, 0, 1, 1, 0, 0}).view({2, 2, 2});
  const Tensor predicted = torch::tensor({1, 0, 0, 0, 0, 0, 0, 0}).view({2, 2, 2});
  SegmentationMetrics whole(1, 2);
  whole.add(confident(predicted, 2, 0.7), labels, {0, 0});
  EXPECT_DOUBLE_EQ(whole.slice_dice_per_case(0)[0], 0.5);
  EXPECT_NEAR(whole.dice_per_case(0)[0], 2.0 * 1 / (1 + 3), 1e-12);
  // The same slices split over two accumulators (two ranks) and summed.
  SegmentationMetrics a(1, 2), b(1, 2);
  a.add(confident(predicted.narrow(0, 0, 1), 2, 0.7), labels.narrow(0, 0, 1), {0});
  b.add(confident(predicted.narrow(0, 1, 1), 2, 0.7), labels.narrow(0, 1, 1), {0});
  a.set_state(a.state() + b.state());
  EXPECT_TRUE(torch::allclose(a.state(), whole.state()));
}

// Binary probabilities [1,2,1,N] of foreground values `p`.
Tensor binary(const std::vector<double>& p) {
  const Tensor fg = torch::tensor(p, torch::kDouble).view({1, 1, 1, -1});
  return torch::cat({1 - fg, fg}, 1);
}

TEST(SoftReferenceMetrics, ThresholdDiceAndDistancesByHand) {
  // p = 0.05 0.25 0.55 0.95 against q = 0 1/3 2/3 1 (three raters). At t = 0.3 p keeps voxels
  // {2,3}, q {1,2,3}: Dice 0.8; at t = 0.6 p {3}, q {2,3}: 2/3; every other t agrees: 1.
  const Tensor p = binary({0.05, 0.25, 0.55, 0.95}), q = binary({0, 1.0 / 3, 2.0 / 3, 1});
  // Case 1: nothing predicted, nothing labelled: every threshold counts 1, distances 0. A fifth
  // voxel outside `keep` would spoil both if it counted.
  const Tensor p_empty = binary({0, 0, 0.9}), q_empty = binary({0, 0, 0});
  SoftReferenceMetrics metrics(2, 2, {{"fg", {1}}});
  metrics.add(p, q, torch::ones({1, 1, 4}, torch::kBool), {0});
  metrics.add(p_empty, q_empty, torch::tensor({true, true, false}).view({1, 1, 3}), {1});
  EXPECT_NEAR(metrics.threshold_dice_per_case(0)[0], (7 + 0.8 + 2.0 / 3) / 9, 1e-12);
  EXPECT_DOUBLE_EQ(metrics.threshold_dice_per_case(0)[1], 1.0);
  // L1 and Brier sum over both classes: twice the foreground's difference.
  const double d[] = {0.05, 0.25 - 1.0 / 3, 0.55 - 2.0 / 3, -0.05};
  double l1 = 0, brier = 0;
  for (double x : d) {
    l1 += 2 * std::abs(x) / 4;
    brier += 2 * x * x / 4;
  }
  EXPECT_NEAR(metrics.l1_per_case()[0], l1, 1e-12);
  EXPECT_NEAR(metrics.brier_per_case()[0], brier, 1e-12);
  EXPECT_DOUBLE_EQ(metrics.l1_per_case()[1], 0.0);
  // Rater ECE: p predicts 0, 0, 1, 1 with confidence 0.95, 0.75, 0.55, 0.95; the raters who chose
  // those classes: 1, 2/3, 2/3, 1. Bins 9: |1.9 - 2|, 7: |0.75 - 2/3|, 5: |0.55 - 2/3|, over 4.
  EXPECT_NEAR(metrics.rater_ece_per_case()[0], (0.1 + (0.75 - 2.0 / 3) + (2.0 / 3 - 0.55)) / 4, 1e-12);
  EXPECT_DOUBLE_EQ(metrics.rater_ece_per_case()[1], 0.0);  // background at 1 where every rater says so
  // The state sums across ranks: two halves of case 0 give the same numbers.
  SoftReferenceMetrics a(2, 2, {{"fg", {1}}}), b(2, 2, {{"fg", {1}}});
  const Tensor keep_first = torch::tensor({true, true, false, false}).view({1, 1, 4});
  a.add(p, q, keep_first, {0});
  b.add(p, q, keep_first.logical_not(), {0});
  a.set_state(a.state() + b.state());
  EXPECT_NEAR(a.threshold_dice_per_case(0)[0], metrics.threshold_dice_per_case(0)[0], 1e-12);
  EXPECT_TRUE(std::isnan(a.l1_per_case()[1]));  // a case without voxels
}

}  // namespace
}  // namespace kdseg

TEST(PredictedClasses, AreTorchsArgmaxTiesIncluded) {
  torch::manual_seed(4);
  at::Tensor p = torch::softmax(torch::randn({3, 4, 7, 9}), 1);
  p[0][2] = p[0][1];  // ties between classes 1 and 2 on the first image
  p[1][3] = p[1][0];
  const at::Tensor k = kdseg::predicted_classes(p);
  EXPECT_EQ(k.scalar_type(), torch::kByte);
  EXPECT_TRUE(k.to(torch::kLong).equal(p.argmax(1)));
}
