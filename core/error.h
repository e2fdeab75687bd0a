// kdseg::Error and the check macros every library uses.
//
// Libraries throw kdseg::Error; they never exit(). A message names the file, dataset or call,
// the values seen, and what to change. Each error records the source location and the rank
// of the process that raised it (-1 before distribution is initialised).
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace kdseg {

class Error : public std::runtime_error {
 public:
  Error(std::string message, const char* file, int line);

  // The message without location or rank.
  const std::string& message() const noexcept { return message_; }
  const char* file() const noexcept { return file_; }
  int line() const noexcept { return line_; }
  int rank() const noexcept { return rank_; }

 private:
  std::string message_;
  const char* file_;
  int line_;
  int rank_;
};

// An operating-system input/output failure: a full disk, a file size limit, a file system gone
// read-only. Code that writes an output catches it to say which output and how much space is
// left (core/file_util.h, throw_write_failure).
class IoError : public Error {
 public:
  using Error::Error;
};

// The message of any exception, without the C++ stack trace that LibTorch's c10::Error
// appends to what(): for messages that users read.
std::string error_message(const std::exception& e);

// The rank recorded in errors and log lines; set once distribution is initialised.
void set_process_rank(int rank, int world_size);
int process_rank() noexcept;
int process_world_size() noexcept;

namespace detail {

template <typename... Args>
std::string concat(Args&&... args) {
  std::ostringstream out;
  (out << ... << std::forward<Args>(args));
  return out.str();
}
inline std::string concat() { return {}; }

[[noreturn]] void throw_error(const char* file, int line, std::string message);
[[noreturn]] void throw_io_error(const char* file, int line, std::string message);

// The message of a failed KDSEG_CHECK: the caller's words, or the condition when none are given.
template <typename... Args>
std::string check_message(const char* condition, Args&&... args) {
  std::string message = concat(std::forward<Args>(args)...);
  return message.empty() ? concat("check failed: ", condition) : message;
}

}  // namespace detail
}  // namespace kdseg

// Throws kdseg::Error with the streamed arguments as message.
#define KDSEG_THROW(...) ::kdseg::detail::throw_error(__FILE__, __LINE__, ::kdseg::detail::concat(__VA_ARGS__))

// Throws kdseg::Error when `cond` is false, with the streamed arguments as message (written
// for the user: what is wrong, the values seen, what to change), or "check failed: <cond>"
// when there are none.
#define KDSEG_CHECK(...) KDSEG_CHECK_WITH_MESSAGE_(__VA_ARGS__, "")
#define KDSEG_CHECK_WITH_MESSAGE_(cond, ...)                                                                \
  do {                                                                                                      \
    if (!(cond)) {                                                                                          \
      ::kdseg::detail::throw_error(__FILE__, __LINE__, ::kdseg::detail::check_message(#cond, __VA_ARGS__)); \
    }                                                                                                       \
  } while (false)
