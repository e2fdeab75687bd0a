#include "eval/report_figures.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <ostream>
#include <vector>

#include "core/file_util.h"
#include "eval/png.h"
#include "eval/report_text.h"

namespace kdseg::eval::report::detail {
namespace {
using json = nlohmann::json;
namespace fs = std::filesystem;

// A figure's PNG as a data: URI, or empty when the file is not there.
std::string data_uri(const std::string& folder, const std::string& file) {
  std::error_code ec;
  const fs::path path = fs::path(folder) / file;
  if (folder.empty() || !fs::is_regular_file(path, ec)) return {};
  return "data:image/png;base64," + base64(read_file(path.string()));
}

// The curve charts, in pixels.
constexpr double kWidth = 330, kHeight = 210, kLeft = 56, kRight = 12, kTop = 12, kBottom = 34;

struct Series {
  size_t model;
  std::vector<double> x, y;
};

// One chart: every model's series on shared axes (x: steps from 0; y: from 0, or from the lowest
// value when `from_zero` is false, to the highest).
void write_chart(std::ostream& out, const std::string& id, const std::string& title, const std::vector<Series>& all,
                 const json& models, bool from_zero) {
  double x_max = 1, y_low = from_zero ? 0 : INFINITY, y_high = -INFINITY;
  for (const Series& s : all) {
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (std::isnan(s.y[i])) continue;
      x_max = std::max(x_max, s.x[i]);
      y_low = std::min(y_low, s.y[i]);
      y_high = std::max(y_high, s.y[i]);
    }
  }
  if (!std::isfinite(y_low) || !std::isfinite(y_high)) y_low = 0, y_high = 1;
  if (y_high <= y_low) y_high = y_low + 1;
  const double w = kWidth - kLeft - kRight, h = kHeight - kTop - kBottom;
  const auto x_of = [&](double x) { return kLeft + w * x / x_max; };
  const auto y_of = [&](double y) { return kTop + h * (1 - (y - y_low) / (y_high - y_low)); };
  out << "<figure><figcaption>" << escape_html(title) << "</figcaption>\n<svg class=\"curve\" id=\"" << id
      << "\" viewBox=\"0 0 " << px(kWidth) << " " << px(kHeight) << "\" width=\"" << px(kWidth) << "\" height=\""
      << px(kHeight) << "\" role=\"img\" aria-label=\"" << escape_html(title) << " per step and model\">\n";
  for (int i = 0; i <= 4; ++i) {
    const double value = y_low + (y_high - y_low) * i / 4, y = y_of(value);
    svg_line(out, "grid", kLeft, y, kLeft + w, y);
    svg_text(out, kLeft - 5, y + 4, "end", y_high - y_low < 0.01 ? fixed(value * 1e4, 2) + "e-4" : fixed(value, 3));
  }
  for (const Series& s : all) {
    std::string d;
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (std::isnan(s.y[i])) continue;
      d += (d.empty() ? "M" : " L") + px(x_of(s.x[i])) + " " + px(y_of(s.y[i]));
    }
    if (d.find('L') == std::string::npos && !d.empty()) d += " l0.01 0";  // a single point still shows (round cap)
    out << "<path class=\"curve\" data-model=\"" << escape_html(display(models.at(s.model).at("name")))
        << "\" stroke=\"" << color_of(s.model) << "\" d=\"" << d << "\"><title>"
        << escape_html(display(models.at(s.model).at("name"))) << "</title></path>\n";
  }
  out << "<rect class=\"frame\" x=\"" << px(kLeft) << "\" y=\"" << px(kTop) << "\" width=\"" << px(w) << "\" height=\""
      << px(h) << "\"/>\n";
  svg_text(out, kLeft, kHeight - 10, "start", "0");
  svg_text(out, kLeft + w, kHeight - 10, "end", fixed(x_max, 0));
  svg_text(out, kLeft + w / 2, kHeight - 10, "middle", "step");
  out << "</svg></figure>\n";
}

std::vector<double> numbers(const json& array) {
  std::vector<double> out;
  for (const json& v : array) out.push_back(number(v));
  return out;
}

}  // namespace

void write_figures_section(std::ostream& out, const json& report, const std::string& folder) {
  if (!report.contains("figures") || report.at("figures").empty()) return;
  out << "<section id=\"figures\">\n<h2>Cases</h2>\n<p class=\"note\">For each region the worst, median and best "
      << "case by the first model's Dice, at the evaluated slice where the reference is largest, at its true aspect "
      << "(anterior up, the patient's right on the left). Columns: the reference (white contour; below it the "
      << "raters' mean where the store keeps raters), then each model: its contour in its colour over the "
      << "reference's, its foreground probability (dark blue 0, yellow 1) and its normalised entropy (0 certain, "
      << "1 uniform). The PNGs are in the report's figures/ folder.</p>\n";
  for (const json& figure : report.at("figures")) {
    const std::string file = figure.at("file").get<std::string>();
    const std::string uri = data_uri(folder, file);
    std::string columns;
    for (const json& c : figure.at("columns")) columns += (columns.empty() ? "" : " | ") + display(c);
    std::string dice;
    for (const auto& [name, value] : figure.at("dice").items()) {
      dice += (dice.empty() ? "" : ", ") + name + " " + fixed(number(value), 3);
    }
    out << "<figure class=\"case-figure\"><figcaption>" << escape_html(display(figure.at("region"))) << ", "
        << escape_html(display(figure.at("pick"))) << " case <span class=\"mono\">"
        << escape_html(display(figure.at("case"))) << "</span>, slice " << escape_html(display(figure.at("slice")))
        << " &middot; Dice " << escape_html(dice) << "<br><span class=\"note\">" << escape_html(columns)
        << "</span></figcaption>\n";
    if (uri.empty()) {
      out << "<p class=\"note\">" << escape_html(file) << " is missing</p>";
    } else {
      out << "<img src=\"" << uri << "\" alt=\"" << escape_html(file) << "\">";
    }
    out << "</figure>\n";
  }
  out << "</section>\n";
}

void write_curves_section(std::ostream& out, const json& report) {
  const json& models = report.at("models");
  struct Quantity {
    const char* id;
    const char* title;
    const char* steps;  // JSON pointers below "curves"
    const char* values;
    bool from_zero;
  };
  const Quantity quantities[] = {
      {"curve-loss", "training loss", "/steps", "/loss", true},
      {"curve-lr", "learning rate (encoder)", "/steps", "/lr", true},
      {"curve-dice", "validation Dice (mean over cases)", "/validation/steps", "/validation/dice", true},
      {"curve-ece", "validation ECE", "/validation/steps", "/validation/ece", true}};
  size_t with_curves = 0;
  for (const json& model : models) with_curves += model.contains("curves") && !model.at("curves").is_null();
  if (with_curves == 0) return;
  out << "<section id=\"curves\" data-models=\"" << with_curves << "\">\n<h2>Training</h2>\n<p class=\"note\">"
      << "From each kdseg checkpoint's metrics.jsonl (a resumed run as one curve); validation on the run's own "
      << "--fold.</p>\n<div class=\"charts\">\n";
  for (const Quantity& q : quantities) {
    std::vector<Series> all;
    for (size_t m = 0; m < models.size(); ++m) {
      if (!models[m].contains("curves") || models[m].at("curves").is_null()) continue;
      const json& curves = models[m].at("curves");
      all.push_back(
          {m, numbers(curves.at(json::json_pointer(q.steps))), numbers(curves.at(json::json_pointer(q.values)))});
    }
    // A quantity no run logged (no validation, say) gets no chart.
    const bool any = std::any_of(all.begin(), all.end(), [](const Series& s) { return !s.x.empty(); });
    if (any) write_chart(out, q.id, q.title, all, models, q.from_zero);
  }
  out << "</div>\n</section>\n";
}

}  // namespace kdseg::eval::report::detail
