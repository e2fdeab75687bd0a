// A stall check for collectives: every collective is registered while in flight; a thread
// reports one that has not completed within the timeout (which collective, which rank, how
// long) and calls the abort handler, so that a hung job ends instead of waiting forever.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>

namespace kdseg::dist {

class Watchdog {
 public:
  using AbortHandler = std::function<void(const std::string& reason)>;

  // timeout 0 disables the check (register/finish still work, nothing is watched).
  Watchdog(std::chrono::milliseconds timeout, AbortHandler on_timeout);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // Registers an in-flight collective. `describe` is called only when it is reported (keep it
  // cheap to construct: small captures). `done` (optional) is polled for asynchronous ones
  // (NCCL); synchronous ones call finish() when they return.
  uint64_t start(std::function<std::string()> describe, std::function<bool()> done = nullptr);
  void finish(uint64_t id);

  std::chrono::milliseconds timeout() const { return timeout_; }

 private:
  struct Entry {
    std::function<std::string()> describe;
    std::chrono::steady_clock::time_point start;
    std::function<bool()> done;
  };
  void run();

  std::chrono::milliseconds timeout_;
  AbortHandler on_timeout_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::map<uint64_t, Entry> in_flight_;
  uint64_t next_id_ = 1;
  bool stop_ = false;
  std::thread thread_;
};

// Registers a synchronous collective for the lifetime of the scope.
class WatchedCollective {
 public:
  WatchedCollective(Watchdog* watchdog, std::function<std::string()> describe)
      : watchdog_(watchdog && watchdog->timeout().count() > 0 ? watchdog : nullptr),
        id_(watchdog_ ? watchdog_->start(std::move(describe)) : 0) {}
  ~WatchedCollective() {
    if (watchdog_) watchdog_->finish(id_);
  }
  WatchedCollective(const WatchedCollective&) = delete;
  WatchedCollective& operator=(const WatchedCollective&) = delete;

 private:
  Watchdog* watchdog_;
  uint64_t id_;
};

}  // namespace kdseg::dist
