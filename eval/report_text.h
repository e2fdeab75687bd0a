// How the report renderer reads values of report.json (eval/report.h) and writes them as text for
// people: locale-independent fixed-point numbers, HTML and CSV escaping, JSON text that survives
// invalid UTF-8, and each model's colour and label. NaN is stored as null in report.json and
// shown as kDash. Internal to the renderer (eval/report*.cpp); the json accessors throw
// nlohmann::json::exception on a value of the wrong type, which the renderer reports as a schema
// mismatch.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstddef>
#include <iosfwd>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

namespace kdseg::eval::report::detail {

inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
inline constexpr char kDash[] = "\xE2\x80\x93";  // "–" (UTF-8), shown for NaN and null

// Fixed-point text that does not depend on the locale; kDash for NaN.
std::string fixed(double value, int decimals);

std::string escape_html(std::string_view text);

// The field as is, or quoted (quotes doubled) when it holds a comma, quote or line break.
std::string escape_csv(const std::string& field);

// Invalid UTF-8 (a file name, say) becomes U+FFFD instead of failing the whole report.
std::string dump(const nlohmann::json& value, int indent = -1);

// A value of the report as text for people: strings as they are, null as kDash, others as JSON.
std::string display(const nlohmann::json& value);

// A number of the report; null (how NaN is stored) is NaN. Throws json::type_error otherwise.
double number(const nlohmann::json& value);

// report["regions"].
std::vector<std::string> regions_of(const nlohmann::json& report);

// The colour of the model at `model_index` in every table and chart.
const char* color_of(size_t model_index);

// A swatch of the model's colour and its name, as HTML.
std::string model_label(const nlohmann::json& model, size_t index);

// SVG pieces of the charts: a pixel coordinate for an attribute, a line of a class, a text label
// (escaped; `extra` attributes appended as given).
std::string px(double value);
void svg_line(std::ostream& out, const char* cls, double x1, double y1, double x2, double y2);
void svg_text(std::ostream& out, double x, double y, const char* anchor, const std::string& text,
              const std::string& extra = "");

}  // namespace kdseg::eval::report::detail
