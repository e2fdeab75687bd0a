#include "eval/evaluation_statistics.h"

#include <cmath>

namespace kdseg::eval::detail {
namespace {

constexpr double kLevel = 0.95;

// report.json keeps only finite numbers (others become null, read back as NaN).
double finite_or_nan(double v) { return std::isfinite(v) ? v : std::nan(""); }

Estimate estimate(const std::vector<double>& values, BootstrapSettings bootstrap) {
  return {mean_ignoring_nan(values), bootstrap_ci(values, bootstrap.resamples, kLevel, bootstrap.seed)};
}

std::vector<std::array<Estimate, kSurfaceMetricCount>> surface_summary(const CaseValues& cases,
                                                                       BootstrapSettings bootstrap) {
  std::vector<std::array<Estimate, kSurfaceMetricCount>> out(cases.dice.size());
  for (size_t r = 0; r < out.size(); ++r) {
    for (size_t k = 0; k < kSurfaceMetricCount; ++k) {
      std::vector<double> distances;
      for (size_t c = 0; c < cases.slices.size(); ++c) {
        if (cases.evaluated(c)) distances.push_back(cases.surface[k][r][c]);
      }
      out[r][k] = estimate(distances, bootstrap);
    }
  }
  return out;
}

}  // namespace

ModelSummary summarise(const CaseValues& cases, const std::vector<double>& global_dice, BootstrapSettings bootstrap) {
  ModelSummary s;
  for (size_t r = 0; r < cases.dice.size(); ++r) {
    s.dice.push_back({estimate(cases.dice[r], bootstrap), global_dice[r], worst_fraction_mean(cases.dice[r], 0.05)});
    s.slice_dice.push_back(mean_ignoring_nan(cases.slice_dice[r]));
  }
  s.ece = estimate(cases.ece, bootstrap);
  s.slice_ece = mean_ignoring_nan(cases.slice_ece);
  s.classwise_ece = mean_ignoring_nan(cases.classwise_ece);
  s.nll = mean_ignoring_nan(cases.nll);
  s.brier = mean_ignoring_nan(cases.brier);
  s.ace = mean_ignoring_nan(cases.ace);
  s.mce = mean_ignoring_nan(cases.mce);
  s.band_ece = estimate(cases.band_ece, bootstrap);
  if (cases.has_surface()) s.surface = surface_summary(cases, bootstrap);
  for (const std::vector<double>& values : cases.surface_dice) {
    std::vector<double> evaluated;
    for (size_t c = 0; c < cases.slices.size(); ++c) {
      if (cases.evaluated(c)) evaluated.push_back(values[c]);
    }
    s.surface_dice.push_back(estimate(evaluated, bootstrap));
  }
  if (cases.soft) {
    SoftReferenceSummary soft;
    for (const auto& values : cases.soft->threshold_dice) soft.threshold_dice.push_back(estimate(values, bootstrap));
    soft.l1 = estimate(cases.soft->l1, bootstrap);
    soft.brier = estimate(cases.soft->brier, bootstrap);
    soft.rater_ece = estimate(cases.soft->rater_ece, bootstrap);
    s.soft = soft;
  }
  return s;
}

PairedComparison paired_with_first(const ModelResult& model, const ModelResult& first, size_t regions,
                                   BootstrapSettings bootstrap) {
  PairedComparison paired{first.name, {}, {}};
  for (size_t r = 0; r < regions; ++r) {
    std::vector<double> a, b;
    for (size_t c = 0; c < model.cases.slices.size(); ++c) {
      if (!model.cases.evaluated(c) || !first.cases.evaluated(c)) continue;
      a.push_back(finite_or_nan(model.cases.dice[r][c]));
      b.push_back(finite_or_nan(first.cases.dice[r][c]));
    }
    paired.dice.push_back(paired_difference(a, b, bootstrap.resamples, kLevel, bootstrap.seed));
  }
  return paired;
}

void adjust_for_multiple_comparisons(std::vector<ModelResult>& models) {
  std::vector<double> p_values;
  for (const ModelResult& model : models) {
    if (!model.paired) continue;
    for (const PairedDifference& test : model.paired->dice) p_values.push_back(finite_or_nan(test.p_value));
  }
  const std::vector<double> adjusted = holm_adjusted(p_values);
  size_t i = 0;
  for (ModelResult& model : models) {
    if (!model.paired) continue;
    model.paired->p_holm.assign(adjusted.begin() + static_cast<std::ptrdiff_t>(i),
                                adjusted.begin() + static_cast<std::ptrdiff_t>(i + model.paired->dice.size()));
    i += model.paired->dice.size();
  }
}

}  // namespace kdseg::eval::detail
