// An ordered producer/consumer pipeline: items [0, n) are made by `make(i)` on worker threads and
// handed to one consumer in index order (prepare's slice compressors, the batch loader's
// workers). At most `window` items are in flight (made or being made, not yet taken), which
// bounds the memory held. The first exception a `make` throws stops the workers and is rethrown
// to the consumer by next(); destroying the pipeline before every item is taken stops the workers
// and waits for them, so an early stop never hangs.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "core/parallel.h"

namespace kdseg {

template <typename T>
class OrderedPipeline {
 public:
  // Starts up to `threads` workers (at least one; see start_threads) making items [0, items),
  // keeping at most `window` (at least 1) ahead of the consumer. `make` is called from the
  // workers, never twice for an index; it must outlive the pipeline.
  OrderedPipeline(int64_t items, int threads, int64_t window, std::function<T(int64_t)> make)
      : items_(items),
        window_(std::max<int64_t>(1, window)),
        make_(std::move(make)),
        slots_(static_cast<size_t>(window_)) {
    start_threads(workers_, std::max(1, threads), [this] { work(); });
  }

  ~OrderedPipeline() {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    changed_.notify_all();
    for (auto& worker : workers_) worker.join();
  }

  OrderedPipeline(const OrderedPipeline&) = delete;
  OrderedPipeline& operator=(const OrderedPipeline&) = delete;

  // The next item in index order, waiting for it; nothing once every item was taken. Rethrows
  // the first exception of a `make` (then and on every later call).
  std::optional<T> next() {
    std::unique_lock<std::mutex> lock(mutex_);
    if (taken_ >= items_) return std::nullopt;
    std::optional<T>& slot = slots_[static_cast<size_t>(taken_ % window_)];
    changed_.wait(lock, [&] { return failure_ || slot.has_value(); });
    if (failure_) std::rethrow_exception(failure_);
    std::optional<T> item = std::move(slot);
    slot.reset();
    ++taken_;
    lock.unlock();
    changed_.notify_all();
    return item;
  }

 private:
  void work() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (true) {
      changed_.wait(lock, [&] { return stop_ || failure_ || next_ >= items_ || next_ < taken_ + window_; });
      if (stop_ || failure_ || next_ >= items_) return;
      const int64_t i = next_++;
      lock.unlock();
      std::optional<T> item;
      std::exception_ptr error;
      try {
        item.emplace(make_(i));
      } catch (...) {
        error = std::current_exception();
      }
      lock.lock();
      if (error && !failure_) failure_ = error;
      if (!error) slots_[static_cast<size_t>(i % window_)] = std::move(item);
      changed_.notify_all();
    }
  }

  const int64_t items_, window_;
  const std::function<T(int64_t)> make_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<std::optional<T>> slots_;  // item i waits in slot i % window until taken
  int64_t next_ = 0, taken_ = 0;         // the next index to make, the items taken
  std::exception_ptr failure_;
  bool stop_ = false;
  std::vector<std::thread> workers_;  // last: started once everything above is ready
};

}  // namespace kdseg
