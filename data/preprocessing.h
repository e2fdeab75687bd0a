// The preprocessing a model was trained with, kept in its checkpoint so that `kdseg predict` can
// repeat it on a scan that was never prepared: the store's layout (its HU window and the label
// value of each class), the in-plane size slices were resized to, and the orientation. The
// trainer records it from the store (preprocessing_of_store); a checkpoint written before it has
// none, and predict then reads it from the store the checkpoint names, when that is still there,
// or takes --window and --size.
//
// JSON, in the checkpoint's "preprocessing" record (docs/formats.md):
//   {"layout": "lits", "task": "organ-tumor", "hu_window": [-60, 140], "size": 512, "slices": "tumor",
//    "orientation": "closest canonical RAS, axial slices", "resize": "bilinear, align_corners false"}
// "size" is 0 for a store of native-size slices; "layout" and "task" (which label value each
// class is written as) are null when unknown (--window/--size).
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/task_spec.h"
#include "data/layout.h"

namespace kdseg::data {

class PreparedStore;

struct Preprocessing {
  std::optional<Layout> layout;  // with the task: the label value of each class; none: class k is written as k
  std::optional<TaskSpec> task;
  double hu_low = -60, hu_high = 140;
  int64_t size = 0;    // the slices' in-plane size (H = W); 0: each scan's own
  std::string slices;  // the store's slice selection (what the model saw in training), informative
  std::string from;    // where it was read, for messages: "the checkpoint", "store <path>", "--window/--size"

  // `hu` [*] (HU, any real dtype) clamped to the window and mapped to [-1, 1], as data::Task::window.
  at::Tensor window(const at::Tensor& hu) const;
  // The canonical slice [X,Y] in HU resized to [size, size] (bilinear, align_corners false, as
  // prepare resizes), float32; unchanged when size is 0 or already the slice's.
  at::Tensor resize(const at::Tensor& slice) const;
  // Whether two models see their input the same way (layout, window and size).
  bool same_input(const Preprocessing& other) const;
  // The label value written for each of `classes` classes: the layout's values of the task's
  // classes where both are known (data::Task::label_value_of_class), otherwise the class itself.
  std::vector<uint8_t> label_value_of_class(int64_t classes) const;
  std::string describe() const;  // "layout lits, task tumor, HU [-60, 140], 512x512"
};

// The preprocessing of the slices of `store` (read from `path`), for a model trained on it with
// `task` (whose layout gives the window).
Preprocessing preprocessing_of_store(const PreparedStore& store, const std::string& path, const TaskSpec& task);
std::string preprocessing_json(const Preprocessing& p);
// Throws kdseg::Error naming `source` and the key when the JSON is not a preprocessing record.
Preprocessing parse_preprocessing(const std::string& json, const std::string& source);

}  // namespace kdseg::data
