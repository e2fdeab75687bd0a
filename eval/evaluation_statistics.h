// The statistics of `kdseg evaluate` over typed results (eval/evaluation_results.h): each model's
// summary over the fold's cases, and every model after the first compared with the first, case by
// case, with Holm's adjustment over every comparison of the report. Built on eval/statistics.h;
// the same inputs give the same numbers on every rank. No LibTorch here. Internal to eval/.
#pragma once

#include <cstdint>
#include <vector>

#include "eval/evaluation_results.h"

namespace kdseg::eval::detail {

// Bootstrap intervals over cases: `resamples` resamples from stream `seed`.
struct BootstrapSettings {
  int resamples = 2000;
  uint64_t seed = 0;
};

// Means over cases with bootstrap intervals (NaN cases left out), `global_dice` [region] as given
// and worst5 the mean of the lowest 5% of cases. Surface distances count only the evaluated cases
// (the others hold 0, not NaN).
ModelSummary summarise(const CaseValues& cases, const std::vector<double>& global_dice, BootstrapSettings bootstrap);

// Per region, `model`'s per-case Dice minus `first`'s over the cases both evaluated
// (paired_difference); p_holm is left empty for adjust_for_multiple_comparisons.
PairedComparison paired_with_first(const ModelResult& model, const ModelResult& first, size_t regions,
                                   BootstrapSettings bootstrap);

// Sets p_holm of every paired comparison (models after the first x regions): Holm's adjustment of
// their p-values taken together.
void adjust_for_multiple_comparisons(std::vector<ModelResult>& models);

}  // namespace kdseg::eval::detail
