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

}  // namespace
}  // namespace kdseg
