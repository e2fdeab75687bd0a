// The segmentation task: which stored label values (0-255) become which training classes, and
// the HU window that maps CT values to [-1, 1]. Made once from the task name and the store's
// layout by the trainer, the evaluator and the teacher's precompute; read by the batch loader.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "core/metrics.h"
#include "data/layout.h"

namespace kdseg::data {

// Maps stored label values (0-255) to classes, and HU to [-1, 1].
struct Task {
  std::string name;  // "tumor", "organ-tumor" or "map:<spec>"
  int64_t classes = 2;
  std::array<int64_t, 256> class_of{};  // stored label value -> class, or ignore_index
  int64_t ignore_index = 255;
  double hu_low = -60, hu_high = 140;

  // labels [*] uint8 -> int64 classes; images [*] HU -> clamp to the window, map to [-1, 1].
  at::Tensor classes_of(const at::Tensor& labels) const;
  at::Tensor window(const at::Tensor& hu) const;
};

// "tumor" (tumour 1, everything else 0: the paper), "organ-tumor" (0, organ 1, tumour 2; KiTS23
// cysts by `cysts`: "organ", "tumor" or "ignore"), or an explicit map "0:0,1:1,2:2,3:ignore".
// The HU window is the layout's: LiTS [-60, 140], KiTS and QUBIQ [-200, 300].
Task make_task(const std::string& name, Layout layout, const std::string& cysts = "organ");

// The Dice regions reported for a task: "tumor" alone for two classes ("target" for QUBIQ); for organ-tumor the organ
// ("liver" or "kidney") and "tumor", plus "kidney+tumor" (classes 1 and 2) for KiTS; otherwise
// one region per foreground class, named "class <k>".
std::vector<DiceRegion> dice_regions(const Task& task, Layout layout);

}  // namespace kdseg::data
