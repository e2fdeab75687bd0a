#include "data/rater_agreement.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "core/error.h"

namespace kdseg::data {

std::vector<AgreementRegion> agreement_regions(Layout layout) {
  switch (layout) {
    case Layout::kKits23: return {{"kidney", {1, 2, 3}}, {"tumor", {2}}, {"cyst", {3}}};
    case Layout::kQubiq: return {{"mask", {1}}};
    case Layout::kKits19: return {{"kidney", {1, 2}}, {"tumor", {2}}};
    case Layout::kLits: return {{"liver", {1, 2}}, {"tumor", {2}}};
  }
  return {};
}

std::vector<double> pairwise_dice(const at::Tensor& raters, const std::vector<AgreementRegion>& regions) {
  KDSEG_CHECK(raters.dim() >= 2 && raters.scalar_type() == at::kByte, "pairwise_dice: raters must be [R,*] uint8");
  const int64_t r = raters.size(0);
  const at::Tensor flat = raters.reshape({r, -1});
  std::vector<double> out;
  for (const AgreementRegion& region : regions) {
    at::Tensor in = at::zeros_like(flat, at::kBool);
    for (const uint8_t v : region.labels) in.logical_or_(flat == v);
    const at::Tensor counts = in.sum(1).to(at::kDouble);
    if (r < 2 || counts.sum().item<double>() == 0) {
      out.push_back(std::numeric_limits<double>::quiet_NaN());
      continue;
    }
    double total = 0;
    for (int64_t a = 0; a < r; ++a) {
      for (int64_t b = a + 1; b < r; ++b) {
        const double both = in[a].logical_and(in[b]).sum().item<double>();
        const double sum = counts[a].item<double>() + counts[b].item<double>();
        total += sum == 0 ? 1.0 : 2 * both / sum;
      }
    }
    out.push_back(total / static_cast<double>(r * (r - 1) / 2));
  }
  return out;
}

double percentile(const std::vector<double>& sorted, double p) {
  const double at = p * static_cast<double>(sorted.size() - 1);
  const auto low = static_cast<size_t>(std::floor(at));
  const size_t high = std::min(low + 1, sorted.size() - 1);
  return sorted[low] + (at - static_cast<double>(low)) * (sorted[high] - sorted[low]);
}

AgreementSummary summarize_agreement(std::vector<double> values) {
  values.erase(std::remove_if(values.begin(), values.end(), [](double v) { return std::isnan(v); }), values.end());
  AgreementSummary s;
  s.cases = static_cast<int64_t>(values.size());
  if (values.empty()) return s;
  std::sort(values.begin(), values.end());
  s.median = percentile(values, 0.5);
  s.p10 = percentile(values, 0.1);
  s.p90 = percentile(values, 0.9);
  s.min = values.front();
  s.max = values.back();
  return s;
}

std::string describe_agreement(const std::vector<AgreementRegion>& regions,
                               const std::vector<std::vector<double>>& per_case) {
  std::string text;
  for (size_t g = 0; g < regions.size(); ++g) {
    std::vector<double> values;
    for (const auto& row : per_case) values.push_back(row.at(g));
    const AgreementSummary s = summarize_agreement(values);
    if (s.cases == 0) continue;
    char line[160];
    std::snprintf(line, sizeof line, "%s%s %.3f [%.3f, %.3f] (%lld cases)", text.empty() ? "" : ", ",
                  regions[g].name.c_str(), s.median, s.p10, s.p90, static_cast<long long>(s.cases));
    text += line;
  }
  return text;
}

}  // namespace kdseg::data
