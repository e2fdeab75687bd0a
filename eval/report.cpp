#include "eval/report.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/file_util.h"
#include "eval/report_assets.h"
#include "eval/report_charts.h"
#include "eval/report_figures.h"
#include "eval/report_files.h"
#include "eval/report_text.h"
#include "eval/statistics.h"

namespace kdseg::eval::report {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;
using Pointer = json::json_pointer;
using namespace detail;  // the renderer's text helpers, assets and charts

// ---- the schema --------------------------------------------------------------------------------

// Runs `render`, turning a mismatch with the schema into a kdseg::Error that says so.
template <typename Render>
std::string rendered(const json& report, Render&& render) {
  try {
    KDSEG_CHECK(report.is_object() && report.value("format", "") == kFormat, "report.json: \"format\" is ",
                report.is_object() ? dump(report.value("format", json())) : "missing", ", expected \"", kFormat, "\"");
    KDSEG_CHECK(!report.at("models").empty(), "report.json: no models to report");
    KDSEG_CHECK(!report.at("regions").empty(), "report.json: no regions to report");
    return render();
  } catch (const json::exception& e) {
    KDSEG_THROW("report.json does not follow the schema of \"", kFormat, "\" (eval/report.h): ", e.what());
  }
}

// A column of a table with one row per model: a number at `value` below the model's summary.
struct SummaryColumn {
  std::string group;  // the spanning header
  std::string title;
  Pointer value;
  bool higher_is_better;
  bool with_interval;  // a "ci95" beside the value
  int decimals = 4;
  double scale = 1;  // the value shown is the stored one times this (parameters in millions)
};

// Whether the models carry ACE, MCE and the band ECE (reports written before them do not).
bool has_calibration_extras(const json& report) { return report.at("models").at(0).at("summary").contains("ace"); }

// Whether the models carry their parameters and time per slice (reports written before them do not).
bool has_cost(const json& report) { return report.at("models").at(0).at("summary").contains("ms_per_slice"); }

// table#comparison: per region Dice over cases, then calibration, then the cost: parameters and
// milliseconds per slice.
std::vector<SummaryColumn> comparison_columns(const std::vector<std::string>& regions, bool extras, bool cost) {
  std::vector<SummaryColumn> columns;
  for (const std::string& region : regions) {
    const Pointer dice = Pointer("/dice") / region;
    const std::string group = region + " Dice";
    columns.push_back({group, "mean", dice / "mean", true, true});
    columns.push_back({group, "global", dice / "global", true, false});
    columns.push_back({group, "worst 5%", dice / "worst5", true, false});
  }
  columns.push_back({"Calibration", "ECE", Pointer("/ece/mean"), false, true});
  columns.push_back({"Calibration", "classwise ECE", Pointer("/classwise_ece"), false, false});
  if (extras) {
    columns.push_back({"Calibration", "band ECE", Pointer("/band_ece/mean"), false, false});
    columns.push_back({"Calibration", "ACE", Pointer("/ace"), false, false});
    columns.push_back({"Calibration", "MCE", Pointer("/mce"), false, false});
  }
  columns.push_back({"Calibration", "NLL", Pointer("/nll"), false, false});
  columns.push_back({"Calibration", "Brier", Pointer("/brier"), false, false});
  if (cost) {
    columns.push_back({"Cost", "parameters (M)", Pointer("/parameters"), false, false, 2, 1e-6});
    columns.push_back({"Cost", "ms/slice", Pointer("/ms_per_slice"), false, false, 1});
  }
  return columns;
}

// table#slice-dice: a secondary view, kept out of table#comparison so that it fits a screen.
std::vector<SummaryColumn> slice_dice_columns(const std::vector<std::string>& regions) {
  std::vector<SummaryColumn> columns;
  for (const std::string& region : regions) {
    columns.push_back({"Slice Dice", region, Pointer("/slice_dice") / region, true, false});
  }
  return columns;
}

// Whether the models carry surface distances (evaluate --no-surface leaves them out).
bool has_surface(const json& report) { return report.at("models").at(0).at("summary").contains("surface"); }
bool has_surface_dice(const json& report) {
  return has_surface(report) && report.at("options").contains("surface_dice_tolerance_mm");
}

// table#surface: per region HD95 and ASSD in mm, NSD at the report's tolerance, and with
// --regions kits23 the surfel surface Dice at each region's own tolerance.
std::vector<SummaryColumn> surface_columns(const std::vector<std::string>& regions, bool surfels) {
  std::vector<SummaryColumn> columns;
  for (const std::string& region : regions) {
    const Pointer surface = Pointer("/surface") / region;
    const std::string group = region + " surface";
    columns.push_back({group, "HD95 (mm)", surface / "hd95" / "mean", false, true, 2});
    columns.push_back({group, "ASSD (mm)", surface / "assd" / "mean", false, true, 2});
    columns.push_back({group, "NSD", surface / "nsd" / "mean", true, true, 4});
    if (surfels) columns.push_back({group, "surface Dice (surfels)", surface / "surface_dice" / "mean", true, true, 4});
  }
  return columns;
}

// Whether the models carry metrics against the raters' mean (stores with raters).
bool has_soft_reference(const json& report) {
  return report.at("models").at(0).at("summary").contains("soft_reference");
}

// table#soft-reference: per region the threshold Dice, then the L1 and Brier distances.
std::vector<SummaryColumn> soft_reference_columns(const std::vector<std::string>& regions, bool extras) {
  std::vector<SummaryColumn> columns;
  const Pointer soft("/soft_reference");
  for (const std::string& region : regions) {
    columns.push_back({"Threshold Dice", region, soft / "threshold_dice" / region / "mean", true, true});
  }
  columns.push_back({"Distance to the rater mean", "L1", soft / "l1" / "mean", false, true});
  columns.push_back({"Distance to the rater mean", "Brier", soft / "brier" / "mean", false, true});
  if (extras) columns.push_back({"Distance to the rater mean", "rater ECE", soft / "rater_ece" / "mean", false, true});
  return columns;
}

// A number of a case, shared by per_case.csv and table#per-case (after the model and case id).
struct CaseColumn {
  std::string csv_name;
  std::string title;
  Pointer value;  // below the case
  int decimals;
};

std::vector<CaseColumn> case_columns(const json& report) {
  std::vector<CaseColumn> columns = {{"slices", "Slices", Pointer("/slices"), 0}};
  for (const std::string& region : regions_of(report)) {
    columns.push_back({region + "_dice", region + " Dice", Pointer("/dice") / region, 4});
    if (!has_surface(report)) continue;
    columns.push_back({region + "_hd95", region + " HD95", Pointer("/hd95") / region, 2});
    columns.push_back({region + "_assd", region + " ASSD", Pointer("/assd") / region, 2});
    columns.push_back({region + "_nsd", region + " NSD", Pointer("/nsd") / region, 4});
    if (has_surface_dice(report))
      columns.push_back(
          {region + "_surface_dice", region + " surface Dice (surfels)", Pointer("/surface_dice") / region, 4});
  }
  columns.push_back({"ece", "ECE", Pointer("/ece"), 4});
  columns.push_back({"classwise_ece", "classwise ECE", Pointer("/classwise_ece"), 4});
  if (has_calibration_extras(report)) {
    columns.push_back({"band_ece", "band ECE", Pointer("/band_ece"), 4});
    columns.push_back({"ace", "ACE", Pointer("/ace"), 4});
    columns.push_back({"mce", "MCE", Pointer("/mce"), 4});
  }
  columns.push_back({"nll", "NLL", Pointer("/nll"), 4});
  columns.push_back({"brier", "Brier", Pointer("/brier"), 4});
  if (!has_soft_reference(report)) return columns;
  for (const std::string& region : regions_of(report)) {
    columns.push_back({region + "_threshold_dice", region + " threshold Dice",
                       Pointer("/soft_reference/threshold_dice") / region, 4});
  }
  columns.push_back({"soft_l1", "soft L1", Pointer("/soft_reference/l1"), 4});
  columns.push_back({"soft_brier", "soft Brier", Pointer("/soft_reference/brier"), 4});
  if (has_calibration_extras(report))
    columns.push_back({"rater_ece", "rater ECE", Pointer("/soft_reference/rater_ece"), 4});
  return columns;
}

// For each model, whether its value is the best of the column (ties all marked). Nothing is
// marked when fewer than two models have a value, or when they all have the same one.
std::vector<bool> best_of(const std::vector<double>& values, bool higher_is_better) {
  const std::vector<double> finite = finite_values(values);
  std::vector<bool> best(values.size(), false);
  if (finite.size() < 2) return best;
  const auto [low, high] = std::minmax_element(finite.begin(), finite.end());
  if (*low == *high) return best;
  const double target = higher_is_better ? *high : *low;
  for (size_t i = 0; i < values.size(); ++i) best[i] = values[i] == target;
  return best;
}

// ---- HTML: header -------------------------------------------------------------------------------

std::string task_and_fold(const json& report) {
  return display(report.at("task").at("name")) + ", fold " + display(report.at("fold"));
}

// What Dice and calibration are measured against.
std::string reference(const json& report) {
  if (!report.contains("reference") || report.at("reference").value("raters", 0) == 0) return "the store's labels";
  return "the majority vote of " + display(report.at("reference").at("raters")) + " raters (soft metrics: their mean)";
}

// How much the raters of the evaluated cases agree with each other, or "" without raters.
std::string rater_agreement(const json& report) {
  if (!report.contains("rater_agreement")) return "";
  std::string text;
  for (const auto& [region, s] : report.at("rater_agreement").at("pairwise_dice").items()) {
    char line[160];
    std::snprintf(line, sizeof line, "%s%s %.3f [%.3f, %.3f]", text.empty() ? "" : ", ", region.c_str(),
                  s.at("median").get<double>(), s.at("p10").get<double>(), s.at("p90").get<double>());
    text += line;
  }
  return "pairwise Dice, median [10th, 90th percentile] over " + display(report.at("rater_agreement").at("cases")) +
         " cases: " + text;
}

// Which slices the metrics cover: whole volumes only with a store of every slice.
std::string store_slices(const json& report) {
  const json* options = report.contains("store_options") ? &report.at("store_options") : nullptr;
  if (options == nullptr || !options->is_object() || !options->contains("slices")) return "unknown";
  const std::string slices = display(options->at("slices"));
  return slices == "all" ? "all (whole volumes)" : "those with " + slices + " only (not whole volumes)";
}

void write_header(std::ostream& out, const json& report) {
  const json& task = report.at("task");
  const size_t models = report.at("models").size();
  std::string classes;
  for (const json& name : task.at("class_names")) classes += (classes.empty() ? "" : ", ") + display(name);
  const std::pair<const char*, std::string> rows[] = {
      {"Data", display(report.at("data"))},
      {"Store hash", display(report.at("store_hash"))},
      {"Slices", store_slices(report)},
      {"Reference", reference(report)},
      {"Raters' agreement", rater_agreement(report)},
      {"Fold", display(report.at("fold"))},
      {"Task", display(task.at("name")) + " (" + display(task.at("classes")) + " classes: " + classes + ")"},
      {"Created", display(report.at("created"))},
      {"Tool version", display(report.at("tool_version"))},
  };
  out << "<header><div class=\"wrap\">\n<h1>kdseg evaluation report</h1>\n"
      << "<p class=\"subtitle\">" << escape_html(task_and_fold(report)) << " &middot; " << models
      << (models == 1 ? " model" : " models") << "</p>\n<dl class=\"meta\">\n";
  for (const auto& [label, value] : rows) {
    if (!value.empty()) out << "<dt>" << label << "</dt><dd>" << escape_html(value) << "</dd>\n";
  }
  out << "</dl>\n</div></header>\n";
}

// ---- HTML: comparison table --------------------------------------------------------------------

void write_summary_head(std::ostream& out, const std::vector<SummaryColumn>& columns) {
  out << "<thead>\n<tr class=\"group\"><th rowspan=\"2\">Model</th>";
  for (size_t i = 0; i < columns.size();) {
    size_t span = 1;
    while (i + span < columns.size() && columns[i + span].group == columns[i].group) ++span;
    out << "<th colspan=\"" << span << "\">" << escape_html(columns[i].group) << "</th>";
    i += span;
  }
  out << "</tr>\n<tr>";
  for (const SummaryColumn& column : columns) out << "<th class=\"num\">" << escape_html(column.title) << "</th>";
  out << "</tr>\n</thead>\n";
}

// One row per model; the best value of each column has class "best".
void write_summary_table(std::ostream& out, const json& models, const char* id,
                         const std::vector<SummaryColumn>& columns) {
  // cells[c][m]: the HTML of column c for model m.
  std::vector<std::vector<std::string>> cells(columns.size());
  for (size_t c = 0; c < columns.size(); ++c) {
    const SummaryColumn& column = columns[c];
    std::vector<double> values;
    for (const json& model : models) values.push_back(number(model.at("summary").at(column.value)) * column.scale);
    const std::vector<bool> best = best_of(values, column.higher_is_better);
    for (size_t m = 0; m < models.size(); ++m) {
      const int d = column.decimals;
      std::string html = "<span class=\"v\">" + fixed(values[m], d) + "</span>";
      if (column.with_interval) {
        const json& ci = models[m].at("summary").at(column.value.parent_pointer() / "ci95");
        html += "<span class=\"ci\">" + fixed(number(ci.at(0)), d) + kDash + fixed(number(ci.at(1)), d) + "</span>";
      }
      const bool group_start = c == 0 || columns[c - 1].group != column.group;
      cells[c].push_back(std::string("<td class=\"num") + (group_start ? " first" : "") +
                         (best[m] ? " best\" title=\"best in this column\">" : "\">") + html + "</td>");
    }
  }
  out << "<div class=\"scroll\"><table id=\"" << id << "\">\n";
  write_summary_head(out, columns);
  out << "<tbody>\n";
  for (size_t m = 0; m < models.size(); ++m) {
    out << "<tr><td class=\"model\">" << model_label(models[m], m) << "</td>";
    for (const auto& column_cells : cells) out << column_cells[m];
    out << "</tr>\n";
  }
  out << "</tbody>\n</table></div>\n";
}

// Each model's per-case Dice minus the first model's: mean, interval, p-value, pairs.
void write_paired(std::ostream& out, const json& report) {
  const json& models = report.at("models");
  const std::vector<std::string> regions = regions_of(report);
  bool any = false;
  for (const json& model : models) any = any || model.contains("paired");
  if (!any) return;
  out << "<div class=\"scroll\"><table id=\"paired\">\n<thead><tr><th>Dice against "
      << escape_html(display(models.at(0).at("name"))) << "</th>";
  for (const auto& region : regions) out << "<th class=\"num first\">&Delta; " << escape_html(region) << "</th>";
  out << "</tr></thead>\n<tbody>\n";
  for (size_t m = 0; m < models.size(); ++m) {
    if (!models[m].contains("paired")) continue;
    out << "<tr><td class=\"model\">" << model_label(models[m], m) << "</td>";
    const json& dice = models[m].at("paired").at("dice");
    for (const auto& region : regions) {
      const json& d = dice.at(region);
      const double mean = number(d.at("mean")), low = number(d.at("ci95").at(0)), high = number(d.at("ci95").at(1));
      const auto signed_text = [](double v) { return (v >= 0 ? "+" : "") + fixed(v, 4); };  // "–" for NaN
      out << "<td class=\"num first\">" << signed_text(mean) << "<span class=\"ci\">[" << signed_text(low) << ", "
          << signed_text(high) << "]</span><span class=\"ci\">p = " << fixed(number(d.at("p_value")), 4);
      if (d.contains("p_holm")) out << " (Holm " << fixed(number(d.at("p_holm")), 4) << ")";
      out << ", n = " << d.at("cases").get<int64_t>() << "</span></td>";
    }
    out << "</tr>\n";
  }
  out << "</tbody>\n</table></div>\n<p class=\"note\">Paired over cases: mean of each case's Dice minus the "
      << "first model's, its 95% bootstrap interval (cases resampled with their pairs) and the two-sided p-value of a "
      << "sign-flip permutation test (exact up to 20 cases), with Holm's adjustment over every comparison of the "
      << "table when there are several; n: cases where both Dice are defined.</p>\n";
}

void write_comparison(std::ostream& out, const json& report) {
  const json& models = report.at("models");
  const std::vector<std::string> regions = regions_of(report);
  out << "<section id=\"summary\">\n<h2>Comparison</h2>\n";
  write_summary_table(out, models, "comparison",
                      comparison_columns(regions, has_calibration_extras(report), has_cost(report)));
  out << "<p class=\"note\">Dice: mean over cases, and below it the 95% bootstrap interval of the mean (also "
      << "for ECE); global: all cases pooled; worst 5%: mean of the lowest 5% of cases. Highlighted: the best "
      << "value of each column (higher Dice, lower ECE, NLL and Brier).</p>\n";
  write_paired(out, report);
  write_summary_table(out, models, "slice-dice", slice_dice_columns(regions));
  out << "<p class=\"note\">Slice Dice: mean over cases of the mean Dice of their slices; a slice where "
      << "prediction and label are both empty counts as " << escape_html(display(report.at("empty_slice_dice")))
      << ".</p>\n";
  if (has_soft_reference(report)) {
    write_summary_table(out, models, "soft-reference", soft_reference_columns(regions, has_calibration_extras(report)));
    out << "<p class=\"note\">Against the raters' mean q, per case, then the mean over cases with its 95% bootstrap "
        << "interval: threshold Dice, the mean over t = 0.1, 0.2, &hellip;, 0.9 of the Dice of {p &gt; t} and "
        << "{q &gt; t} (the QUBIQ metric; a threshold where both are empty counts 1); L1, the mean over voxels of "
        << "&sum;<sub>k</sub> |p<sub>k</sub> &minus; q<sub>k</sub>|; Brier, of &sum;<sub>k</sub> (p<sub>k</sub> "
        << "&minus; q<sub>k</sub>)<sup>2</sup>.</p>\n";
  }
  if (has_surface(report)) {
    write_summary_table(out, models, "surface", surface_columns(regions, has_surface_dice(report)));
    out << "<p class=\"note\">Surface distances per case in 3-D, on the store's grid (its in-plane spacing scaled by "
        << "the resize), averaged over cases with 95% bootstrap intervals: HD95, the larger 95th percentile of the "
        << "two directed surface distances; ASSD, their mean; NSD, the fraction of both surfaces within "
        << escape_html(display(report.at("options").at("surface_tolerance_mm"))) << " mm of the other. A region "
        << "empty in both counts as HD95 = ASSD = 0 and NSD = 1; a region missed or predicted where there is "
        << "none counts as the grid's diagonal and NSD = 0.";
    if (has_surface_dice(report)) {
      out << " Surface Dice (surfels): KiTS23's definition, the fraction of the two surfaces' area within each "
          << "region's tolerance of the other, measured on surface elements (docs/formats.md).";
    }
    out << "</p>\n";
  }
  out << "</section>\n";
}

// ---- HTML: tables of cases and configuration ----------------------------------------------------

void write_per_case_table(std::ostream& out, const json& report) {
  const json& models = report.at("models");
  const std::vector<CaseColumn> columns = case_columns(report);
  out << "<section id=\"cases\">\n<h2>Cases</h2>\n<div class=\"scroll\"><table id=\"per-case\">\n<thead><tr>"
      << "<th>Model</th><th>Case</th>";
  for (const CaseColumn& column : columns) out << "<th class=\"num\">" << escape_html(column.title) << "</th>";
  out << "</tr></thead>\n<tbody>\n";
  for (size_t m = 0; m < models.size(); ++m) {
    for (const json& c : models[m].at("cases")) {
      out << "<tr><td class=\"model\">" << model_label(models[m], m) << "</td><td class=\"mono\">"
          << escape_html(display(c.at("id"))) << "</td>";
      for (const CaseColumn& column : columns) {
        out << "<td class=\"num\">" << fixed(number(c.at(column.value)), column.decimals) << "</td>";
      }
      out << "</tr>\n";
    }
  }
  out << "</tbody>\n</table></div>\n</section>\n";
}

void write_configuration(std::ostream& out, const json& report) {
  const json& models = report.at("models");
  out << "<section id=\"configuration\">\n<h2>Configuration</h2>\n<h3>Models</h3>\n<div class=\"scroll\">"
      << "<table class=\"provenance\">\n<thead><tr><th>Model</th><th>File</th><th>File hash</th>"
      << "<th>Description</th><th class=\"num\">Cases</th><th class=\"num\">Slices</th></tr></thead>\n<tbody>\n";
  for (size_t m = 0; m < models.size(); ++m) {
    const json& model = models[m];
    out << "<tr><td class=\"model\">" << model_label(model, m) << "</td><td class=\"mono\">"
        << escape_html(display(model.at("file"))) << "</td><td class=\"mono\">"
        << escape_html(display(model.at("file_hash"))) << "</td><td>" << escape_html(display(model.at("description")))
        << "</td><td class=\"num\">" << model.at("cases").size() << "</td><td class=\"num\">"
        << escape_html(display(model.at("slices"))) << "</td></tr>\n";
  }
  out << "</tbody>\n</table></div>\n<h3>Options</h3>\n<pre>" << escape_html(dump(report.at("options"), 2))
      << "</pre>\n</section>\n";
}

std::string html_page(const json& report, const std::string& folder) {
  std::ostringstream out;
  out << "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      << "<meta http-equiv=\"Content-Security-Policy\" content=\"" << kContentSecurityPolicy << "\">\n"
      << "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
      << "<title>kdseg report: " << escape_html(task_and_fold(report)) << "</title>\n"
      << "<style>" << kStyle << "</style>\n<script>" << kErrorScript << "</script>\n</head>\n<body>\n";
  write_header(out, report);
  out << "<main class=\"wrap\">\n";
  write_figures_section(out, report, folder);
  write_curves_section(out, report);
  write_comparison(out, report);
  write_reliability_section(out, report);
  write_per_case_plot(out, report);
  write_per_case_table(out, report);
  write_configuration(out, report);
  out << "</main>\n<script>" << kCheckScript << "</script>\n</body>\n</html>\n";
  return out.str();
}

std::string csv_table(const json& report) {
  const std::vector<CaseColumn> columns = case_columns(report);
  std::string csv = "model,case";
  for (const CaseColumn& column : columns) csv += "," + escape_csv(column.csv_name);
  csv += "\n";
  for (const json& model : report.at("models")) {
    const std::string name = escape_csv(model.at("name").get<std::string>());
    for (const json& c : model.at("cases")) {
      csv += name + "," + escape_csv(c.at("id").get<std::string>());
      for (const CaseColumn& column : columns) {
        const json& value = c.at(column.value);
        // The number as report.json has it (shortest round trip), not re-rounded.
        csv += "," + (std::isnan(number(value)) ? std::string() : dump(value));
      }
      csv += "\n";
    }
  }
  return csv;
}

}  // namespace

std::string render_html(const nlohmann::json& report, const std::string& folder) {
  return rendered(report, [&] { return html_page(report, folder); });
}

std::string render_per_case_csv(const nlohmann::json& report) {
  return rendered(report, [&] { return csv_table(report); });
}

void write_report(const std::string& folder, const nlohmann::json& report) {
  // Render everything first: a report that does not follow the schema leaves no file behind.
  const std::string csv = render_per_case_csv(report);
  const std::string html = render_html(report, folder);
  const std::string text = dump(report, 2) + "\n";
  std::error_code error;
  fs::create_directories(folder, error);
  KDSEG_CHECK(!error, folder, ": cannot create the report folder: ", error.message());
  const fs::path base(folder);
  write_file_atomic((base / kReportJsonFile).string(), text);
  write_file_atomic((base / kPerCaseCsvFile).string(), csv);
  write_file_atomic((base / kReportHtmlFile).string(), html);
}

}  // namespace kdseg::eval::report
