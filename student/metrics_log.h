// metrics.jsonl: appended by rank 0 as a run goes, one line per logged step and per validation
// (the line types and their JSON are the run record's, core/run_record.h).
#pragma once

#include <cstdint>
#include <string>

#include "core/run_record.h"

namespace kdseg::student {

class MetricsLog {
 public:
  explicit MetricsLog(std::string path) : path_(std::move(path)) {}
  const std::string& path() const { return path_; }

  // Appends one line. Throws kdseg::IoError naming the file and the free space when it cannot.
  void append(const StepLine& line) const;
  void append(const ValidationLine& line) const;
  // Keeps the lines of steps up to `step` (atomically: a crash leaves the old file). A resumed
  // run logs the later steps again, so that no step appears twice. A line that is JSON but not
  // a record of this schema is an error naming the file and the line.
  void truncate_after(int64_t step) const;

 private:
  std::string path_;
};

}  // namespace kdseg::student
