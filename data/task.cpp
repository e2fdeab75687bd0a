#include "data/task.h"

#include <torch/torch.h>

#include <algorithm>
#include <optional>
#include <set>
#include <sstream>
#include <string_view>

#include "core/error.h"
#include "core/parse.h"

namespace kdseg::data {
namespace {

// The stored label value of KiTS23's cysts.
constexpr size_t kKits23Cyst = 3;

// KiTS23's cysts take the organ's class, the tumour's, or ignore_index; other layouts have none.
void set_cyst_class(Task& task, Layout layout, const std::string& cysts) {
  if (layout != Layout::kKits23) return;
  KDSEG_CHECK(cysts == "organ" || cysts == "tumor" || cysts == "ignore",
              "cysts must be counted as organ, tumor or ignore, got '", cysts, "'");
  const int64_t tumour_class = task.class_of[static_cast<size_t>(tumour_label(layout))];
  const int64_t organ_class = task.class_of[static_cast<size_t>(organ_label(layout))];
  task.class_of[kKits23Cyst] = cysts == "tumor" ? tumour_class : cysts == "ignore" ? task.ignore_index : organ_class;
}

// "map:0:0,1:1,2:1,3:ignore": value:class pairs; values left out are ignored.
void set_map_classes(Task& task, Layout layout) {
  const std::string& name = task.name;
  const std::vector<int> values = label_values(layout);
  std::stringstream spec(task.spec.map);
  std::string pair;
  int64_t top = 0;
  while (std::getline(spec, pair, ',')) {
    const auto colon = pair.find(':');
    KDSEG_CHECK(colon != std::string::npos, "--task ", name, ": expected value:class pairs, got '", pair, "'");
    const std::string label_text = pair.substr(0, colon), target = pair.substr(colon + 1);
    const auto number = [&](const std::string& text, const char* what) {
      const std::optional<int64_t> parsed = parse_integer(text);
      KDSEG_CHECK(parsed && *parsed >= 0, "--task ", name, ": '", text, "' is not a ", what,
                  " (expected value:class pairs such as 0:0,1:1,2:ignore)");
      return *parsed;
    };
    const int64_t value = number(label_text, "label value");
    KDSEG_CHECK(std::find(values.begin(), values.end(), value) != values.end(), "--task ", name, ": label ", value,
                " does not occur in ", enum_name(layout), " (its labels: 0-", values.back(), ")");
    const int64_t cls = target == "ignore" ? task.ignore_index : number(target, "class");
    task.class_of[static_cast<size_t>(value)] = cls;
    if (cls != task.ignore_index) top = std::max(top, cls);
  }
  task.classes = top + 1;
  KDSEG_CHECK(task.classes >= 2, "--task ", name, ": a map needs at least two classes");
}

}  // namespace

at::Tensor Task::classes_of(const at::Tensor& labels) const {
  const at::Tensor table = torch::from_blob(const_cast<int64_t*>(class_of.data()), {256}, torch::kLong);
  return table.index({labels.to(torch::kLong)});
}

at::Tensor window_hu(const at::Tensor& hu, double low, double high) {
  return (hu.to(torch::kFloat).clamp(low, high) - low) * (2.0 / (high - low)) - 1.0;
}

at::Tensor Task::window(const at::Tensor& hu) const { return window_hu(hu, hu_low, hu_high); }

std::vector<uint8_t> Task::label_value_of_class() const {
  std::vector<uint8_t> out(static_cast<size_t>(classes), 0);
  for (int v = 255; v >= 0; --v) {
    const int64_t k = class_of[static_cast<size_t>(v)];
    if (k >= 0 && k < classes) out[static_cast<size_t>(k)] = static_cast<uint8_t>(v);
  }
  return out;
}

Task make_task(const TaskSpec& spec, Layout layout, const std::string& cysts) {
  Task task;
  task.spec = spec;
  task.name = task_name(spec);
  const std::string& name = task.name;
  task.class_of.fill(task.ignore_index);
  const int tumour = tumour_label(layout), organ = organ_label(layout);
  if (spec.kind == TaskKind::kTumour) {
    task.classes = 2;
    for (int v : label_values(layout)) task.class_of[static_cast<size_t>(v)] = v == tumour ? 1 : 0;
    set_cyst_class(task, layout, cysts);
  } else if (spec.kind == TaskKind::kOrganTumour) {
    KDSEG_CHECK(layout != Layout::kQubiq, "--task ", name, ": a qubiq store labels one structure; use --task tumor");
    task.classes = 3;
    for (int v : label_values(layout)) task.class_of[static_cast<size_t>(v)] = v == tumour ? 2 : v == organ ? 1 : 0;
    set_cyst_class(task, layout, cysts);
  } else {
    set_map_classes(task, layout);
  }
  const bool lits = layout == Layout::kLits;
  task.hu_low = lits ? -60.0 : -200.0;
  task.hu_high = lits ? 140.0 : 300.0;
  return task;
}

std::vector<DiceRegion> kits23_regions(const Task& task, Layout layout) {
  KDSEG_CHECK(layout == Layout::kKits23, "--regions kits23: the store's layout is ", enum_name(layout),
              "; KiTS23's regions need a kits23 store (labels kidney 1, tumour 2, cyst 3)");
  struct Hec {
    const char* name;
    std::vector<int> values;
    double tolerance_mm;
  };
  // kits23/configuration/labels.py: KITS_HEC_LABEL_MAPPING and HEC_SD_TOLERANCES_MM.
  const Hec hecs[] = {{"kidney_and_mass", {1, 2, 3}, 1.0330772532390826},
                      {"mass", {2, 3}, 1.1328796488598762},
                      {"tumor", {2}, 1.1498198361434828}};
  std::vector<DiceRegion> regions;
  for (const Hec& hec : hecs) {
    std::set<int64_t> in, out;
    for (int v = 0; v <= 3; ++v) {
      const int64_t c = task.class_of[static_cast<size_t>(v)];
      KDSEG_CHECK(c != task.ignore_index, "--regions kits23: task ", task.name, " ignores label value ", v,
                  "; KiTS23's regions count every voxel (use e.g. --task map:0:0,1:1,2:2,3:3)");
      (std::find(hec.values.begin(), hec.values.end(), v) != hec.values.end() ? in : out).insert(c);
    }
    for (int64_t c : in) {
      KDSEG_CHECK(out.count(c) == 0, "--regions kits23: task ", task.name, " puts label values inside and outside ",
                  hec.name, " into class ", c,
                  ", so the region cannot be measured (use e.g. --task map:0:0,1:1,2:2,3:3)");
    }
    regions.push_back({hec.name, std::vector<int64_t>(in.begin(), in.end()), hec.tolerance_mm});
  }
  return regions;
}

std::vector<DiceRegion> dice_regions(const Task& task, Layout layout) {
  const bool kits = layout != Layout::kLits;
  if (task.classes == 2) return {{layout == Layout::kQubiq ? "target" : "tumor", {1}}};
  if (task.classes == 3 && task.spec.kind == TaskKind::kOrganTumour) {
    std::vector<DiceRegion> regions = {{kits ? "kidney" : "liver", {1}}, {"tumor", {2}}};
    if (kits) regions.push_back({"kidney+tumor", {1, 2}});
    return regions;
  }
  std::vector<DiceRegion> regions;
  for (int64_t k = 1; k < task.classes; ++k) regions.push_back({"class " + std::to_string(k), {k}});
  return regions;
}

}  // namespace kdseg::data
