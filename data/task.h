// The segmentation task: which stored label values (0-255) become which training classes, and
// the HU window that maps CT values to [-1, 1]. Made once from the task (--task) and the store's
// layout by the trainer, the evaluator and the teacher's precompute; read by the batch loader.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "core/metrics.h"
#include "core/task_spec.h"
#include "data/layout.h"

namespace kdseg::data {

// The task's kind and spec belong to the run record (core/task_spec.h).
using kdseg::parse_task;
using kdseg::task_name;
using kdseg::TaskKind;
using kdseg::TaskSpec;

// Maps stored label values (0-255) to classes, and HU to [-1, 1].
struct Task {
  TaskSpec spec;
  std::string name;  // task_name(spec)
  int64_t classes = 2;
  std::array<int64_t, 256> class_of{};  // stored label value -> class, or ignore_index
  int64_t ignore_index = 255;
  double hu_low = -60, hu_high = 140;

  // labels [*] uint8 -> int64 classes; images [*] HU -> clamp to the window, map to [-1, 1].
  at::Tensor classes_of(const at::Tensor& labels) const;
  at::Tensor window(const at::Tensor& hu) const;
  // The stored label value written for each class in predicted label maps: the smallest value
  // mapped to it.
  std::vector<uint8_t> label_value_of_class() const;
};

// `hu` [*] (HU, any real dtype) clamped to [low, high] and mapped linearly to [-1, 1], float32:
// the network's input. Task::window and Preprocessing::window are this with their window.
at::Tensor window_hu(const at::Tensor& hu, double low, double high);

// The task of `spec` on stores of `layout`. KiTS23's cysts count as `cysts`: "organ", "tumor" or
// "ignore" (a map names their class itself). The HU window is the layout's: LiTS [-60, 140], KiTS
// and QUBIQ [-200, 300].
Task make_task(const TaskSpec& spec, Layout layout, const std::string& cysts = "organ");

// The Dice regions reported for a task: "tumor" alone for two classes ("target" for QUBIQ); for organ-tumor the organ
// ("liver" or "kidney") and "tumor", plus "kidney+tumor" (classes 1 and 2) for KiTS; otherwise
// one region per foreground class, named "class <k>".
std::vector<DiceRegion> dice_regions(const Task& task, Layout layout);

// Which regions evaluate reports: the task's (dice_regions), or KiTS23's official HEC regions.
enum class RegionSet { kTask, kKits23 };
// --regions: parse_enum<data::RegionSet>, enum_name.
inline constexpr EnumName<RegionSet> kRegionSetNames[] = {
    {RegionSet::kTask, "task", "the task's"},
    {RegionSet::kKits23, "kits23", "KiTS23's HEC regions with their surface Dice"},
};
constexpr EnumNames<RegionSet> enum_names(EnumTag<RegionSet>) { return kRegionSetNames; }

// KiTS23's hierarchical evaluation classes (kits23/configuration/labels.py), in its order:
// "kidney_and_mass" (label values 1, 2, 3), "mass" (2, 3) and "tumor" (2), each with the surface
// Dice tolerance the organisers measured between annotators (HEC_SD_TOLERANCES_MM). On a kits23
// store whose task keeps those value sets apart: no class may hold values on both sides of a
// region, and none of 0-3 may be ignored (e.g. --task map:0:0,1:1,2:2,3:3). Errors name the task
// and the region it cannot tell apart.
std::vector<DiceRegion> kits23_regions(const Task& task, Layout layout);

}  // namespace kdseg::data
