// The report of `kdseg evaluate`: statistics over cases, and report.json rendered as a
// self-contained report.html and a per_case.csv. No LibTorch here, so a report can be
// re-rendered (and tested) without a model.
//
// report.json ("format": "kdseg report 1"); NaN is stored as null and shown as "–" (HTML) or
// an empty field (CSV). Every key below must be present.
//
//   format, tool_version, created (ISO 8601), data, store_hash   strings
//   fold                                                         integer
//   task: {name, classes, class_names: [string]}
//   regions: [string]                 the Dice regions, e.g. ["kidney", "tumor", "kidney+tumor"]
//   options: any JSON                 shown pretty-printed
//   empty_slice_dice: number          slice Dice when prediction and label are both empty
//   models: [{
//     name, file, file_hash, description: string;  slices: integer (all cases together)
//     summary: {
//       dice: {<region>: {mean, ci95: [low, high], global, worst5}}
//       slice_dice: {<region>: number}
//       ece: {mean, ci95: [low, high]},  classwise_ece, nll, brier: number
//       surface (optional, with every model or none): {<region>: {hd95, assd, nsd: {mean,
//         ci95: [low, high]}}}; options then hold surface_tolerance_mm
//     }
//     reliability: {bins, confidence: [bins], accuracy: [bins], count: [bins integers]}
//     cases: [{id, slices, dice: {<region>}, slice_dice: {<region>}, ece, classwise_ece, nll, brier,
//              and with surface: hd95, assd, nsd: {<region>}}]
//            (the number of cases is the length of this array; there is no separate count)
//     paired (optional; every model but the first): {reference: the first model's name,
//       dice: {<region>: {cases, mean, ci95: [low, high], p_value, p_holm}}}: per-case Dice minus
//       the reference's over the cases where both are defined (paired_difference below);
//       p_holm (optional) is p_value adjusted over every comparison of the report (holm_adjusted)
//   }]
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace kdseg::eval::report {

struct Interval {
  double low;
  double high;
};

// Throughout, non-finite entries (NaN: a metric undefined for that case) are left out.

// The mean of the finite values; NaN when there are none.
double mean_ignoring_nan(const std::vector<double>& values);

// The percentile-bootstrap interval of the mean over cases: `resamples` resamples of the finite
// values with replacement, the (1-level)/2 and (1+level)/2 quantiles of their means (linear
// interpolation between order statistics). The same (values, resamples, level, seed) give the
// same interval. {NaN, NaN} without finite values, {v, v} for a single one.
// Throws kdseg::Error when resamples < 1 or level is outside (0, 1).
Interval bootstrap_ci(const std::vector<double>& values, int resamples = 2000, double level = 0.95,
                      uint64_t seed = 0);

// Model a against model b over the same cases (a[i] and b[i] are case i): the mean of the
// differences a - b over the cases where both are finite, the percentile-bootstrap interval of
// that mean (resampling cases, so each keeps its pair; bootstrap_ci of the differences), and
// the two-sided p-value of a sign-flip permutation test of the mean difference (under "no
// difference" each case's difference is as likely to have either sign): exact over all 2^n
// sign patterns for n <= 20 cases, else from `permutations` random patterns, counting the
// observed one. NaN mean, interval and p-value without a finite pair.
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

// One HTML page with no external resources (its Content-Security-Policy forbids every fetch):
// header, table#comparison, table#slice-dice and table#surface when the models carry surface
// distances (the best value of each column has class "best"), table#paired when the models
// carry paired differences, one svg.reliability per model, svg#per-case-dice (the "tumor" region, else the first), table#per-case and
// section#configuration. A small script sets body[data-rendered="ok"] once the charts are in
// place, and html[data-error] on a script error, console.error or blocked load.
// Throws kdseg::Error when `report` does not follow the schema above.
std::string render_html(const nlohmann::json& report);

// model,case,slices,<region>_dice...,ece,classwise_ece,nll,brier: one line per model and case,
// numbers as written in report.json. Throws kdseg::Error when `report` does not follow the schema.
std::string render_per_case_csv(const nlohmann::json& report);

// Writes folder/report.json, folder/per_case.csv and folder/report.html, each atomically;
// creates the folder when needed. Renders everything before writing anything.
void write_report(const std::string& folder, const nlohmann::json& report);

}  // namespace kdseg::eval::report
