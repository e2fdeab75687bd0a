// The statistics of `kdseg evaluate`'s report, over per-case values: means, percentile-bootstrap
// intervals, paired differences with a sign-flip permutation test, Holm's adjustment and
// worst-fraction means. The evaluator (eval/evaluate.cpp) summarises cases with them and the
// renderer (eval/report.cpp) uses finite_values. Pure C++: no LibTorch, no JSON.
//
// Throughout, non-finite entries (NaN: a metric undefined for that case) are left out. Random
// draws come from core/random.h streams keyed by `seed`, so the same inputs give the same
// numbers on every platform and rank count.
#pragma once

#include <cstdint>
#include <vector>

namespace kdseg::eval {

struct Interval {
  double low;
  double high;
};

// The finite entries of `values`, in their order.
std::vector<double> finite_values(const std::vector<double>& values);

// The mean of the finite values; NaN when there are none.
double mean_ignoring_nan(const std::vector<double>& values);

// The percentile-bootstrap interval of the mean over cases: `resamples` resamples of the finite
// values with replacement, the (1-level)/2 and (1+level)/2 quantiles of their means (linear
// interpolation between order statistics). The same (values, resamples, level, seed) give the
// same interval. {NaN, NaN} without finite values, {v, v} for a single one.
// Throws kdseg::Error when resamples < 1 or level is outside (0, 1).
Interval bootstrap_ci(const std::vector<double>& values, int resamples = 2000, double level = 0.95, uint64_t seed = 0);

// Model a against model b over the same cases (a[i] and b[i] are case i): the mean of the
// differences a - b over the cases where both are finite, the percentile-bootstrap interval of
// that mean (resampling cases, so each keeps its pair; bootstrap_ci of the differences), and
// the two-sided p-value of a sign-flip permutation test of the mean difference (under "no
// difference" each case's difference is as likely to have either sign): exact over all 2^n
// sign patterns for n <= 20 cases, else from `permutations` random patterns, counting the
// observed one. NaN mean, interval and p-value without a finite pair.
// Throws kdseg::Error when a and b differ in length or permutations < 1.
struct PairedDifference {
  int64_t cases = 0;
  double mean = 0;
  Interval ci95{0, 0};
  double p_value = 1;
};
PairedDifference paired_difference(const std::vector<double>& a, const std::vector<double>& b, int resamples = 2000,
                                   double level = 0.95, uint64_t seed = 0, int permutations = 100000);

// Holm's step-down adjustment of p-values for testing them together (it controls the chance of
// any false rejection, like Bonferroni, but rejects more): the k-th smallest of the m finite
// values becomes max over j <= k of min(1, (m - j + 1) p_(j)). NaN entries stay NaN and do not
// count in m. Order is kept.
std::vector<double> holm_adjusted(const std::vector<double>& p_values);

// The mean of the lowest ceil(fraction * n) finite values (at least one), e.g. worst-5% Dice;
// NaN without finite values. Throws kdseg::Error when fraction is outside (0, 1].
double worst_fraction_mean(const std::vector<double>& values, double fraction = 0.05);

}  // namespace kdseg::eval
