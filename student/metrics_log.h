// metrics.jsonl: one JSON object per line, appended by rank 0 as a run goes (training steps
// and {"validation": {...}} records, each with its "step"; docs/formats.md lists the fields).
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <string>

namespace kdseg::student {

class MetricsLog {
 public:
  explicit MetricsLog(std::string path) : path_(std::move(path)) {}
  const std::string& path() const { return path_; }

  // Appends one line. Throws kdseg::IoError naming the file and the free space when it cannot.
  void append(const nlohmann::json& line) const;
  // Keeps the lines of steps up to `step` (atomically: a crash leaves the old file). A resumed
  // run logs the later steps again, so that no step appears twice.
  void truncate_after(int64_t step) const;

 private:
  std::string path_;
};

}  // namespace kdseg::student
