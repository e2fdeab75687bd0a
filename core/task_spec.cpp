#include "core/task_spec.h"

#include <string_view>

#include "core/error.h"

namespace kdseg {

TaskSpec parse_task(const std::string& text) {
  constexpr std::string_view kMapPrefix = "map:";
  if (text.rfind(kMapPrefix, 0) == 0) return {TaskKind::kMap, text.substr(kMapPrefix.size())};
  const TaskKind kind = parse_enum<TaskKind>("--task", text);
  KDSEG_CHECK(kind != TaskKind::kMap, "--task map: give its value:class pairs, e.g. map:0:0,1:1,2:ignore");
  return {kind, ""};
}

std::string task_name(const TaskSpec& spec) {
  return spec.kind == TaskKind::kMap ? "map:" + spec.map : std::string(enum_name(spec.kind));
}

}  // namespace kdseg
