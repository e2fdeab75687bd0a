#include "eval/report_charts.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "eval/report_text.h"
#include "eval/statistics.h"

namespace kdseg::eval::report::detail {
namespace {
using json = nlohmann::json;

// Horizontal grid lines and labels of a [0, 1] value axis from y = top (1) to top + height (0).
void svg_value_axis(std::ostream& out, double left, double right, double top, double height, int steps, int decimals) {
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
void write_reliability_bin(std::ostream& out, int bin, int bins, double confidence, double accuracy, double count,
                           double total, double max_count, const char* color) {
  using namespace reliability_layout;
  const double width = kSize / bins;
  const double x = kLeft + bin * width + 1;
  const auto y_of = [&](double value) { return kTop + kSize * (1 - value); };
  out << "<g class=\"bin\"><title>confidence " << fixed(static_cast<double>(bin) / bins, 2) << kDash
      << fixed(static_cast<double>(bin + 1) / bins, 2) << ": accuracy " << fixed(accuracy, 4) << ", mean confidence "
      << fixed(confidence, 4) << ", count " << fixed(count, 0) << " (" << fixed(100 * count / total, 2)
      << "%)</title>\n";
  if (!std::isnan(accuracy)) {
    out << "<rect x=\"" << px(x) << "\" y=\"" << px(y_of(accuracy)) << "\" width=\"" << px(width - 2) << "\" height=\""
        << px(kSize * accuracy) << "\" fill=\"" << color << "\"/>\n";
    if (!std::isnan(confidence)) {
      out << "<rect class=\"gap\" x=\"" << px(x) << "\" y=\"" << px(y_of(std::max(accuracy, confidence)))
          << "\" width=\"" << px(width - 2) << "\" height=\"" << px(kSize * std::abs(accuracy - confidence))
          << "\"/>\n";
    }
  }
  if (count > 0) {
    const double height = kStripHeight * std::log1p(count) / std::log1p(max_count);
    out << "<rect class=\"count\" x=\"" << px(x) << "\" y=\"" << px(kStripTop + kStripHeight - height) << "\" width=\""
        << px(width - 2) << "\" height=\"" << px(height) << "\"/>\n";
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
      << "<svg class=\"reliability\" viewBox=\"0 0 " << px(kWidth) << " " << px(kHeight) << "\" width=\"" << px(kWidth)
      << "\" height=\"" << px(kHeight) << "\" role=\"img\" aria-label=\""
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

}  // namespace

void write_reliability_section(std::ostream& out, const json& report) {
  const json& models = report.at("models");
  out << "<section id=\"reliability\">\n<h2>Reliability</h2>\n<p class=\"note\">Accuracy per confidence bin "
      << "(bars), its gap to the bin's mean confidence (red) and the diagonal of perfect calibration (dashed); "
      << "below, the number in each bin on a log scale. Hover a bin for its numbers.</p>\n<div class=\"charts\">\n";
  for (size_t m = 0; m < models.size(); ++m) write_reliability(out, models[m], m);
  out << "</div>\n</section>\n";
}

namespace {

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

}  // namespace

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

}  // namespace kdseg::eval::report::detail
