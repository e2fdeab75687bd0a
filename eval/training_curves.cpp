#include "eval/training_curves.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <map>

#include "core/error.h"
#include "core/run_record.h"

namespace kdseg::eval {
namespace {
using nlohmann::json;

// Every `stride`-th of `points` and the last, so that at most `max_points` remain.
template <typename Value>
std::vector<std::pair<int64_t, Value>> thinned(const std::map<int64_t, Value>& points, size_t max_points) {
  std::vector<std::pair<int64_t, Value>> all(points.begin(), points.end()), out;
  const size_t stride = std::max<size_t>(1, (all.size() + max_points - 1) / std::max<size_t>(1, max_points));
  for (size_t i = 0; i < all.size(); i += stride) out.push_back(all[i]);
  if (!all.empty() && out.back().first != all.back().first) out.push_back(all.back());
  return out;
}

}  // namespace

json read_training_curves(const std::string& path, size_t max_points) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return json();
  std::ifstream in(path);
  KDSEG_CHECK(in.good(), path, ": cannot be read");
  std::map<int64_t, std::pair<double, double>> steps;       // step -> loss, lr (NaN: not finite)
  std::map<int64_t, std::pair<double, double>> validation;  // step -> mean Dice, mean ECE
  int64_t number = 0;
  for (std::string text; std::getline(in, text);) {
    const MetricsLine line = parse_metrics_line(text, path, ++number);
    if (line.validation) validation[line.validation->step] = {line.validation->mean_dice, line.validation->mean_ece};
    if (line.step) steps[line.step->step] = {line.step->loss, line.step->lr};
  }
  json curves = {{"source", std::filesystem::absolute(path).string()}};
  json step = json::array(), loss = json::array(), lr = json::array();
  for (const auto& [s, values] : thinned(steps, max_points)) {
    step.push_back(s);
    loss.push_back(values.first);
    lr.push_back(values.second);
  }
  json vstep = json::array(), dice = json::array(), ece = json::array();
  for (const auto& [s, values] : thinned(validation, max_points)) {
    vstep.push_back(s);
    dice.push_back(values.first);
    ece.push_back(values.second);
  }
  curves["steps"] = step;
  curves["loss"] = loss;
  curves["lr"] = lr;
  curves["validation"] = {{"steps", vstep}, {"dice", dice}, {"ece", ece}};
  return curves;
}

}  // namespace kdseg::eval
