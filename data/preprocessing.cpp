#include "data/preprocessing.h"

#include <torch/nn/functional/upsampling.h>
#include <torch/torch.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "core/enum_names.h"
#include "core/error.h"
#include "data/prepared_store.h"
#include "data/task.h"

namespace kdseg::data {
namespace F = torch::nn::functional;

namespace {
constexpr const char* kOrientation = "closest canonical RAS, axial slices";
constexpr const char* kResize = "bilinear, align_corners false";
}  // namespace

at::Tensor Preprocessing::window(const at::Tensor& hu) const { return window_hu(hu, hu_low, hu_high); }

at::Tensor Preprocessing::resize(const at::Tensor& slice) const {
  const at::Tensor hu = slice.to(torch::kFloat);
  if (size == 0 || (hu.size(0) == size && hu.size(1) == size)) return hu;
  const auto bilinear =
      F::InterpolateFuncOptions().size(std::vector<int64_t>{size, size}).mode(torch::kBilinear).align_corners(false);
  return F::interpolate(hu.unsqueeze(0).unsqueeze(0), bilinear).squeeze(0).squeeze(0);
}

bool Preprocessing::same_input(const Preprocessing& other) const {
  const auto name = [](const std::optional<TaskSpec>& t) { return t ? task_name(*t) : std::string(); };
  return layout == other.layout && name(task) == name(other.task) && hu_low == other.hu_low &&
         hu_high == other.hu_high && size == other.size;
}

std::vector<uint8_t> Preprocessing::label_value_of_class(int64_t classes) const {
  if (layout && task) {
    const std::vector<uint8_t> values = make_task(*task, *layout).label_value_of_class();
    if (static_cast<int64_t>(values.size()) == classes) return values;
  }
  std::vector<uint8_t> values(static_cast<size_t>(classes));
  for (int64_t k = 0; k < classes; ++k) values[static_cast<size_t>(k)] = static_cast<uint8_t>(k);
  return values;
}

std::string Preprocessing::describe() const {
  char window[64];
  std::snprintf(window, sizeof window, "HU [%g, %g]", hu_low, hu_high);
  const std::string plane = size == 0 ? "native in-plane size" : std::to_string(size) + "x" + std::to_string(size);
  return "layout " + (layout ? std::string(enum_name(*layout)) : std::string("unknown")) +
         (task ? ", task " + task_name(*task) : std::string()) + ", " + window + ", " + plane;
}

Preprocessing preprocessing_of_store(const PreparedStore& store, const std::string& path, const TaskSpec& task) {
  Preprocessing p;
  const std::string source = path + ": layout";
  p.layout = parse_enum<Layout>(source, store.attribute(store::kLayoutAttribute));
  p.task = task;
  const Task t = make_task(task, *p.layout);
  p.hu_low = t.hu_low;
  p.hu_high = t.hu_high;
  const nlohmann::json options = nlohmann::json::parse(store.attribute(store::kOptionsAttribute), nullptr, false);
  KDSEG_CHECK(options.is_object(), path, ": its options attribute is not JSON");
  const nlohmann::json& size = options.value("size", nlohmann::json(store.height()));
  p.size = size.is_number_integer() ? size.get<int64_t>() : 0;  // "native"
  p.slices = options.value("slices", std::string());
  p.from = "store " + path;
  return p;
}

std::string preprocessing_json(const Preprocessing& p) {
  nlohmann::json j = {{"layout", p.layout ? nlohmann::json(enum_name(*p.layout)) : nlohmann::json(nullptr)},
                      {"task", p.task ? nlohmann::json(task_name(*p.task)) : nlohmann::json(nullptr)},
                      {"hu_window", {p.hu_low, p.hu_high}},
                      {"size", p.size},
                      {"slices", p.slices},
                      {"orientation", kOrientation},
                      {"resize", kResize}};
  return j.dump();
}

Preprocessing parse_preprocessing(const std::string& text, const std::string& source) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  KDSEG_CHECK(j.is_object(), source, ": its preprocessing record is not a JSON object");
  Preprocessing p;
  p.from = source;
  try {
    if (!j.at("layout").is_null())
      p.layout = parse_enum<Layout>(source + ": preprocessing layout", j.at("layout").get<std::string>());
    if (j.contains("task") && !j.at("task").is_null()) p.task = parse_task(j.at("task").get<std::string>());
    const auto window = j.at("hu_window").get<std::array<double, 2>>();
    p.hu_low = window[0];
    p.hu_high = window[1];
    p.size = j.at("size").get<int64_t>();
    p.slices = j.value("slices", std::string());
  } catch (const nlohmann::json::exception& e) {
    KDSEG_THROW(source, ": its preprocessing record is malformed (", e.what(), ")");
  } catch (const Error& e) {
    KDSEG_THROW(source, ": its preprocessing record is malformed (", e.message(), ")");
  }
  KDSEG_CHECK(std::isfinite(p.hu_low) && std::isfinite(p.hu_high) && p.hu_low < p.hu_high, source,
              ": its preprocessing record's HU window [", p.hu_low, ", ", p.hu_high, "] is empty");
  KDSEG_CHECK(p.size >= 0, source, ": its preprocessing record's size ", p.size, " is negative");
  return p;
}

}  // namespace kdseg::data
