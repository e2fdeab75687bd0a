// Properties of the DML family: equivalences, semimetric axioms, gradients, edge cases, the
// fused CPU kernel against the ATen composition, and statistics that can be reduced across ranks.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/error.h"
#include "core/losses/dml.h"

namespace {
namespace L = kdseg::losses;
using torch::Tensor;

Tensor random_logits(std::vector<int64_t> shape, uint64_t seed, torch::Dtype dtype = torch::kDouble) {
  torch::manual_seed(seed);
  return (torch::randn(shape, torch::kDouble) * 2).to(dtype).requires_grad_(true);
}
Tensor random_labels(std::vector<int64_t> shape, int64_t classes, uint64_t seed) {
  torch::manual_seed(seed);
  return torch::randint(0, classes, shape, torch::kLong);
}
Tensor random_soft(std::vector<int64_t> shape, uint64_t seed) {
  torch::manual_seed(seed);
  return torch::softmax(torch::randn(shape, torch::kDouble) * 3, 1);
}
double max_abs_diff(const Tensor& a, const Tensor& b) { return (a - b).abs().max().item<double>(); }

// d loss / d logits.
Tensor grad_of(const std::function<Tensor(const Tensor&)>& loss, const Tensor& logits) {
  Tensor z = logits.detach().clone().requires_grad_(true);
  loss(z).backward();
  return z.grad();
}

TEST(Dml, Dml1Dml2AndSoftDiceAgreeOnHardLabels) {
  const Tensor z = random_logits({3, 4, 6, 7}, 1);
  const Tensor y = random_labels({3, 6, 7}, 4, 2);
  const auto dml1 = [&](const Tensor& x) { return L::dml_loss(x, y); };
  const auto dml2 = [&](const Tensor& x) { return L::dml2_loss(x, y); };
  const auto dice = [&](const Tensor& x) { return L::soft_dice_loss(x, y); };
  // float64 throughout: the three forms differ only by rounding.
  EXPECT_NEAR(dml1(z).item<double>(), dml2(z).item<double>(), 1e-12);
  EXPECT_NEAR(dml1(z).item<double>(), dice(z).item<double>(), 1e-12);
  EXPECT_LT(max_abs_diff(grad_of(dml1, z), grad_of(dml2, z)), 1e-12);
  EXPECT_LT(max_abs_diff(grad_of(dml1, z), grad_of(dice, z)), 1e-12);
}

TEST(Dml, FormsDifferOnSoftLabels) {
  const Tensor z = random_logits({2, 3, 5, 5}, 3);
  const Tensor p = random_soft({2, 3, 5, 5}, 4);
  const double dml1 = L::dml_loss(z, p).item<double>();
  EXPECT_GT(std::abs(dml1 - L::soft_dice_loss(z, p, {}, 1.0, false).item<double>()), 1e-3);
  EXPECT_GT(std::abs(dml1 - L::dml2_loss(z, p, {}, 1.0, false).item<double>()), 1e-3);
}

// Dice semimetric on probability maps directly (no softmax), smooth 0, dataset reduction.
double dml_between(const Tensor& x, const Tensor& y) {
  const auto options = L::DmlOptions().smooth(0.0).active_soft(L::ActiveClasses::kAll);
  return L::dml_from_statistics(L::dml_statistics(x, y, {}, options), options).item<double>();
}

TEST(Dml, ZeroExactlyOnIdenticalInputsAndPositiveOtherwise) {
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const Tensor x = random_soft({2, 3, 4, 4}, seed);
    EXPECT_EQ(dml_between(x, x), 0.0) << "seed " << seed;
    Tensor y = x.clone();
    y[0][0][1][1] += 1e-3;
    y[0][1][1][1] -= 1e-3;
    EXPECT_GT(dml_between(x, y), 0.0) << "seed " << seed;
  }
}

TEST(Dml, SymmetricForDiceCoefficients) {
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const Tensor x = random_soft({2, 3, 4, 4}, seed), y = random_soft({2, 3, 4, 4}, seed + 100);
    EXPECT_NEAR(dml_between(x, y), dml_between(y, x), 1e-14);
  }
}

TEST(Dml, RelaxedTriangleInequality) {
  // With L1 cardinalities the Dice distance D and the Jaccard distance J (a metric on
  // [0,1]^n) satisfy D = J / (2 - J), hence D(x,z) <= J(x,z) <= J(x,y) + J(y,z) <= 2 D(x,y) + 2 D(y,z).
  int strict_violations = 0;
  for (uint64_t seed = 0; seed < 300; ++seed) {
    torch::manual_seed(seed);
    // Single-class vectors in [0,1]^8, some sparse, so that the plain triangle inequality can fail.
    auto draw = [] { return (torch::rand({1, 1, 8}, torch::kDouble) * (torch::rand({1, 1, 8}) > 0.5)); };
    const Tensor x = draw(), y = draw(), z = draw();
    if (x.sum().item<double>() == 0 || y.sum().item<double>() == 0 || z.sum().item<double>() == 0) continue;
    const double xz = dml_between(x, z), xy = dml_between(x, y), yz = dml_between(y, z);
    EXPECT_LE(xz, 2.0 * (xy + yz) + 1e-12) << "seed " << seed;
    strict_violations += xz > xy + yz + 1e-12;
  }
  // The plain inequality does not hold for Dice: DML is a semimetric, not a metric.
  EXPECT_GT(strict_violations, 0);
}

// Central finite differences in float64 against autograd for several option sets.
TEST(Dml, GradientMatchesFiniteDifferences) {
  const Tensor y_hard = random_labels({2, 4, 5}, 3, 11);
  const Tensor y_soft = random_soft({2, 3, 4, 5}, 12);
  const Tensor keep = torch::rand({2, 4, 5}) > 0.2;
  const std::vector<std::pair<L::DmlOptions, bool>> cases = {
      {L::DmlOptions(), true},
      {L::DmlOptions().alpha(1).beta(1).smooth(0), true},
      {L::DmlOptions().dataset_weight(0.3).image_weight(0.5).class_weight(0.2), true},
      {L::DmlOptions().gamma(2).log_loss(true).class_weights({0.2, 1.0, 2.0}), false},
      {L::DmlOptions().norm(2).alpha(0.3).beta(0.7), false},
      {L::DmlOptions().norm(3).active_soft(L::ActiveClasses::kPresent).threshold(0.2), false},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& [options, hard] = cases[i];
    const Tensor target = hard ? y_hard : y_soft;
    const auto loss = [&](const Tensor& z) { return L::dml_loss(z, target, keep, options); };
    const Tensor z0 = random_logits({2, 3, 4, 5}, 20 + i);
    const Tensor analytic = grad_of(loss, z0);
    Tensor numeric = torch::zeros_like(z0);
    const double h = 1e-6;
    auto flat = z0.detach().flatten();
    for (int64_t k = 0; k < flat.numel(); ++k) {
      Tensor plus = flat.clone(), minus = flat.clone();
      plus[k] += h;
      minus[k] -= h;
      const double d = (loss(plus.view_as(z0)).item<double>() - loss(minus.view_as(z0)).item<double>()) / (2 * h);
      numeric.view(-1)[k] = d;
    }
    // Central differences of a smooth function: error O(h^2) plus rounding 1e-16/h = 1e-10.
    EXPECT_LT(max_abs_diff(analytic, numeric), 1e-7) << "option set " << i;
  }
}

TEST(Dml, FusedKernelMatchesComposition) {
  struct Case {
    std::vector<int64_t> shape;
    bool hard, masked;
    L::DmlOptions options;
  };
  const std::vector<Case> cases = {
      {{2, 3, 40, 50}, true, false, L::DmlOptions()},
      {{2, 3, 40, 50}, false, true, L::DmlOptions()},
      {{3, 2, 6, 20, 20}, true, true, L::DmlOptions().ignore_index(7)},
      {{2, 4, 64, 64}, false, false, L::DmlOptions().norm(2)},
      {{1, 2, 300, 300}, true, true, L::DmlOptions().norm(1.5)},
      // Pixel counts that are not multiples of the kernel's block width.
      {{2, 3, 7, 9}, true, true, L::DmlOptions()},
      {{3, 5, 5, 7, 11}, false, true, L::DmlOptions().norm(2)},
      {{1, 2, 1, 17}, true, false, L::DmlOptions().image_weight(1)},
      // More classes than the blocked kernels take: the per-class kernel.
      {{1, 40, 9, 9}, true, true, L::DmlOptions()},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    for (const auto dtype : {torch::kDouble, torch::kFloat}) {
      const Tensor z = random_logits(c.shape, 30 + i, dtype);
      std::vector<int64_t> spatial(c.shape);
      spatial.erase(spatial.begin() + 1);
      Tensor target = c.hard ? random_labels(spatial, c.shape[1], 40 + i) : random_soft(c.shape, 40 + i).to(dtype);
      if (c.options.ignore_index()) target.masked_fill_(torch::rand(spatial) > 0.8, *c.options.ignore_index());
      const Tensor keep = c.masked ? torch::rand(spatial) > 0.3 : Tensor();
      const Tensor prob = torch::softmax(z, 1);
      const auto fused = L::dml_statistics(prob, target, keep, c.options);
      const auto composite = L::detail::dml_statistics_composite(prob, target, keep, c.options);
      const double tol = dtype == torch::kDouble ? 1e-10 : 2e-3;  // float32 sums of ~1e5 terms
      EXPECT_LT(max_abs_diff(fused.tp, composite.tp), tol) << "case " << i;
      EXPECT_LT(max_abs_diff(fused.fp, composite.fp), tol) << "case " << i;
      EXPECT_LT(max_abs_diff(fused.fn, composite.fn), tol) << "case " << i;
      EXPECT_TRUE(fused.target_max.equal(composite.target_max)) << "case " << i;
      const auto loss_of = [](const L::DmlStatistics& s, const L::DmlOptions& o) {
        return L::dml_from_statistics(s, o);
      };
      const Tensor g_fused = torch::autograd::grad({loss_of(fused, c.options)}, {z}, {}, /*retain_graph=*/true)[0];
      const Tensor g_comp = torch::autograd::grad({loss_of(composite, c.options)}, {z}, {}, true)[0];
      const double gtol = dtype == torch::kDouble ? 1e-12 : 1e-6;
      EXPECT_LT(max_abs_diff(g_fused, g_comp) / g_comp.abs().max().item<double>(), gtol) << "case " << i;
      // dml_loss on CPU fuses the softmax into the statistics: same loss and gradient.
      const Tensor fused_loss = L::dml_loss(z, target, keep, c.options);
      const Tensor g_logits = torch::autograd::grad({fused_loss}, {z})[0];
      EXPECT_NEAR(fused_loss.item<double>(), loss_of(composite, c.options).item<double>(), tol) << "case " << i;
      EXPECT_LT(max_abs_diff(g_logits, g_comp) / g_comp.abs().max().item<double>(), gtol) << "case " << i;
    }
  }
}

TEST(Dml, ThreeDimensionalEqualsStackedTwoDimensional) {
  // Slices of a volume are just more pixels: [B,C,D,H,W] equals [B,C,D*H,W].
  const Tensor z = random_logits({2, 3, 4, 6, 5}, 50);
  const Tensor y = random_labels({2, 4, 6, 5}, 3, 51);
  EXPECT_NEAR(L::dml_loss(z, y).item<double>(),
              L::dml_loss(z.reshape({2, 3, 24, 5}), y.reshape({2, 24, 5})).item<double>(), 1e-14);
}

TEST(Dml, ReducedPrecisionIsComputedInFloat32) {
  const Tensor z = random_logits({2, 3, 8, 8}, 60, torch::kFloat);
  const Tensor y = random_labels({2, 8, 8}, 3, 61);
  const Tensor loss = L::dml_loss(z.to(torch::kBFloat16), y);
  EXPECT_EQ(loss.scalar_type(), torch::kFloat);
  // bf16 logits carry 8 bits: the loss moves by at most a few 1e-3.
  EXPECT_NEAR(loss.item<double>(), L::dml_loss(z, y).item<double>(), 5e-3);
}

TEST(Dml, EmptyClassesAndIgnoredBatchesAreFinite) {
  const Tensor z = random_logits({2, 3, 4, 4}, 70);
  // Every pixel ignored: no active class, loss 0 and zero gradient.
  const Tensor all_ignored = torch::full({2, 4, 4}, 255, torch::kLong);
  for (const auto& options :
       {L::DmlOptions().ignore_index(255), L::DmlOptions().ignore_index(255).image_weight(1).class_weight(1),
        L::DmlOptions().ignore_index(255).smooth(0).active_hard(L::ActiveClasses::kAll)}) {
    Tensor zz = z.detach().clone().requires_grad_(true);
    const Tensor loss = L::dml_loss(zz, all_ignored, {}, options);
    loss.backward();
    EXPECT_EQ(loss.item<double>(), 0.0);
    EXPECT_TRUE(zz.grad().isfinite().all().item<bool>());
    EXPECT_EQ(zz.grad().abs().max().item<double>(), 0.0);
  }
  // A class absent from the labels with smooth 0 and ALL: finite.
  const Tensor only_zero = torch::zeros({2, 4, 4}, torch::kLong);
  Tensor zz = z.detach().clone().requires_grad_(true);
  const Tensor loss = L::dml_loss(zz, only_zero, {}, L::DmlOptions().smooth(0).active_hard(L::ActiveClasses::kAll));
  loss.backward();
  EXPECT_TRUE(std::isfinite(loss.item<double>()));
  EXPECT_TRUE(zz.grad().isfinite().all().item<bool>());
}

TEST(Dml, EmptyPredictionAndTargetWithSmoothZeroScoresOne) {
  // Probabilities given directly: class 1 is empty in both prediction and target.
  Tensor x = torch::zeros({1, 2, 3, 3}, torch::kDouble);
  x.select(1, 0).fill_(1.0);
  const auto options = L::DmlOptions().smooth(0).active_soft(L::ActiveClasses::kAll);
  const Tensor loss = L::dml_from_statistics(L::dml_statistics(x, x.clone(), {}, options), options);
  EXPECT_EQ(loss.item<double>(), 0.0);
  // Log loss with smooth 0 and no overlap: clamped, finite.
  Tensor y = torch::zeros_like(x);
  y.select(1, 1).fill_(1.0);
  const auto log_options = L::DmlOptions(options).log_loss(true);
  const double log_loss = L::dml_from_statistics(L::dml_statistics(x, y, {}, log_options), log_options).item<double>();
  EXPECT_NEAR(log_loss, -std::log(1e-12), 1e-9);
}

TEST(Dml, HardLabelsOutOfRangeAreAnError) {
  const Tensor z = random_logits({1, 3, 2, 2}, 80);
  const Tensor y = torch::tensor({0, 1, 2, 5}, torch::kLong).reshape({1, 2, 2});
  try {
    L::dml_loss(z, y);
    FAIL();
  } catch (const kdseg::Error& e) {
    EXPECT_NE(std::string(e.what()).find("outside [0, 3)"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(L::dml_loss(z, y, {}, L::DmlOptions().ignore_index(5)));
  EXPECT_THROW(L::dml_loss(z, y, {}, L::DmlOptions().gamma(0.5)), kdseg::Error);
  // The composite path (every device but the CPU) checks too, unless the caller checked the
  // labels on the host: then it reads nothing back and clamps.
  const Tensor prob = torch::softmax(z, 1);
  EXPECT_THROW(L::detail::dml_statistics_composite(prob, y, {}, L::DmlOptions()), kdseg::Error);
  const auto unchecked = L::detail::dml_statistics_composite(prob, y, {}, L::DmlOptions().check_labels(false));
  const auto clamped = L::detail::dml_statistics_composite(prob, y.clamp_max(2), {}, L::DmlOptions());
  EXPECT_TRUE(unchecked.tp.equal(clamped.tp));
}

// Statistics of batch halves, concatenated, give the loss and gradient of the whole batch
// for every reduction: what an all-gather across two ranks does.
TEST(Dml, StatisticsOfBatchPartsReproduceTheWholeBatch) {
  const Tensor z = random_logits({6, 3, 5, 5}, 90);
  const Tensor y = random_labels({6, 5, 5}, 3, 91);
  for (const auto& options :
       {L::DmlOptions(), L::DmlOptions().dataset_weight(0.2).image_weight(0.5).class_weight(0.3)}) {
    const Tensor whole = grad_of([&](const Tensor& x) { return L::dml_loss(x, y, {}, options); }, z);
    const auto parts = [&](const Tensor& x) {
      const Tensor prob = torch::softmax(x, 1);
      const auto a = L::dml_statistics(prob.slice(0, 0, 2), y.slice(0, 0, 2), {}, options);
      const auto b = L::dml_statistics(prob.slice(0, 2, 6), y.slice(0, 2, 6), {}, options);
      L::DmlStatistics s{torch::cat({a.tp, b.tp}), torch::cat({a.fp, b.fp}), torch::cat({a.fn, b.fn}),
                         torch::cat({a.target_max, b.target_max}), true};
      return L::dml_from_statistics(s, options);
    };
    EXPECT_NEAR(parts(z).item<double>(), L::dml_loss(z, y, {}, options).item<double>(), 1e-14);
    EXPECT_LT(max_abs_diff(grad_of(parts, z), whole), 1e-15);
  }
  // The dataset reduction needs only the batch sums.
  const auto summed = [&](const Tensor& x) {
    const Tensor prob = torch::softmax(x, 1);
    const auto a = L::dml_statistics(prob.slice(0, 0, 3), y.slice(0, 0, 3)).summed_over_batch();
    const auto b = L::dml_statistics(prob.slice(0, 3, 6), y.slice(0, 3, 6)).summed_over_batch();
    L::DmlStatistics s{a.tp + b.tp, a.fp + b.fp, a.fn + b.fn, torch::maximum(a.target_max, b.target_max), true};
    return L::dml_from_statistics(s);
  };
  EXPECT_NEAR(summed(z).item<double>(), L::dml_loss(z, y).item<double>(), 1e-14);
  // A reducer passed to dml_loss sees this rank's statistics.
  int calls = 0;
  const auto reducer = [&](const L::DmlStatistics& s) {
    ++calls;
    EXPECT_EQ(s.tp.sizes(), (std::vector<int64_t>{6, 3}));
    return s;
  };
  L::dml_loss(z, y, {}, {}, reducer);
  EXPECT_EQ(calls, 1);
}

}  // namespace
