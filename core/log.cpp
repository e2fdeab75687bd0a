#include "core/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

namespace kdseg::log {
namespace {
spdlog::level::level_enum to_spdlog(Level level) {
  switch (level) {
    case Level::kTrace: return spdlog::level::trace;
    case Level::kDebug: return spdlog::level::debug;
    case Level::kInfo: return spdlog::level::info;
    case Level::kWarn: return spdlog::level::warn;
    case Level::kError: return spdlog::level::err;
    case Level::kOff: return spdlog::level::off;
  }
  return spdlog::level::info;
}
}  // namespace

void init(int rank, int world_size, Level level, bool all_ranks) {
  // Logs go to stderr so that command output on stdout (tables, JSON) stays machine-readable.
  auto logger = spdlog::get("kdseg");
  if (!logger) {
    logger = spdlog::stderr_color_mt("kdseg");
  }
  const std::string who = world_size > 1 || rank > 0 ? fmt::format("[rank {}/{}] ", rank, world_size) : std::string();
  logger->set_pattern("[%H:%M:%S.%e] " + who + "%^%l%$: %v");
  Level effective = level;
  if (rank > 0 && !all_ranks && level < Level::kWarn) effective = Level::kWarn;
  logger->set_level(to_spdlog(effective));
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(logger);
}

}  // namespace kdseg::log
