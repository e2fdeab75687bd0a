#include "student/metrics_log.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file_util.h"

namespace kdseg::student {

void MetricsLog::append(const nlohmann::json& line) const { append_to_file(path_, line.dump() + "\n"); }

void MetricsLog::truncate_after(int64_t step) const {
  std::ifstream in(path_);
  if (!in) return;
  std::string kept, line;
  bool dropped = false;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    const auto* at = j.is_object() && j.contains("validation") ? &j.at("validation") : &j;
    const bool later =
        !j.is_object() || !at->is_object() || !at->contains("step") || at->at("step").get<int64_t>() > step;
    if (later) {
      dropped = true;
      continue;
    }
    kept += line + "\n";
  }
  if (dropped) write_file_atomic(path_, kept);
}

}  // namespace kdseg::student
