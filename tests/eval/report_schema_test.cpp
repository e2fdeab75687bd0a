// report.json from typed results (eval/report_schema.h): the keys eval/report.h documents, NaN
// as null, cases outside the fold left out, and a report the renderer accepts.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "eval/report.h"
#include "eval/report_files.h"
#include "eval/report_schema.h"

namespace {
using nlohmann::json;
namespace E = kdseg::eval::detail;
const double kNaN = std::nan("");

std::set<std::string> keys(const json& object) {
  std::set<std::string> out;
  for (const auto& item : object.items()) out.insert(item.key());
  return out;
}

// Two models over cases a, b (outside the fold) and c; regions kidney and tumor.
E::EvaluationResults results(bool surface, bool raters) {
  E::EvaluationResults r;
  r.tool_version = "kdseg test";
  r.created = "2026-01-01T00:00:00Z";
  r.data = "/data/store.h5";
  r.store_hash = "0123456789abcdef";
  r.store_options = {{"slices", "all"}};
  r.task = "organ-tumor";
  r.classes = 3;
  r.class_names = {"background", "kidney", "tumor"};
  r.regions = {"kidney", "tumor"};
  r.case_ids = {"a", "b", "c"};
  r.raters = raters ? 3 : 0;
  r.settings = {"cpu", 4, 2, 100, 7, 1, false, surface, 2.0, "kits23", 16, "task", {}, 2.0};
  for (int m = 0; m < 2; ++m) {
    E::ModelResult model;
    model.name = m == 0 ? "teacher" : "student";
    model.slices = 16;
    model.parameters = 1000 * (m + 1);
    model.ms_per_slice = m == 0 ? 2.5 : kNaN;  // NaN: not timed, written as null
    E::CaseValues& v = model.cases;
    v.slices = {8, 0, 8};
    v.dice = {{0.9, kNaN, 0.8 - 0.1 * m}, {0.5, kNaN, kNaN}};
    v.slice_dice = v.dice;
    v.ece = v.slice_ece = v.classwise_ece = v.nll = v.brier = {0.1, kNaN, 0.2};
    v.ace = v.mce = v.band_ece = {0.3, kNaN, 0.4};
    if (surface) v.surface.assign(E::kSurfaceMetricCount, {{1.0, 0.0, 2.0}, {3.0, 0.0, kNaN}});
    if (raters)
      v.soft = E::SoftReferenceCases{
          {{0.7, kNaN, 0.6}, {0.4, kNaN, 0.3}}, {0.1, kNaN, 0.2}, {0.1, kNaN, 0.2}, {0.05, kNaN, 0.1}};
    model.summary.dice.assign(2, {{0.85, {0.8, 0.9}}, 0.86, 0.8});
    model.summary.slice_dice = {0.8, kNaN};
    if (surface) model.summary.surface.assign(2, std::array<E::Estimate, E::kSurfaceMetricCount>{});
    if (raters) model.summary.soft = E::SoftReferenceSummary{std::vector<E::Estimate>(2), {}, {}, {}};
    model.reliability = {2, {0.25, kNaN}, {0.3, kNaN}, {10, 0}};
    if (m == 1)
      model.paired =
          E::PairedComparison{"teacher", {{2, -0.05, {-0.1, 0.0}, 0.5}, {0, kNaN, {kNaN, kNaN}, kNaN}}, {1.0, kNaN}};
    r.models.push_back(model);
  }
  return r;
}

TEST(ReportSchema, WritesEveryDocumentedKey) {
  const json report = E::report_json(results(true, true));
  EXPECT_EQ(keys(report),
            (std::set<std::string>{"format", "tool_version", "created", "data", "store_hash", "store_options", "fold",
                                   "task", "regions", "reference", "options", "empty_slice_dice", "models"}));
  EXPECT_EQ(report.at("format"), kdseg::eval::report::kFormat);
  EXPECT_EQ(keys(report.at("options")),
            (std::set<std::string>{"device", "batch_size", "bins", "bootstrap_resamples", "bootstrap_seed", "ranks",
                                   "save_predictions", "surface_metrics", "surface_tolerance_mm", "band_mm",
                                   "band_definition", "layout", "slices"}));
  EXPECT_EQ(report.at("reference"), (json{{"label", "majority"}, {"raters", 3}, {"soft", "rater mean"}}));
  const json& teacher = report.at("models").at(0);
  EXPECT_EQ(keys(teacher), (std::set<std::string>{"name", "file", "file_hash", "description", "slices", "summary",
                                                  "reliability", "cases"}));
  EXPECT_EQ(keys(teacher.at("summary")),
            (std::set<std::string>{"dice", "slice_dice", "ece", "slice_ece", "classwise_ece", "ace", "mce", "band_ece",
                                   "nll", "brier", "parameters", "ms_per_slice", "surface", "soft_reference"}));
  EXPECT_EQ(teacher.at("summary").at("parameters"), 1000);
  EXPECT_EQ(teacher.at("summary").at("ms_per_slice"), 2.5);
  EXPECT_TRUE(report.at("models").at(1).at("summary").at("ms_per_slice").is_null());
  EXPECT_EQ(keys(teacher.at("summary").at("soft_reference")),
            (std::set<std::string>{"threshold_dice", "l1", "brier", "rater_ece"}));
  ASSERT_EQ(teacher.at("cases").size(), 2u) << "case b is outside the fold";
  const json& c = teacher.at("cases").at(1);
  EXPECT_EQ(c.at("id"), "c");
  EXPECT_EQ(keys(c), (std::set<std::string>{"id", "file_name", "slices", "dice", "slice_dice", "ece", "slice_ece",
                                            "classwise_ece", "ace", "mce", "band_ece", "nll", "brier", "hd95", "assd",
                                            "nsd", "soft_reference"}));
  EXPECT_DOUBLE_EQ(c.at("band_ece").get<double>(), 0.4);
  EXPECT_DOUBLE_EQ(c.at("soft_reference").at("rater_ece").get<double>(), 0.1);
  EXPECT_TRUE(c.at("dice").at("tumor").is_null()) << "NaN is written as null";
  EXPECT_TRUE(c.at("nsd").at("tumor").is_null());
  const json& paired = report.at("models").at(1).at("paired");
  EXPECT_EQ(paired.at("reference"), "teacher");
  EXPECT_EQ(keys(paired.at("dice").at("kidney")),
            (std::set<std::string>{"cases", "mean", "ci95", "p_value", "p_holm"}));
  EXPECT_TRUE(paired.at("dice").at("tumor").at("p_holm").is_null());
  // The renderer reads what the writer writes.
  EXPECT_NO_THROW(kdseg::eval::report::render_html(report));
  EXPECT_NO_THROW(kdseg::eval::report::render_per_case_csv(report));
}

TEST(ReportSchema, OptionalPartsOnlyWhereTheyApply) {
  E::EvaluationResults r = results(false, false);
  const json plain = E::report_json(r);
  EXPECT_EQ(plain.at("reference"), (json{{"label", "store"}, {"raters", 0}}));
  EXPECT_TRUE(plain.at("options").at("surface_tolerance_mm").is_null());
  EXPECT_FALSE(plain.contains("figures"));
  const json& summary = plain.at("models").at(0).at("summary");
  EXPECT_FALSE(summary.contains("surface"));
  EXPECT_FALSE(summary.contains("soft_reference"));
  EXPECT_FALSE(plain.at("models").at(0).at("cases").at(0).contains("hd95"));
  r.models[0].curves = {{"source", "metrics.jsonl"}};
  r.figures = std::vector<E::CaseFigure>{
      {"tumor", "worst", "c", 3, "figures/tumor-worst-c.png", {"reference", "teacher"}, {"CT"}, {{"teacher", kNaN}}}};
  const json more = E::report_json(r);
  EXPECT_EQ(more.at("models").at(0).at("curves").at("source"), "metrics.jsonl");
  ASSERT_EQ(more.at("figures").size(), 1u);
  EXPECT_EQ(keys(more.at("figures").at(0)),
            (std::set<std::string>{"region", "pick", "case", "slice", "file", "columns", "rows", "dice"}));
  EXPECT_TRUE(more.at("figures").at(0).at("dice").at("teacher").is_null());
}

}  // namespace

// Case ids of nested folders reach ~250 characters; their prediction files and figures must stay
// within NAME_MAX (255 bytes), stay apart from each other, and be found from report.json.
TEST(ReportFiles, LongCaseIdsMakeBoundedDistinctFileNames) {
  namespace K = kdseg::eval;
  const std::string stem(240, 'x');
  const std::string a = "raters/" + stem + "/case_a", b = "raters/" + stem + "/case_b";
  ASSERT_EQ(a.size(), 254u);
  for (const std::string& id : {a, b}) {
    for (const std::string& name : K::prediction_files(id)) EXPECT_LE(name.size(), 255u) << name;
    EXPECT_LE(K::safe_file_name(id).size(), K::kMaxFileStem);
    EXPECT_EQ(K::safe_file_name(id).substr(0, 20), "raters_xxxxxxxxxxxxx") << "a readable prefix";
    EXPECT_EQ(K::safe_file_name(id), K::safe_file_name(std::string(id))) << "deterministic";
  }
  EXPECT_NE(K::safe_file_name(a), K::safe_file_name(b)) << "ids that differ only at the end";
  EXPECT_EQ(K::safe_file_name("task01/seg.1"), "task01_seg.1") << "short ids keep their name";
  // report.json holds each case's id with its file name.
  E::EvaluationResults r = results(false, false);
  r.case_ids = {a, "b", b};
  const json report = E::report_json(r);
  const json& c = report.at("models").at(0).at("cases").at(1);
  EXPECT_EQ(c.at("id"), b);
  EXPECT_EQ(c.at("file_name"), K::safe_file_name(b));
}
