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

#include "core/enum_names.h"

namespace kdseg::log {

enum class Level { kTrace, kDebug, kInfo, kWarn, kError, kOff };
// --log-level: parse_enum<log::Level>, enum_name.
inline constexpr EnumName<Level> kLevelNames[] = {
    {Level::kTrace, "trace", ""}, {Level::kDebug, "debug", ""},      {Level::kInfo, "info", ""},
    {Level::kWarn, "warn", ""},   {Level::kWarn, "warning", kAlias}, {Level::kError, "error", ""},
    {Level::kOff, "off", ""},
};
constexpr EnumNames<Level> enum_names(EnumTag<Level>) { return kLevelNames; }

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
