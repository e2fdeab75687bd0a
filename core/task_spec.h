// A task as --task gives it and the run record (core/run_record.h) keeps it: its kind, and a
// map's pairs. What it means on a store (which label values become which classes, the HU window)
// is data/task.h's make_task.
#pragma once

#include <string>

#include "core/enum_names.h"

namespace kdseg {

// "tumor" (tumour 1, everything else 0: the paper), "organ-tumor" (0, organ 1, tumour 2), or an
// explicit map of stored label values to classes, "map:0:0,1:1,2:1,3:ignore".
enum class TaskKind { kTumour, kOrganTumour, kMap };
inline constexpr EnumName<TaskKind> kTaskKindNames[] = {
    {TaskKind::kTumour, "tumor", ""},
    {TaskKind::kTumour, "tumour", kAlias},
    {TaskKind::kOrganTumour, "organ-tumor", ""},
    {TaskKind::kOrganTumour, "organ-tumour", kAlias},
    {TaskKind::kMap, "map", "map:<value>:<class>,..."},
};
constexpr EnumNames<TaskKind> enum_names(EnumTag<TaskKind>) { return kTaskKindNames; }

struct TaskSpec {
  TaskKind kind = TaskKind::kTumour;
  std::string map;  // kMap: "0:0,1:1,2:ignore" (what follows "map:"); empty otherwise

  bool operator==(const TaskSpec& other) const { return kind == other.kind && map == other.map; }
  bool operator!=(const TaskSpec& other) const { return !(*this == other); }
};
// "tumor" (or "tumour"), "organ-tumor" (or "organ-tumour") or "map:<pairs>"; otherwise throws
// kdseg::Error "--task: '<text>' is not one of tumor, organ-tumor, map". The pairs are checked
// by data::make_task, against the store's layout.
TaskSpec parse_task(const std::string& text);
// "tumor", "organ-tumor" or "map:<pairs>": what parse_task reads back.
std::string task_name(const TaskSpec& spec);

}  // namespace kdseg
