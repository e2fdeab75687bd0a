#include "student/metrics_log.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file_util.h"

namespace kdseg::student {

void MetricsLog::append(const StepLine& line) const { append_to_file(path_, metrics_line_json(line).dump() + "\n"); }

void MetricsLog::append(const ValidationLine& line) const {
  append_to_file(path_, metrics_line_json(line).dump() + "\n");
}

void MetricsLog::truncate_after(int64_t step) const {
  std::ifstream in(path_);
  if (!in) return;
  std::string kept, line;
  bool dropped = false;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (line.empty()) continue;
    const std::optional<int64_t> at = parse_metrics_line(line, path_, number).at_step();
    if (!at || *at > step) {  // a later step, or a torn line
      dropped = true;
      continue;
    }
    kept += line + "\n";
  }
  if (dropped) write_file_atomic(path_, kept);
}

}  // namespace kdseg::student
