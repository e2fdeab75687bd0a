#include "core/stop_request.h"

#include <signal.h>

#include <atomic>
#include <csignal>

namespace kdseg {
namespace {

volatile std::sig_atomic_t requested_signal = 0;
constexpr int kStopSignals[] = {SIGTERM, SIGINT, SIGUSR1};

extern "C" void on_stop_signal(int signal) {
  requested_signal = signal;
  // The next one ends the process: a user who presses Ctrl-C twice means it.
  struct sigaction action {};
  action.sa_handler = SIG_DFL;
  sigemptyset(&action.sa_mask);
  for (const int s : kStopSignals) ::sigaction(s, &action, nullptr);
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

bool stop_requested() { return requested_signal != 0; }

std::string stop_signal_name() {
  switch (requested_signal) {
    case SIGTERM: return "SIGTERM";
    case SIGINT: return "SIGINT";
    case SIGUSR1: return "SIGUSR1";
    default: return "";
  }
}

}  // namespace kdseg
