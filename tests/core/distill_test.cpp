// Cross-entropy, KL divergence, boundary label smoothing and the segmentation objective.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/error.h"
#include "core/losses/distill.h"

namespace {
namespace L = kdseg::losses;
using torch::Tensor;

Tensor logits_for(std::vector<int64_t> shape, uint64_t seed) {
  torch::manual_seed(seed);
  return torch::randn(shape, torch::kDouble).requires_grad_(true);
}

TEST(CrossEntropy, MatchesLibTorchAndSkipsIgnoredPixels) {
  const Tensor z = logits_for({2, 3, 4, 4}, 1);
  torch::manual_seed(2);
  Tensor y = torch::randint(0, 3, {2, 4, 4}, torch::kLong);
  y.masked_fill_(torch::rand({2, 4, 4}) > 0.7, 255);
  const Tensor expected =
      torch::nn::functional::cross_entropy(z, y, torch::nn::functional::CrossEntropyFuncOptions().ignore_index(255));
  EXPECT_NEAR(L::cross_entropy(z, y, 255).item<double>(), expected.item<double>(), 1e-14);
}

TEST(CrossEntropy, AllIgnoredIsZeroWithZeroGradient) {
  const Tensor z = logits_for({1, 2, 3, 3}, 3);
  const Tensor loss = L::cross_entropy(z, torch::full({1, 3, 3}, 255, torch::kLong), 255);
  loss.backward();
  EXPECT_EQ(loss.item<double>(), 0.0);
  EXPECT_EQ(z.grad().abs().max().item<double>(), 0.0);
}

TEST(KlDivergence, ZeroAgainstOwnSoftmaxAndScaledByTemperatureSquared) {
  const Tensor z = logits_for({2, 3, 5, 5}, 4);
  for (const double t : {1.0, 2.0, 4.0}) {
    EXPECT_NEAR(L::kl_divergence(z, torch::softmax(z.detach() / t, 1), t).item<double>(), 0.0, 1e-14);
  }
  torch::manual_seed(5);
  const Tensor p = torch::softmax(torch::randn({2, 3, 5, 5}, torch::kDouble), 1);
  const double t = 3.0;
  const Tensor log_q = torch::log_softmax(z.detach() / t, 1);
  const double expected = t * t * (p * (p.log() - log_q)).sum(1).mean().item<double>();
  EXPECT_NEAR(L::kl_divergence(z, p, t).item<double>(), expected, 1e-13);
}

TEST(KlDivergence, KeepMaskAndZeroProbabilities) {
  const Tensor z = logits_for({1, 2, 2, 2}, 6);
  Tensor p = torch::zeros({1, 2, 2, 2}, torch::kDouble);
  p.select(1, 0).fill_(1.0);  // one-hot target: 0 log 0 terms must be 0, not NaN
  Tensor keep = torch::tensor({true, false, true, false}).reshape({1, 2, 2});
  const Tensor loss = L::kl_divergence(z, p, 1.0, keep);
  const Tensor log_q = torch::log_softmax(z.detach(), 1).select(1, 0).reshape({-1});
  EXPECT_NEAR(loss.item<double>(), -(log_q[0] + log_q[2]).item<double>() / 2, 1e-14);
  EXPECT_EQ(L::kl_divergence(z, p, 1.0, torch::zeros({1, 2, 2}, torch::kBool)).item<double>(), 0.0);
}

TEST(BoundaryLabelSmoothing, SmoothsOnlyPixelsNextToAnotherClass) {
  // Left half class 0, right half class 1 in an 6x6 image: with k = 3 only the two columns at
  // the edge between them are boundary pixels.
  Tensor y = torch::zeros({1, 6, 6}, torch::kLong);
  y.narrow(2, 3, 3).fill_(1);
  const auto s = L::boundary_label_smoothing(y, 2, 0.2, 3);
  const Tensor expected_boundary = torch::zeros({1, 6, 6}, torch::kBool);
  expected_boundary.narrow(2, 2, 2).fill_(true);
  EXPECT_TRUE(s.boundary.equal(expected_boundary));
  EXPECT_NEAR(s.soft[0][0][0][2].item<double>(), 0.9, 1e-7);
  EXPECT_NEAR(s.soft[0][1][0][2].item<double>(), 0.1, 1e-7);
  EXPECT_EQ(s.soft[0][0][0][0].item<double>(), 1.0);
  EXPECT_TRUE(s.soft.sum(1).sub(1).abs().max().item<double>() < 1e-6);
  // A 5x5 window reaches two columns further.
  EXPECT_EQ(L::boundary_label_smoothing(y, 2, 0.2, 5).boundary.sum().item<int64_t>(), 4 * 6);
}

TEST(BoundaryLabelSmoothing, PixelsNextToIgnoredOnesStayHardAndIgnoredAreZero) {
  Tensor y = torch::zeros({1, 4, 4}, torch::kLong);
  y.narrow(2, 2, 2).fill_(1);
  y[0][0].fill_(9);  // top row unlabelled
  const auto s = L::boundary_label_smoothing(y, 2, 0.5, 3, 9);
  EXPECT_FALSE(s.boundary[0][1].any().item<bool>()) << "row next to ignored pixels is left hard";
  EXPECT_TRUE(s.boundary[0][2][1].item<bool>());
  EXPECT_EQ(s.soft[0].select(1, 0).abs().sum().item<double>(), 0.0);
  EXPECT_FALSE(s.keep[0][0].any().item<bool>());
  // 3D: a k x k x k window.
  Tensor v = torch::zeros({1, 3, 3, 3}, torch::kLong);
  v[0][2].fill_(1);
  EXPECT_EQ(L::boundary_label_smoothing(v, 2, 0.5, 3).boundary.sum().item<int64_t>(), 18);
}

TEST(Objective, HardOnlyIsWeightedCeAndDml) {
  const Tensor z = logits_for({2, 3, 4, 4}, 7);
  const Tensor aux = logits_for({2, 3, 4, 4}, 8);
  torch::manual_seed(9);
  const Tensor y = torch::randint(0, 3, {2, 4, 4}, torch::kLong);
  const L::SegmentationObjective objective;
  const auto terms = objective({z, aux, y, Tensor(), Tensor()});
  const double ce =
      0.25 * (0.5 * L::cross_entropy(z, y).item<double>() + 0.5 * L::cross_entropy(aux, y).item<double>());
  const double dml = 0.75 * L::dml_loss(z, y).item<double>();
  EXPECT_NEAR(terms.ce.item<double>(), ce, 1e-14);
  EXPECT_NEAR(terms.dml_hard.item<double>(), dml, 1e-14);
  EXPECT_NEAR(terms.total.item<double>(), ce + dml, 1e-14);
  EXPECT_EQ(terms.kl.item<double>(), 0.0);
}

TEST(Objective, DistillationAddsAuxiliaryKlAndUsesReducer) {
  const Tensor z = logits_for({2, 3, 4, 4}, 10);
  const Tensor aux = logits_for({2, 3, 4, 4}, 11);
  torch::manual_seed(12);
  Tensor y = torch::randint(0, 3, {2, 4, 4}, torch::kLong);
  y[0][0].fill_(3);
  const Tensor teacher = torch::softmax(torch::randn({2, 3, 4, 4}, torch::kDouble) / 2.0, 1);
  int reduced = 0;
  L::GlobalBatch global;
  global.dml_statistics = [&](const L::DmlStatistics& s) {
    ++reduced;
    return s;
  };
  const L::SegmentationObjective objective(L::ObjectiveWeights().temperature(2.0), L::DmlOptions(), 3, global);
  const auto terms = objective({z, aux, y, teacher, Tensor()});
  const Tensor keep = y != 3;
  const double kl = 0.5 * 0.25 *
                    (0.5 * L::kl_divergence(z, teacher, 2.0, keep).item<double>() +
                     0.5 * L::kl_divergence(aux, teacher, 2.0, keep).item<double>());
  EXPECT_NEAR(terms.kl.item<double>(), kl, 1e-14);
  EXPECT_NEAR(terms.dml_soft.item<double>(), 0.5 * 0.75 * L::dml_loss(z, teacher, keep).item<double>(), 1e-14);
  EXPECT_EQ(reduced, 2) << "hard and soft DML statistics both pass through the reducer";
  terms.total.backward();
  EXPECT_TRUE(z.grad().isfinite().all().item<bool>());
  EXPECT_GT(aux.grad().abs().max().item<double>(), 0.0);
}

// The raters' mean q with a teacher's p: one soft target, their weighted mixture, by hand.
TEST(Objective, SoftLabelsAndTeacherLearnFromTheirMixture) {
  const Tensor z = logits_for({2, 3, 4, 4}, 13);
  torch::manual_seed(14);
  const Tensor q = torch::softmax(torch::randn({2, 3, 4, 4}, torch::kDouble), 1);
  const Tensor p = torch::softmax(torch::randn({2, 3, 4, 4}, torch::kDouble) / 2.0, 1);
  Tensor keep = torch::ones({2, 4, 4}, torch::kBool);
  keep[1][2].fill_(false);
  const auto weights = L::ObjectiveWeights().label(0.3).teacher(0.9).temperature(2.0);
  const L::SegmentationObjective objective(weights);
  L::ObjectiveInputs in;
  in.logits = z;
  in.soft = p;
  in.keep = keep;
  in.label_soft = q;
  const auto terms = objective(in);

  const Tensor m = (0.3 * q + 0.9 * p) / 1.2;
  const Tensor log_student = torch::log_softmax(z / 2.0, 1);
  const Tensor kl_per_pixel = 4.0 * (m * (m.log() - log_student)).sum(1);  // T^2 * KL(m || z/T)
  const double kl = (kl_per_pixel * keep).sum().item<double>() / keep.sum().item<double>();
  EXPECT_NEAR(terms.kl.item<double>(), 0.25 * 0.5 * kl, 1e-12) << "w_ce * w_main * T^2 * KL(m || z/T)";
  EXPECT_NEAR(terms.dml_soft.item<double>(), 0.75 * L::dml_loss(z, m, keep).item<double>(), 1e-12);
  EXPECT_EQ(terms.ce.item<double>(), 0.0);
  EXPECT_EQ(terms.dml_hard.item<double>(), 0.0);

  in.soft = Tensor();  // soft labels alone are the target
  const auto alone = objective(in);
  in.soft = q;
  in.label_soft = Tensor();
  EXPECT_NEAR(alone.total.item<double>(), objective(in).total.item<double>(), 1e-14);

  in.labels = torch::zeros({2, 4, 4}, torch::kLong);
  in.label_soft = q;
  EXPECT_THROW(objective(in), kdseg::Error) << "hard and soft labels at once";
}

}  // namespace
