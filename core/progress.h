// Progress display for long loops.
//
// On a terminal it redraws one live line ("label  [#####.....]  45/100  12.3 it/s  eta 4s");
// otherwise (CI, log files, mpirun output) it prints a plain line at most every
// `plain_interval_seconds` and when done, so logs stay short and readable.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace kdseg {

class Progress {
 public:
  Progress(std::string label, int64_t total, bool enabled = true, double plain_interval_seconds = 10.0,
           std::FILE* stream = stderr);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // Advances by `n` items; `status` is shown after the counters (for example "loss 0.412").
  void advance(int64_t n = 1, const std::string& status = {});
  // Counts `n` items done before this process started (a resumed run): in the counters, not in
  // the rate or the time left.
  void resume_at(int64_t n) {
    done_ += n;
    resumed_ += n;
  }
  // Prints the final line; called by the destructor when not called before.
  void finish(const std::string& status = {});

  int64_t done() const { return done_; }
  // The line that would be printed now, without the live-redraw control characters.
  std::string line(const std::string& status) const;

 private:
  void print(const std::string& status, bool final_line);

  std::string label_;
  int64_t total_;
  int64_t done_ = 0;
  int64_t resumed_ = 0;
  bool enabled_;
  bool live_;
  bool finished_ = false;
  double plain_interval_;
  std::FILE* stream_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_print_;
};

}  // namespace kdseg
