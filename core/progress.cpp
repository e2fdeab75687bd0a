#include "core/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <sstream>

namespace kdseg {
namespace {
std::string format_seconds(double s) {
  if (!std::isfinite(s)) return "?";
  const auto total = static_cast<int64_t>(s + 0.5);
  std::ostringstream out;
  if (total >= 3600) out << total / 3600 << "h" << (total % 3600) / 60 << "m";
  else if (total >= 60) out << total / 60 << "m" << total % 60 << "s";
  else out << total << "s";
  return out.str();
}
}  // namespace

Progress::Progress(std::string label, int64_t total, bool enabled, double plain_interval_seconds, std::FILE* stream)
    : label_(std::move(label)),
      total_(total),
      enabled_(enabled),
      live_(enabled && isatty(fileno(stream)) != 0),
      plain_interval_(plain_interval_seconds),
      stream_(stream),
      start_(std::chrono::steady_clock::now()),
      last_print_(start_) {}

Progress::~Progress() {
  if (!finished_) finish();
}

std::string Progress::line(const std::string& status) const {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double rate = elapsed > 0 ? static_cast<double>(done_ - resumed_) / elapsed : 0.0;
  std::ostringstream out;
  out << label_ << "  ";
  if (total_ > 0) {
    constexpr int kWidth = 24;
    const double fraction = std::clamp(static_cast<double>(done_) / static_cast<double>(total_), 0.0, 1.0);
    const int filled = static_cast<int>(fraction * kWidth);
    out << "[" << std::string(filled, '#') << std::string(kWidth - filled, '.') << "]  " << done_ << "/" << total_;
  } else {
    out << done_;
  }
  out.setf(std::ios::fixed);
  out.precision(rate < 10 ? 2 : 1);
  out << "  " << rate << " it/s";
  if (total_ > 0 && done_ < total_ && rate > 0) {
    out << "  eta " << format_seconds(static_cast<double>(total_ - done_) / rate);
  } else {
    out << "  " << format_seconds(elapsed);
  }
  if (!status.empty()) out << "  " << status;
  return out.str();
}

void Progress::advance(int64_t n, const std::string& status) {
  done_ += n;
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_print_).count();
  if (live_ ? since >= 0.1 : since >= plain_interval_) {
    last_print_ = now;
    print(status, false);
  }
}

void Progress::finish(const std::string& status) {
  if (finished_) return;
  finished_ = true;
  if (enabled_) print(status, true);
}

void Progress::print(const std::string& status, bool final_line) {
  const std::string text = line(status);
  if (live_) {
    std::fprintf(stream_, "\r\033[2K%s%s", text.c_str(), final_line ? "\n" : "");
  } else {
    std::fprintf(stream_, "%s\n", text.c_str());
  }
  std::fflush(stream_);
}

}  // namespace kdseg
