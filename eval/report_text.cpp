#include "eval/report_text.h"

#include <nlohmann/json.hpp>

#include <charconv>
#include <cmath>
#include <iterator>
#include <ostream>

namespace kdseg::eval::report::detail {
namespace {

// Okabe-Ito colours (distinguishable with colour-vision deficiencies), without the reds, which
// the reliability diagrams use for the calibration gap.
// Okabe-Ito, without black: models are also drawn as contours over grey CT (eval/figures.h).
constexpr const char* kPalette[] = {"#0072B2", "#E69F00", "#009E73", "#CC79A7",
                                    "#56B4E9", "#D55E00", "#F0E442", "#6E6E6E"};

}  // namespace

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

std::string dump(const nlohmann::json& value, int indent) {
  return value.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string display(const nlohmann::json& value) {
  if (value.is_string()) return value.get<std::string>();
  return value.is_null() ? kDash : dump(value);
}

double number(const nlohmann::json& value) { return value.is_null() ? kNaN : value.get<double>(); }

std::vector<std::string> regions_of(const nlohmann::json& report) {
  return report.at("regions").get<std::vector<std::string>>();
}

const char* color_of(size_t model_index) { return kPalette[model_index % std::size(kPalette)]; }

std::string model_label(const nlohmann::json& model, size_t index) {
  return std::string("<span class=\"swatch\" style=\"background:") + color_of(index) + "\"></span>" +
         escape_html(display(model.at("name")));
}

std::string px(double value) { return fixed(value, 1); }

void svg_line(std::ostream& out, const char* cls, double x1, double y1, double x2, double y2) {
  out << "<line class=\"" << cls << "\" x1=\"" << px(x1) << "\" y1=\"" << px(y1) << "\" x2=\"" << px(x2) << "\" y2=\""
      << px(y2) << "\"/>\n";
}

void svg_text(std::ostream& out, double x, double y, const char* anchor, const std::string& text,
              const std::string& extra) {
  out << "<text x=\"" << px(x) << "\" y=\"" << px(y) << "\" text-anchor=\"" << anchor << "\"" << extra << ">"
      << escape_html(text) << "</text>\n";
}

}  // namespace kdseg::eval::report::detail
