#include "dist/watchdog.h"

#include <sstream>

namespace kdseg::dist {

Watchdog::Watchdog(std::chrono::milliseconds timeout, AbortHandler on_timeout)
    : timeout_(timeout), on_timeout_(std::move(on_timeout)) {
  if (timeout_.count() > 0) thread_ = std::thread([this] { run(); });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

uint64_t Watchdog::start(std::function<std::string()> describe, std::function<bool()> done) {
  std::lock_guard<std::mutex> lock(mutex_);
  const uint64_t id = next_id_++;
  in_flight_[id] = Entry{std::move(describe), std::chrono::steady_clock::now(), std::move(done)};
  return id;
}

void Watchdog::finish(uint64_t id) {
  std::lock_guard<std::mutex> lock(mutex_);
  in_flight_.erase(id);
}

void Watchdog::run() {
  // Poll often enough to report within ~5% of the timeout, at most every 200 ms.
  const auto period = std::min<std::chrono::milliseconds>(
      std::chrono::milliseconds(200), std::max<std::chrono::milliseconds>(timeout_ / 20, std::chrono::milliseconds(5)));
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stop_) {
    wake_.wait_for(lock, period);
    if (stop_) break;
    const auto now = std::chrono::steady_clock::now();
    for (auto it = in_flight_.begin(); it != in_flight_.end();) {
      if (it->second.done && it->second.done()) {
        it = in_flight_.erase(it);
        continue;
      }
      const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(now - it->second.start);
      if (waited > timeout_) {
        std::ostringstream reason;
        reason << "collective " << it->second.describe() << " has not completed after " << waited.count() / 1000.0
               << " s (--collective-timeout " << timeout_.count() / 1000.0
               << " s): another rank has failed or stopped calling collectives; aborting the job";
        const std::string text = reason.str();
        lock.unlock();
        on_timeout_(text);  // does not return in production (abort); tests may return
        lock.lock();
        in_flight_.clear();
        break;
      }
      ++it;
    }
  }
}

}  // namespace kdseg::dist
