#include "eval/report.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <iterator>
#include <limits>
#include <map>
#include <sstream>
#include <string_view>

#include "core/error.h"
#include "core/file_util.h"
#include "core/random.h"

namespace kdseg::eval::report {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;
using Pointer = json::json_pointer;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr char kFormat[] = "kdseg report 1";
constexpr char kDash[] = "\xE2\x80\x93";  // "–" (UTF-8), shown for NaN and null
// The bootstrap draws from its own stream, independent of other uses of the same seed.
constexpr uint64_t kBootstrapStream = 0xB0075;
constexpr uint64_t kPermutationStream = 0x5161;
// Okabe-Ito colours (distinguishable with colour-vision deficiencies), without the reds, which
// the reliability diagrams use for the calibration gap.
constexpr const char* kPalette[] = {"#0072B2", "#E69F00", "#009E73", "#CC79A7",
                                    "#56B4E9", "#6E6E6E", "#000000", "#F0E442"};

// ---- statistics --------------------------------------------------------------------------------

std::vector<double> finite_values(const std::vector<double>& values) {
  std::vector<double> finite;
  std::copy_if(values.begin(), values.end(), std::back_inserter(finite),
               [](double v) { return std::isfinite(v); });
  return finite;
}

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

// ---- text --------------------------------------------------------------------------------------

// Fixed-point text that does not depend on the locale; "–" for NaN.
std::string fixed(double value, int decimals) {
  if (std::isnan(value)) return kDash;
  char buffer[64];
  const auto result = std::to_chars(buffer, buffer + sizeof buffer, value, std::chars_format::fixed, decimals);
  return std::string(buffer, result.ptr);
}

std::string escape_html(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string escape_csv(const std::string& field) {
  if (field.find_first_of(",\"\r\n") == std::string::npos) return field;
  std::string out = "\"";
  for (const char c : field) {
    if (c == '"') out += '"';  // a quote inside a quoted field is doubled
    out += c;
  }
  return out + "\"";
}

// Invalid UTF-8 (a file name, say) becomes U+FFFD instead of failing the whole report.
std::string dump(const json& value, int indent = -1) {
  return value.dump(indent, ' ', false, json::error_handler_t::replace);
}

// A value of the report as text for people: strings as they are, null as "–", others as JSON.
std::string display(const json& value) {
  if (value.is_string()) return value.get<std::string>();
  return value.is_null() ? kDash : dump(value);
}

// A number of the report; null (how NaN is stored) is NaN. Throws json::type_error otherwise.
double number(const json& value) { return value.is_null() ? kNaN : value.get<double>(); }

// ---- the schema --------------------------------------------------------------------------------

// Runs `render`, turning a mismatch with the schema into a kdseg::Error that says so.
template <typename Render>
std::string rendered(const json& report, Render&& render) {
  try {
    KDSEG_CHECK(report.is_object() && report.value("format", "") == kFormat,
                "report.json: \"format\" is ", report.is_object() ? dump(report.value("format", json())) : "missing",
                ", expected \"", kFormat, "\"");
    KDSEG_CHECK(!report.at("models").empty(), "report.json: no models to report");
    KDSEG_CHECK(!report.at("regions").empty(), "report.json: no regions to report");
    return render();
  } catch (const json::exception& e) {
    KDSEG_THROW("report.json does not follow the schema of \"", kFormat, "\" (eval/report.h): ", e.what());
  }
}

std::vector<std::string> regions_of(const json& report) {
  return report.at("regions").get<std::vector<std::string>>();
}

// A column of a table with one row per model: a number at `value` below the model's summary.
struct SummaryColumn {
  std::string group;  // the spanning header
  std::string title;
  Pointer value;
  bool higher_is_better;
  bool with_interval;  // a "ci95" beside the value
  int decimals = 4;
};

// table#comparison: per region Dice over cases, then calibration.
std::vector<SummaryColumn> comparison_columns(const std::vector<std::string>& regions) {
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
  columns.push_back({"Calibration", "NLL", Pointer("/nll"), false, false});
  columns.push_back({"Calibration", "Brier", Pointer("/brier"), false, false});
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

// table#surface: per region HD95 and ASSD in mm, NSD at the report's tolerance.
std::vector<SummaryColumn> surface_columns(const std::vector<std::string>& regions) {
  std::vector<SummaryColumn> columns;
  for (const std::string& region : regions) {
    const Pointer surface = Pointer("/surface") / region;
    const std::string group = region + " surface";
    columns.push_back({group, "HD95 (mm)", surface / "hd95" / "mean", false, true, 2});
    columns.push_back({group, "ASSD (mm)", surface / "assd" / "mean", false, true, 2});
    columns.push_back({group, "NSD", surface / "nsd" / "mean", true, true, 4});
  }
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
  }
  columns.push_back({"ece", "ECE", Pointer("/ece"), 4});
  columns.push_back({"classwise_ece", "classwise ECE", Pointer("/classwise_ece"), 4});
  columns.push_back({"nll", "NLL", Pointer("/nll"), 4});
  columns.push_back({"brier", "Brier", Pointer("/brier"), 4});
  return columns;
}

const char* color_of(size_t model_index) { return kPalette[model_index % std::size(kPalette)]; }

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

// ---- HTML: page frame --------------------------------------------------------------------------

constexpr char kStyle[] = R"css(
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --panel: #f6f8fa; --best: #dafbe1; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "Helvetica Neue", Arial, sans-serif; }
.wrap { max-width: 1280px; margin: 0 auto; padding: 20px 24px; }
header { background: var(--panel); border-bottom: 1px solid var(--line); }
h1 { font-size: 24px; font-weight: 600; margin: 4px 0 2px; }
.subtitle { color: var(--muted); margin: 0 0 14px; }
h2 { font-size: 19px; font-weight: 600; margin: 36px 0 6px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; font-weight: 600; margin: 20px 0 6px; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 2px 20px; margin: 0; font-size: 14px; }
dl.meta dt { color: var(--muted); }
dl.meta dd { margin: 0; overflow-wrap: anywhere; }
.mono, td.num, pre { font-size: 13px; font-variant-numeric: tabular-nums;
  font-family: ui-monospace, "SF Mono", Menlo, Consolas, "DejaVu Sans Mono", "Liberation Mono", monospace; }
.note { color: var(--muted); font-size: 13px; max-width: 90ch; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 14px; }
th, td { padding: 5px 8px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
thead th { background: var(--panel); font-weight: 600; font-size: 13px; white-space: nowrap; }
thead th.num { vertical-align: bottom; }
thead tr.group th { text-align: center; border-left: 1px solid var(--line); }
th.num, td.num { text-align: right; }
td.num { white-space: nowrap; }
td.num.first { border-left: 1px solid var(--line); }
#comparison th, #comparison td { padding-left: 7px; padding-right: 7px; }
tbody tr:hover { background: #f3f6fa; }
td.best { font-weight: 700; background: var(--best); }
.ci { display: block; font-size: 11px; color: var(--muted); font-weight: 400; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 50%; margin-right: 7px; }
td.model { font-weight: 600; min-width: 8em; max-width: 14em; }
.charts { display: flex; flex-wrap: wrap; gap: 28px; }
figure { margin: 0; }
figcaption { font-size: 14px; margin-bottom: 4px; }
figcaption .mono { color: var(--muted); margin-left: 8px; }
svg { display: block; }
svg text { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; font-size: 11px;
  fill: var(--muted); }
svg .frame { fill: none; stroke: #8c959f; }
svg .grid { stroke: #eaeef2; }
svg .diagonal { stroke: #57606a; stroke-dasharray: 4 3; }
svg .gap { fill: #d62728; fill-opacity: 0.25; stroke: #d62728; stroke-width: 0.8; }
svg .count { fill: #c8d1da; }
svg .spread { stroke: #c8d1da; stroke-width: 2; }
svg g.bin:hover rect, svg circle:hover { stroke: #1f2328; stroke-width: 1.5; }
svg#per-case-dice { width: 100%; height: auto; }
pre { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 12px; overflow-x: auto; }
)css";

// Nothing may be fetched: the page must work from a single file, offline.
constexpr char kContentSecurityPolicy[] =
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:";

// Sets html[data-error] on a script error, console.error or a load the policy blocked, so that a
// headless browser test sees it whatever the browser's log format.
constexpr char kErrorScript[] = R"js(
(function () {
  function record(message) { document.documentElement.dataset.error = String(message); }
  window.addEventListener('error', function (e) { record(e.message || 'error'); });
  window.addEventListener('unhandledrejection', function (e) { record(e.reason); });
  document.addEventListener('securitypolicyviolation', function (e) { record('blocked ' + e.blockedURI); });
  var consoleError = console.error;
  console.error = function () {
    record(Array.prototype.join.call(arguments, ' '));
    consoleError.apply(console, arguments);
  };
})();
)js";

// Sets body[data-rendered] to "ok" when the charts are in place, or says what is missing.
constexpr char kCheckScript[] = R"js(
(function () {
  var missing = [];
  if (!document.querySelector('table#comparison')) missing.push('table#comparison');
  var charts = document.querySelectorAll('svg.reliability');
  if (charts.length === 0) missing.push('svg.reliability');
  charts.forEach(function (svg) { if (svg.childElementCount === 0) missing.push('an empty svg.reliability'); });
  if (!document.querySelector('svg#per-case-dice')) missing.push('svg#per-case-dice');
  document.body.dataset.rendered = missing.length === 0 ? 'ok' : 'missing ' + missing.join(', ');
})();
)js";

std::string task_and_fold(const json& report) {
  return display(report.at("task").at("name")) + ", fold " + display(report.at("fold"));
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
      {"Fold", display(report.at("fold"))},
      {"Task", display(task.at("name")) + " (" + display(task.at("classes")) + " classes: " + classes + ")"},
      {"Created", display(report.at("created"))},
      {"Tool version", display(report.at("tool_version"))},
  };
  out << "<header><div class=\"wrap\">\n<h1>kdseg evaluation report</h1>\n"
      << "<p class=\"subtitle\">" << escape_html(task_and_fold(report))
      << " &middot; " << models << (models == 1 ? " model" : " models") << "</p>\n<dl class=\"meta\">\n";
  for (const auto& [label, value] : rows) out << "<dt>" << label << "</dt><dd>" << escape_html(value) << "</dd>\n";
  out << "</dl>\n</div></header>\n";
}

std::string model_label(const json& model, size_t index) {
  return std::string("<span class=\"swatch\" style=\"background:") + color_of(index) + "\"></span>" +
         escape_html(display(model.at("name")));
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
    for (const json& model : models) values.push_back(number(model.at("summary").at(column.value)));
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
          << signed_text(high) << "]</span><span class=\"ci\">p = "
          << fixed(number(d.at("p_value")), 4);
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
  write_summary_table(out, models, "comparison", comparison_columns(regions));
  out << "<p class=\"note\">Dice: mean over cases, and below it the 95% bootstrap interval of the mean (also "
      << "for ECE); global: all cases pooled; worst 5%: mean of the lowest 5% of cases. Highlighted: the best "
      << "value of each column (higher Dice, lower ECE, NLL and Brier).</p>\n";
  write_paired(out, report);
  write_summary_table(out, models, "slice-dice", slice_dice_columns(regions));
  out << "<p class=\"note\">Slice Dice: mean over cases of the mean Dice of their slices; a slice where "
      << "prediction and label are both empty counts as " << escape_html(display(report.at("empty_slice_dice")))
      << ".</p>\n";
  if (has_surface(report)) {
    write_summary_table(out, models, "surface", surface_columns(regions));
    out << "<p class=\"note\">Surface distances per case in 3-D, on the store's grid (its in-plane spacing scaled by "
        << "the resize), averaged over cases with 95% bootstrap intervals: HD95, the larger 95th percentile of the "
        << "two directed surface distances; ASSD, their mean; NSD, the fraction of both surfaces within "
        << escape_html(display(report.at("options").at("surface_tolerance_mm"))) << " mm of the other. A region "
        << "empty in both counts as HD95 = ASSD = 0 and NSD = 1; a region missed or predicted where there is "
        << "none counts as the grid's diagonal and NSD = 0.</p>\n";
  }
  out << "</section>\n";
}

// ---- HTML: charts ------------------------------------------------------------------------------

// Pixel coordinates for SVG attributes.
std::string px(double value) { return fixed(value, 1); }

void svg_line(std::ostream& out, const char* cls, double x1, double y1, double x2, double y2) {
  out << "<line class=\"" << cls << "\" x1=\"" << px(x1) << "\" y1=\"" << px(y1) << "\" x2=\"" << px(x2)
      << "\" y2=\"" << px(y2) << "\"/>\n";
}

void svg_text(std::ostream& out, double x, double y, const char* anchor, const std::string& text,
              const std::string& extra = "") {
  out << "<text x=\"" << px(x) << "\" y=\"" << px(y) << "\" text-anchor=\"" << anchor << "\"" << extra << ">"
      << escape_html(text) << "</text>\n";
}

// Horizontal grid lines and labels of a [0, 1] value axis from y = top (1) to top + height (0).
void svg_value_axis(std::ostream& out, double left, double right, double top, double height, int steps,
                    int decimals) {
  for (int i = 0; i <= steps; ++i) {
    const double value = static_cast<double>(i) / steps;
    const double y = top + height * (1 - value);
    if (i > 0 && i < steps) svg_line(out, "grid", left, y, right, y);
    svg_text(out, left - 6, y + 4, "end", fixed(value, decimals));
  }
}

// The reliability diagram, in pixels: a square plot, then a strip with the count of each bin.
namespace reliability_layout {
constexpr double kLeft = 48, kTop = 10, kSize = 240, kStripTop = kTop + kSize + 22, kStripHeight = 24;
constexpr double kWidth = kLeft + kSize + 12, kHeight = kStripTop + kStripHeight + 26;
}  // namespace reliability_layout

// The bars of one confidence bin: accuracy in the model's colour, the gap to the bin's mean
// confidence in red, the count (log scale) in a strip below; the numbers in a tooltip.
void write_reliability_bin(std::ostream& out, int bin, int bins, double confidence, double accuracy,
                           double count, double total, double max_count, const char* color) {
  using namespace reliability_layout;
  const double width = kSize / bins;
  const double x = kLeft + bin * width + 1;
  const auto y_of = [&](double value) { return kTop + kSize * (1 - value); };
  out << "<g class=\"bin\"><title>confidence " << fixed(static_cast<double>(bin) / bins, 2) << kDash
      << fixed(static_cast<double>(bin + 1) / bins, 2) << ": accuracy " << fixed(accuracy, 4) << ", mean confidence "
      << fixed(confidence, 4) << ", count " << fixed(count, 0) << " (" << fixed(100 * count / total, 2)
      << "%)</title>\n";
  if (!std::isnan(accuracy)) {
    out << "<rect x=\"" << px(x) << "\" y=\"" << px(y_of(accuracy)) << "\" width=\"" << px(width - 2)
        << "\" height=\"" << px(kSize * accuracy) << "\" fill=\"" << color << "\"/>\n";
    if (!std::isnan(confidence)) {
      out << "<rect class=\"gap\" x=\"" << px(x) << "\" y=\"" << px(y_of(std::max(accuracy, confidence)))
          << "\" width=\"" << px(width - 2) << "\" height=\"" << px(kSize * std::abs(accuracy - confidence))
          << "\"/>\n";
    }
  }
  if (count > 0) {
    const double height = kStripHeight * std::log1p(count) / std::log1p(max_count);
    out << "<rect class=\"count\" x=\"" << px(x) << "\" y=\"" << px(kStripTop + kStripHeight - height)
        << "\" width=\"" << px(width - 2) << "\" height=\"" << px(height) << "\"/>\n";
  }
  out << "</g>\n";
}

void write_reliability(std::ostream& out, const json& model, size_t index) {
  using namespace reliability_layout;
  const json& reliability = model.at("reliability");
  const int bins = reliability.at("bins").get<int>();
  std::vector<double> confidence, accuracy, count;
  const std::pair<const char*, std::vector<double>*> arrays[] = {
      {"confidence", &confidence}, {"accuracy", &accuracy}, {"count", &count}};
  for (const auto& [key, values] : arrays) {
    const json& array = reliability.at(key);
    KDSEG_CHECK(bins > 0 && array.is_array() && array.size() == static_cast<size_t>(bins), "report.json: model ",
                display(model.at("name")), ": reliability.", key, " has ", array.size(), " entries, bins is ", bins);
    for (const json& value : array) values->push_back(number(value));
  }
  const std::vector<double> counts = finite_values(count);
  double total = 0;
  for (const double c : counts) total += c;
  const double max_count = counts.empty() ? 0 : *std::max_element(counts.begin(), counts.end());

  out << "<figure><figcaption>" << model_label(model, index) << "<span class=\"mono\">ECE "
      << fixed(number(model.at("summary").at("ece").at("mean")), 4) << "</span></figcaption>\n"
      << "<svg class=\"reliability\" viewBox=\"0 0 " << px(kWidth) << " " << px(kHeight) << "\" width=\""
      << px(kWidth) << "\" height=\"" << px(kHeight) << "\" role=\"img\" aria-label=\""
      << "Reliability diagram of " << escape_html(display(model.at("name"))) << "\">\n";
  svg_value_axis(out, kLeft, kLeft + kSize, kTop, kSize, 5, 1);
  for (int bin = 0; bin < bins; ++bin) {
    write_reliability_bin(out, bin, bins, confidence[bin], accuracy[bin], count[bin], total, max_count,
                          color_of(index));
  }
  svg_line(out, "diagonal", kLeft, kTop + kSize, kLeft + kSize, kTop);
  out << "<rect class=\"frame\" x=\"" << px(kLeft) << "\" y=\"" << px(kTop) << "\" width=\"" << px(kSize)
      << "\" height=\"" << px(kSize) << "\"/>\n";
  for (int i = 0; i <= 5; ++i) svg_text(out, kLeft + kSize * i / 5, kTop + kSize + 14, "middle", fixed(i / 5.0, 1));
  svg_text(out, kLeft - 6, kStripTop + kStripHeight - 4, "end", "log n");
  svg_text(out, kLeft + kSize / 2, kStripTop + kStripHeight + 18, "middle", "confidence");
  svg_text(out, 14, kTop + kSize / 2, "middle", "accuracy",
           " transform=\"rotate(-90 14 " + px(kTop + kSize / 2) + ")\"");
  out << "</svg></figure>\n";
}

void write_reliability_section(std::ostream& out, const json& report) {
  const json& models = report.at("models");
  out << "<section id=\"reliability\">\n<h2>Reliability</h2>\n<p class=\"note\">Accuracy per confidence bin "
      << "(bars), its gap to the bin's mean confidence (red) and the diagonal of perfect calibration (dashed); "
      << "below, the number in each bin on a log scale. Hover a bin for its numbers.</p>\n<div class=\"charts\">\n";
  for (size_t m = 0; m < models.size(); ++m) write_reliability(out, models[m], m);
  out << "</div>\n</section>\n";
}

// Case id -> Dice of `region`, per model.
std::vector<std::map<std::string, double>> dice_by_case(const json& models, const std::string& region) {
  std::vector<std::map<std::string, double>> result;
  for (const json& model : models) {
    auto& dice = result.emplace_back();
    for (const json& c : model.at("cases")) dice[c.at("id").get<std::string>()] = number(c.at("dice").at(region));
  }
  return result;
}

// The cases in plotting order: the first model's by ascending Dice (undefined last), then those
// only other models have, in their order.
std::vector<std::string> case_order(const json& models, const std::vector<std::map<std::string, double>>& dice) {
  std::vector<std::string> order;
  for (const json& c : models.at(0).at("cases")) order.push_back(c.at("id").get<std::string>());
  const auto& first = dice.at(0);
  std::stable_sort(order.begin(), order.end(), [&](const std::string& a, const std::string& b) {
    const double da = first.at(a), db = first.at(b);
    return std::isnan(db) ? !std::isnan(da) : da < db;
  });
  for (size_t m = 1; m < models.size(); ++m) {
    for (const json& c : models[m].at("cases")) {
      const std::string id = c.at("id").get<std::string>();
      if (!first.count(id) && std::find(order.begin(), order.end(), id) == order.end()) order.push_back(id);
    }
  }
  return order;
}

void write_legend(std::ostream& out, const json& models, double x, double y) {
  for (size_t m = 0; m < models.size(); ++m) {
    const std::string name = display(models[m].at("name"));
    out << "<circle cx=\"" << px(x) << "\" cy=\"" << px(y - 4) << "\" r=\"5\" fill=\"" << color_of(m) << "\"/>\n";
    svg_text(out, x + 9, y, "start", name, " style=\"fill:#1f2328;font-size:12px\"");
    x += 9 + 7.0 * static_cast<double>(name.size()) + 24;  // a rough text width: no layout engine here
  }
}

// The per-case plot, in pixels; the height below the plot depends on the case labels.
namespace per_case_layout {
constexpr double kWidth = 1000, kLeft = 52, kRight = 16, kTop = 34, kHeight = 240;
constexpr double y_of(double dice) { return kTop + kHeight * (1 - dice); }
}  // namespace per_case_layout

// The dots of one case, one per model with a value, over a grey line that spans them.
void write_case_dots(std::ostream& out, const json& models, const std::string& id, const std::vector<double>& dice,
                     double x, double radius) {
  using per_case_layout::y_of;
  const std::vector<double> finite = finite_values(dice);
  if (finite.size() > 1) {
    const auto [low, high] = std::minmax_element(finite.begin(), finite.end());
    svg_line(out, "spread", x, y_of(*low), x, y_of(*high));
  }
  for (size_t m = 0; m < dice.size(); ++m) {
    if (std::isnan(dice[m])) continue;
    out << "<circle cx=\"" << px(x) << "\" cy=\"" << px(y_of(dice[m])) << "\" r=\"" << px(radius) << "\" fill=\""
        << color_of(m) << "\" fill-opacity=\"0.85\"><title>" << escape_html(id) << ", "
        << escape_html(display(models[m].at("name"))) << ": " << fixed(dice[m], 4) << "</title></circle>\n";
  }
}

void write_per_case_plot(std::ostream& out, const json& report) {
  using namespace per_case_layout;
  const json& models = report.at("models");
  // The headline region: the tumour when the task has one.
  const std::vector<std::string> regions = regions_of(report);
  const auto tumour = std::find(regions.begin(), regions.end(), "tumor");
  const std::string region = tumour != regions.end() ? *tumour : regions.at(0);
  const auto dice = dice_by_case(models, region);
  const std::vector<std::string> order = case_order(models, dice);
  const double step = (kWidth - kLeft - kRight) / static_cast<double>(std::max<size_t>(order.size(), 1));
  // Narrower than this, the case labels would overlap; the tooltips still name the cases.
  const bool labelled = step >= 11;
  size_t longest = 0;
  for (const std::string& id : order) longest = std::max(longest, id.size());
  // A label rotated by 60 degrees reaches about 5.5 pixels down per character.
  const double below = labelled ? 16 + 5.5 * static_cast<double>(std::min<size_t>(longest, 24)) : 8;

  out << "<section id=\"per-case-plot\">\n<h2>Dice per case: " << escape_html(region) << "</h2>\n"
      << "<svg id=\"per-case-dice\" viewBox=\"0 0 " << px(kWidth) << " " << px(kTop + kHeight + below)
      << "\" role=\"img\" aria-label=\"" << escape_html(region) << " Dice per case and model\">\n";
  svg_value_axis(out, kLeft, kWidth - kRight, kTop, kHeight, 4, 2);
  write_legend(out, models, kLeft + 4, 16);
  for (size_t i = 0; i < order.size(); ++i) {
    const double x = kLeft + (static_cast<double>(i) + 0.5) * step;
    std::vector<double> values;
    for (const auto& by_case : dice) {
      const auto found = by_case.find(order[i]);
      values.push_back(found == by_case.end() ? kNaN : found->second);
    }
    write_case_dots(out, models, order[i], values, x, std::clamp(step * 0.3, 2.0, 4.5));
    if (labelled) {
      const double y = kTop + kHeight + 12;
      svg_text(out, x + 3, y, "end", order[i], " transform=\"rotate(-60 " + px(x + 3) + " " + px(y) + ")\"");
    }
  }
  out << "<rect class=\"frame\" x=\"" << px(kLeft) << "\" y=\"" << px(kTop) << "\" width=\""
      << px(kWidth - kLeft - kRight) << "\" height=\"" << px(kHeight) << "\"/>\n";
  svg_text(out, 14, kTop + kHeight / 2, "middle", region + " Dice",
           " transform=\"rotate(-90 14 " + px(kTop + kHeight / 2) + ")\"");
  out << "</svg>\n<p class=\"note\">" << order.size() << " cases, sorted by the Dice of "
      << escape_html(display(models.at(0).at("name")))
      << "; a grey line spans the models' values for a case. Hover a dot for its case.</p>\n</section>\n";
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

std::string html_page(const json& report) {
  std::ostringstream out;
  out << "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      << "<meta http-equiv=\"Content-Security-Policy\" content=\"" << kContentSecurityPolicy << "\">\n"
      << "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
      << "<title>kdseg report: " << escape_html(task_and_fold(report)) << "</title>\n"
      << "<style>" << kStyle << "</style>\n<script>" << kErrorScript << "</script>\n</head>\n<body>\n";
  write_header(out, report);
  out << "<main class=\"wrap\">\n";
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
  std::vector<double> out(p_values.size(), kNaN);
  const auto m = static_cast<double>(order.size());
  double running = 0;
  for (size_t k = 0; k < order.size(); ++k) {
    running = std::max(running, std::min(1.0, (m - static_cast<double>(k)) * p_values[order[k]]));
    out[order[k]] = running;
  }
  return out;
}

PairedDifference paired_difference(const std::vector<double>& a, const std::vector<double>& b, int resamples,
                                   double level, uint64_t seed, int permutations) {
  KDSEG_CHECK(a.size() == b.size(), "paired_difference: ", a.size(), " and ", b.size(), " values are not pairs");
  KDSEG_CHECK(permutations >= 1, "paired_difference: permutations must be at least 1, got ", permutations);
  std::vector<double> d;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isfinite(a[i]) && std::isfinite(b[i])) d.push_back(a[i] - b[i]);
  }
  if (d.empty()) return {0, kNaN, {kNaN, kNaN}, kNaN};
  PairedDifference out;
  out.cases = static_cast<int64_t>(d.size());
  out.mean = mean_of(d.data(), d.data() + d.size());
  out.ci95 = bootstrap_ci(d, resamples, level, seed);
  // Sign patterns whose |sum| reaches the observed one (with a relative slack for rounding).
  double observed = 0, scale = 0;
  for (double v : d) {
    observed += v;
    scale += std::abs(v);
  }
  const double threshold = std::abs(observed) - 1e-12 * scale;
  const auto at_least_as_extreme = [&](auto sign_of) {
    double sum = 0;
    for (size_t i = 0; i < d.size(); ++i) sum += sign_of(i) ? d[i] : -d[i];
    return std::abs(sum) >= threshold;
  };
  if (d.size() <= 20) {
    const uint64_t patterns = uint64_t{1} << d.size();
    uint64_t extreme = 0;
    for (uint64_t mask = 0; mask < patterns; ++mask) {
      extreme += at_least_as_extreme([mask](size_t i) { return ((mask >> i) & 1U) == 0; });
    }
    out.p_value = static_cast<double>(extreme) / static_cast<double>(patterns);
  } else {
    Rng rng(derive_seed(seed, {kPermutationStream}));
    int64_t extreme = 0;
    for (int k = 0; k < permutations; ++k) extreme += at_least_as_extreme([&rng](size_t) { return rng.bernoulli(0.5); });
    out.p_value = static_cast<double>(extreme + 1) / static_cast<double>(permutations + 1);
  }
  return out;
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

std::string render_html(const nlohmann::json& report) {
  return rendered(report, [&] { return html_page(report); });
}

std::string render_per_case_csv(const nlohmann::json& report) {
  return rendered(report, [&] { return csv_table(report); });
}

void write_report(const std::string& folder, const nlohmann::json& report) {
  // Render everything first: a report that does not follow the schema leaves no file behind.
  const std::string csv = render_per_case_csv(report);
  const std::string html = render_html(report);
  const std::string text = dump(report, 2) + "\n";
  std::error_code error;
  fs::create_directories(folder, error);
  KDSEG_CHECK(!error, folder, ": cannot create the report folder: ", error.message());
  const fs::path base(folder);
  write_file_atomic((base / "report.json").string(), text);
  write_file_atomic((base / "per_case.csv").string(), csv);
  write_file_atomic((base / "report.html").string(), html);
}

}  // namespace kdseg::eval::report
