#include "eval/report_schema.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <iterator>

#include "eval/report.h"
#include "eval/report_files.h"

namespace kdseg::eval::detail {
namespace {
using nlohmann::json;

// The surface distances' keys, in the order of CaseValues::surface.
constexpr const char* kSurfaceMetrics[] = {"hd95", "assd", "nsd"};
static_assert(std::size(kSurfaceMetrics) == kSurfaceMetricCount);

json number(double v) { return std::isfinite(v) ? json(v) : json(); }

json interval(const Interval& ci) { return json::array({number(ci.low), number(ci.high)}); }

json estimate(const Estimate& e) { return {{"mean", number(e.mean)}, {"ci95", interval(e.ci95)}}; }

// {<region>: value(r)} over the report's regions.
template <typename Value>
json per_region(const std::vector<std::string>& regions, Value value) {
  json out = json::object();
  for (size_t r = 0; r < regions.size(); ++r) out[regions[r]] = value(r);
  return out;
}

// The region set and the surfel surface Dice's tolerances, only where the regions are not the task's.
void add_region_options(const EvaluationSettings& s, json& options) {
  if (s.regions == "task") return;
  options["regions"] = s.regions;
  json tolerances = json::object();
  for (const auto& [region, mm] : s.surface_dice_tolerance) tolerances[region] = mm;
  options["surface_dice_tolerance_mm"] = s.surface ? tolerances : json();
}

json options_json(const EvaluationSettings& s) {
  json options = {{"device", s.device},
                  {"batch_size", s.batch_size},
                  {"bins", s.bins},
                  {"bootstrap_resamples", s.bootstrap},
                  {"bootstrap_seed", s.seed},
                  {"ranks", s.ranks},
                  {"save_predictions", s.save_predictions},
                  {"surface_metrics", s.surface},
                  {"surface_tolerance_mm", s.surface ? json(s.surface_tolerance) : json()},
                  {"band_mm", s.band_mm},
                  {"band_definition", "footprint"},  // core/metrics.h boundary_band
                  {"layout", s.layout},
                  {"slices", s.slices}};
  add_region_options(s, options);
  return options;
}

// What the metrics compare against: the store's label, or the majority and mean of its raters.
json reference_json(int64_t raters) {
  if (raters == 0) return {{"label", "store"}, {"raters", 0}};
  return {{"label", "majority"}, {"raters", raters}, {"soft", "rater mean"}};
}

// cases[] entry of a model for the store's case c.
json case_json(const EvaluationResults& results, const CaseValues& v, size_t c) {
  const auto& regions = results.regions;
  json entry = {{"id", results.case_ids[c]},
                {"file_name", safe_file_name(results.case_ids[c])},
                {"slices", v.slices[c]},
                {"dice", per_region(regions, [&](size_t r) { return number(v.dice[r][c]); })},
                {"slice_dice", per_region(regions, [&](size_t r) { return number(v.slice_dice[r][c]); })},
                {"ece", number(v.ece[c])},
                {"slice_ece", number(v.slice_ece[c])},
                {"classwise_ece", number(v.classwise_ece[c])},
                {"ace", number(v.ace[c])},
                {"mce", number(v.mce[c])},
                {"band_ece", number(v.band_ece[c])},
                {"nll", number(v.nll[c])},
                {"brier", number(v.brier[c])}};
  if (v.soft) {
    entry["soft_reference"] = {
        {"threshold_dice", per_region(regions, [&](size_t r) { return number(v.soft->threshold_dice[r][c]); })},
        {"l1", number(v.soft->l1[c])},
        {"brier", number(v.soft->brier[c])},
        {"rater_ece", number(v.soft->rater_ece[c])}};
  }
  for (size_t k = 0; v.has_surface() && k < kSurfaceMetricCount; ++k) {
    entry[kSurfaceMetrics[k]] = per_region(regions, [&](size_t r) { return number(v.surface[k][r][c]); });
  }
  if (!v.surface_dice.empty())
    entry["surface_dice"] = per_region(regions, [&](size_t r) { return number(v.surface_dice[r][c]); });
  return entry;
}

json summary_json(const std::vector<std::string>& regions, const ModelSummary& s) {
  json summary = {{"dice", per_region(regions,
                                      [&](size_t r) {
                                        const RegionDiceSummary& d = s.dice[r];
                                        return json{{"mean", number(d.over_cases.mean)},
                                                    {"ci95", interval(d.over_cases.ci95)},
                                                    {"global", number(d.global)},
                                                    {"worst5", number(d.worst5)}};
                                      })},
                  {"slice_dice", per_region(regions, [&](size_t r) { return number(s.slice_dice[r]); })},
                  {"ece", estimate(s.ece)},
                  {"slice_ece", number(s.slice_ece)},
                  {"classwise_ece", number(s.classwise_ece)},
                  {"ace", number(s.ace)},
                  {"mce", number(s.mce)},
                  {"band_ece", estimate(s.band_ece)},
                  {"nll", number(s.nll)},
                  {"brier", number(s.brier)}};
  if (!s.surface.empty()) {
    summary["surface"] = per_region(regions, [&](size_t r) {
      json metrics = json::object();
      for (size_t k = 0; k < kSurfaceMetricCount; ++k) metrics[kSurfaceMetrics[k]] = estimate(s.surface[r][k]);
      if (!s.surface_dice.empty()) metrics["surface_dice"] = estimate(s.surface_dice[r]);
      return metrics;
    });
  }
  if (s.soft) {
    summary["soft_reference"] = {
        {"threshold_dice", per_region(regions, [&](size_t r) { return estimate(s.soft->threshold_dice[r]); })},
        {"l1", estimate(s.soft->l1)},
        {"brier", estimate(s.soft->brier)},
        {"rater_ece", estimate(s.soft->rater_ece)}};
  }
  return summary;
}

json reliability_json(const ReliabilityBins& bins) {
  json confidence = json::array(), accuracy = json::array();
  for (size_t b = 0; b < bins.count.size(); ++b) {
    confidence.push_back(number(bins.confidence[b]));
    accuracy.push_back(number(bins.accuracy[b]));
  }
  return {{"bins", bins.bins}, {"confidence", confidence}, {"accuracy", accuracy}, {"count", bins.count}};
}

json paired_json(const std::vector<std::string>& regions, const PairedComparison& paired) {
  return {{"reference", paired.reference}, {"dice", per_region(regions, [&](size_t r) {
                                              const PairedDifference& d = paired.dice[r];
                                              return json{{"cases", d.cases},
                                                          {"mean", number(d.mean)},
                                                          {"ci95", interval(d.ci95)},
                                                          {"p_value", number(d.p_value)},
                                                          {"p_holm", number(paired.p_holm[r])}};
                                            })}};
}

json model_json(const EvaluationResults& results, const ModelResult& m) {
  json cases = json::array();
  for (size_t c = 0; c < m.cases.slices.size(); ++c) {
    if (m.cases.evaluated(c)) cases.push_back(case_json(results, m.cases, c));
  }
  json model = {{"name", m.name},
                {"file", m.file},
                {"file_hash", m.file_hash},
                {"description", m.description},
                {"slices", m.slices},
                {"summary", summary_json(results.regions, m.summary)},
                {"reliability", reliability_json(m.reliability)},
                {"cases", cases}};
  model["summary"]["parameters"] = m.parameters;
  model["summary"]["ms_per_slice"] = number(m.ms_per_slice);
  if (m.paired) model["paired"] = paired_json(results.regions, *m.paired);
  if (!m.curves.is_null()) model["curves"] = m.curves;
  return model;
}

json figure_json(const CaseFigure& f) {
  json dice = json::object();
  for (const auto& [model, value] : f.dice) dice[model] = number(value);
  return {{"region", f.region}, {"pick", f.pick},       {"case", f.case_id}, {"slice", f.slice},
          {"file", f.file},     {"columns", f.columns}, {"rows", f.rows},    {"dice", dice}};
}

}  // namespace

json report_json(const EvaluationResults& results) {
  json models = json::array();
  for (const ModelResult& m : results.models) models.push_back(model_json(results, m));
  json report = {{"format", report::kFormat},
                 {"tool_version", results.tool_version},
                 {"created", results.created},
                 {"data", results.data},
                 {"store_hash", results.store_hash},
                 {"store_options", results.store_options},
                 {"fold", results.fold},
                 {"task", {{"name", results.task}, {"classes", results.classes}, {"class_names", results.class_names}}},
                 {"regions", results.regions},
                 {"reference", reference_json(results.raters)},
                 {"options", options_json(results.settings)},
                 {"empty_slice_dice", results.empty_slice_dice},
                 {"models", models}};
  if (!results.rater_agreement.is_null()) report["rater_agreement"] = results.rater_agreement;
  if (results.figures) {
    json figures = json::array();
    for (const CaseFigure& f : *results.figures) figures.push_back(figure_json(f));
    report["figures"] = figures;
  }
  return report;
}

}  // namespace kdseg::eval::detail
