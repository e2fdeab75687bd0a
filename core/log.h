// Rank-prefixed logging on top of spdlog.
//
// Every line reads "[hh:mm:ss.mmm] [rank r/N] level: message". Ranks other than 0 log
// warnings and errors only unless `all_ranks` is set, so a 64-rank job prints one copy of
// each progress line. Messages use fmt syntax: log::info("epoch {} loss {:.4f}", e, l).
#pragma once

#include <spdlog/spdlog.h>

#include <string>
#include <string_view>
#include <utility>

namespace kdseg::log {

enum class Level { kTrace, kDebug, kInfo, kWarn, kError, kOff };

// Parses "trace", "debug", "info", "warn", "error" or "off"; throws kdseg::Error otherwise.
Level parse_level(std::string_view name);

// (Re)configures the process-wide logger for this rank. Safe to call again after
// distribution is initialised.
void init(int rank, int world_size, Level level = Level::kInfo, bool all_ranks = false);

template <typename... Args>
void trace(spdlog::format_string_t<Args...> format, Args&&... args) {
  spdlog::trace(format, std::forward<Args>(args)...);
}
template <typename... Args>
void debug(spdlog::format_string_t<Args...> format, Args&&... args) {
  spdlog::debug(format, std::forward<Args>(args)...);
}
template <typename... Args>
void info(spdlog::format_string_t<Args...> format, Args&&... args) {
  spdlog::info(format, std::forward<Args>(args)...);
}
template <typename... Args>
void warn(spdlog::format_string_t<Args...> format, Args&&... args) {
  spdlog::warn(format, std::forward<Args>(args)...);
}
template <typename... Args>
void error(spdlog::format_string_t<Args...> format, Args&&... args) {
  spdlog::error(format, std::forward<Args>(args)...);
}

}  // namespace kdseg::log
