#include "core/stop_request.h"

#include <signal.h>
#include <time.h>

#include <atomic>
#include <cerrno>

namespace kdseg {
namespace {

constexpr int kStopSignals[] = {SIGTERM, SIGINT, SIGUSR1};
// A signal that repeats within this many seconds of the first is the same request delivered
// twice (SLURM signals every process of a step and mpirun forwards it again; Ctrl-C reaches a
// whole process group); a later one means "now".
constexpr int64_t kRepeatNanoseconds = 2'000'000'000;

std::atomic<int> requested_signal{0};
std::atomic<int64_t> first_request_ns{0};
static_assert(std::atomic<int>::is_always_lock_free && std::atomic<int64_t>::is_always_lock_free,
              "the signal handler needs lock-free atomics");

int64_t monotonic_ns() {
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);  // async-signal-safe
  return static_cast<int64_t>(now.tv_sec) * 1'000'000'000 + now.tv_nsec;
}

extern "C" void on_stop_signal(int signal) {
  const int saved_errno = errno;
  const int64_t now = monotonic_ns();
  int expected = 0;
  if (requested_signal.compare_exchange_strong(expected, signal)) {
    first_request_ns.store(now);
  } else if (now - first_request_ns.load() >= kRepeatNanoseconds) {
    // Asked again, later: the default action ends the process at once.
    struct sigaction action {};
    action.sa_handler = SIG_DFL;
    sigemptyset(&action.sa_mask);
    ::sigaction(signal, &action, nullptr);
    ::raise(signal);
  }
  errno = saved_errno;
}

}  // namespace

void install_stop_handlers() {
  static std::atomic<bool> installed{false};
  if (installed.exchange(true)) return;
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // reads and writes in progress complete; the flag is polled
  for (const int s : kStopSignals) ::sigaction(s, &action, nullptr);
}

bool stop_requested() { return requested_signal.load() != 0; }

std::string stop_signal_name() {
  switch (requested_signal.load()) {
    case SIGTERM: return "SIGTERM";
    case SIGINT: return "SIGINT";
    case SIGUSR1: return "SIGUSR1";
    default: return "";
  }
}

}  // namespace kdseg
