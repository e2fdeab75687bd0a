#include "core/error.h"

#include <c10/util/Exception.h>

#include <atomic>

namespace kdseg {
namespace {
std::atomic<int> g_rank{-1};
std::atomic<int> g_world_size{0};

std::string describe(const std::string& message, const char* file, int line, int rank) {
  std::string where = rank >= 0 ? detail::concat("[rank ", rank, "] ") : std::string();
  return detail::concat(where, message, " (", file, ":", line, ")");
}
}  // namespace

Error::Error(std::string message, const char* file, int line)
    : std::runtime_error(describe(message, file, line, g_rank.load())),
      message_(std::move(message)),
      file_(file),
      line_(line),
      rank_(g_rank.load()) {}

std::string error_message(const std::exception& e) {
  if (const auto* torch_error = dynamic_cast<const c10::Error*>(&e)) return torch_error->what_without_backtrace();
  return e.what();
}

void set_process_rank(int rank, int world_size) {
  g_rank.store(rank);
  g_world_size.store(world_size);
}
int process_rank() noexcept { return g_rank.load(); }
int process_world_size() noexcept { return g_world_size.load(); }

namespace detail {
void throw_error(const char* file, int line, std::string message) { throw Error(std::move(message), file, line); }
void throw_io_error(const char* file, int line, std::string message) { throw IoError(std::move(message), file, line); }
}  // namespace detail
}  // namespace kdseg
