#include "eval/statistics.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <iterator>
#include <limits>

#include "core/error.h"
#include "core/random.h"

namespace kdseg::eval {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// The bootstrap draws from its own stream, independent of other uses of the same seed.
constexpr uint64_t kBootstrapStream = 0xB0075;
constexpr uint64_t kPermutationStream = 0x5161;
// Above this many pairs the permutation test samples sign patterns instead of trying all 2^n.
constexpr size_t kExactPermutationCases = 20;

double mean_of(const double* begin, const double* end) {
  double sum = 0;
  for (const double* v = begin; v != end; ++v) sum += *v;
  return sum / static_cast<double>(end - begin);
}

// The q-quantile of sorted values, interpolating linearly between order statistics (numpy's default).
double quantile(const std::vector<double>& sorted, double q) {
  const double position = q * static_cast<double>(sorted.size() - 1);
  const auto below = static_cast<size_t>(std::floor(position));
  const size_t above = std::min(below + 1, sorted.size() - 1);
  return sorted[below] + (position - static_cast<double>(below)) * (sorted[above] - sorted[below]);
}

// The two-sided p-value of the sign-flip permutation test of the mean of `differences` (not
// empty): the share of sign patterns whose |sum| reaches the observed one.
double sign_flip_p_value(const std::vector<double>& differences, uint64_t seed, int permutations) {
  double observed = 0, scale = 0;
  for (double v : differences) {
    observed += v;
    scale += std::abs(v);
  }
  // A relative slack, so that a pattern equal to the observed one up to rounding counts.
  const double threshold = std::abs(observed) - 1e-12 * scale;
  const auto at_least_as_extreme = [&](auto sign_of) {
    double sum = 0;
    for (size_t i = 0; i < differences.size(); ++i) sum += sign_of(i) ? differences[i] : -differences[i];
    return std::abs(sum) >= threshold;
  };
  if (differences.size() <= kExactPermutationCases) {
    const uint64_t patterns = uint64_t{1} << differences.size();
    uint64_t extreme = 0;
    for (uint64_t mask = 0; mask < patterns; ++mask) {
      extreme += at_least_as_extreme([mask](size_t i) { return ((mask >> i) & 1U) == 0; });
    }
    return static_cast<double>(extreme) / static_cast<double>(patterns);
  }
  Rng rng(derive_seed(seed, {kPermutationStream}));
  int64_t extreme = 0;
  for (int k = 0; k < permutations; ++k) extreme += at_least_as_extreme([&rng](size_t) { return rng.bernoulli(0.5); });
  return static_cast<double>(extreme + 1) / static_cast<double>(permutations + 1);
}

}  // namespace

std::vector<double> finite_values(const std::vector<double>& values) {
  std::vector<double> finite;
  std::copy_if(values.begin(), values.end(), std::back_inserter(finite), [](double v) { return std::isfinite(v); });
  return finite;
}

double mean_ignoring_nan(const std::vector<double>& values) {
  const std::vector<double> finite = finite_values(values);
  return finite.empty() ? kNaN : mean_of(finite.data(), finite.data() + finite.size());
}

Interval bootstrap_ci(const std::vector<double>& values, int resamples, double level, uint64_t seed) {
  KDSEG_CHECK(resamples >= 1, "bootstrap_ci: resamples must be at least 1, got ", resamples);
  KDSEG_CHECK(level > 0 && level < 1, "bootstrap_ci: level must be in (0, 1), got ", level);
  const std::vector<double> finite = finite_values(values);
  if (finite.empty()) return {kNaN, kNaN};
  if (finite.size() == 1) return {finite[0], finite[0]};
  Rng rng(derive_seed(seed, {kBootstrapStream}));
  const auto n = static_cast<int64_t>(finite.size());
  std::vector<double> means(static_cast<size_t>(resamples));
  for (double& mean : means) {
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += finite[static_cast<size_t>(rng.uniform_int(0, n - 1))];
    mean = sum / static_cast<double>(n);
  }
  std::sort(means.begin(), means.end());
  const double tail = (1 - level) / 2;
  return {quantile(means, tail), quantile(means, 1 - tail)};
}

std::vector<double> holm_adjusted(const std::vector<double>& p_values) {
  std::vector<size_t> order;
  for (size_t i = 0; i < p_values.size(); ++i) {
    if (std::isfinite(p_values[i])) order.push_back(i);
  }
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return p_values[a] < p_values[b]; });
  std::vector<double> adjusted(p_values.size(), kNaN);
  const auto tests = static_cast<double>(order.size());
  double running = 0;
  for (size_t k = 0; k < order.size(); ++k) {
    running = std::max(running, std::min(1.0, (tests - static_cast<double>(k)) * p_values[order[k]]));
    adjusted[order[k]] = running;
  }
  return adjusted;
}

PairedDifference paired_difference(const std::vector<double>& a, const std::vector<double>& b, int resamples,
                                   double level, uint64_t seed, int permutations) {
  KDSEG_CHECK(a.size() == b.size(), "paired_difference: ", a.size(), " and ", b.size(), " values are not pairs");
  KDSEG_CHECK(permutations >= 1, "paired_difference: permutations must be at least 1, got ", permutations);
  std::vector<double> differences;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isfinite(a[i]) && std::isfinite(b[i])) differences.push_back(a[i] - b[i]);
  }
  if (differences.empty()) return {0, kNaN, {kNaN, kNaN}, kNaN};
  PairedDifference result;
  result.cases = static_cast<int64_t>(differences.size());
  result.mean = mean_of(differences.data(), differences.data() + differences.size());
  result.ci95 = bootstrap_ci(differences, resamples, level, seed);
  result.p_value = sign_flip_p_value(differences, seed, permutations);
  return result;
}

double worst_fraction_mean(const std::vector<double>& values, double fraction) {
  KDSEG_CHECK(fraction > 0 && fraction <= 1, "worst_fraction_mean: fraction must be in (0, 1], got ", fraction);
  std::vector<double> finite = finite_values(values);
  if (finite.empty()) return kNaN;
  // The tolerance keeps a product such as 0.07 * 100 = 7.000000000000001 from counting 8 cases.
  const double wanted = std::ceil(fraction * static_cast<double>(finite.size()) - 1e-9);
  const size_t count = std::clamp<size_t>(static_cast<size_t>(wanted), 1, finite.size());
  std::partial_sort(finite.begin(), finite.begin() + static_cast<std::ptrdiff_t>(count), finite.end());
  return mean_of(finite.data(), finite.data() + count);
}

}  // namespace kdseg::eval
