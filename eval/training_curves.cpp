#include "eval/training_curves.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <map>

#include "core/error.h"

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

json number_or_null(const json& line, const char* key) {
  return line.contains(key) && line.at(key).is_number() ? line.at(key) : json();
}

}  // namespace

json read_training_curves(const std::string& path, size_t max_points) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return json();
  std::ifstream in(path);
  KDSEG_CHECK(in.good(), path, ": cannot be read");
  std::map<int64_t, std::pair<json, json>> steps;       // step -> loss, lr
  std::map<int64_t, std::pair<json, json>> validation;  // step -> mean Dice, mean ECE
  for (std::string text; std::getline(in, text);) {
    const json line = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (!line.is_object()) continue;
    if (line.contains("validation") && line.at("validation").is_object()) {
      const json& v = line.at("validation");
      if (v.contains("step") && v.at("step").is_number_integer()) {
        validation[v.at("step").get<int64_t>()] = {number_or_null(v, "mean_dice"), number_or_null(v, "mean_ece")};
      }
    } else if (line.contains("step") && line.at("step").is_number_integer()) {
      steps[line.at("step").get<int64_t>()] = {number_or_null(line, "loss"), number_or_null(line, "lr")};
    }
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
