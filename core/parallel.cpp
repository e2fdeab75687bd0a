#include "core/parallel.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <system_error>

namespace kdseg {

void start_threads(std::vector<std::thread>& threads, int count, const std::function<void()>& fn) {
  const size_t before = threads.size();
  for (int t = 0; t < count; ++t) {
    try {
      threads.emplace_back(fn);
    } catch (const std::system_error&) {
      if (threads.size() == before) throw;
      return;
    }
  }
}

void parallel_for(int64_t n, int threads, const std::function<void(int64_t)>& fn) {
  if (n <= 0) return;
  std::atomic<int64_t> next{0};
  std::mutex mutex;
  std::exception_ptr failure;
  const auto work = [&] {
    for (int64_t i; (i = next.fetch_add(1)) < n;) {
      try {
        fn(i);
      } catch (...) {
        const std::lock_guard<std::mutex> lock(mutex);
        if (!failure) failure = std::current_exception();
        next = n;  // no index starts after a failure
      }
    }
  };
  std::vector<std::thread> helpers;
  const int64_t wanted = std::min<int64_t>(std::max(1, threads), n) - 1;
  if (wanted > 0) {
    try {
      start_threads(helpers, static_cast<int>(wanted), work);
    } catch (const std::system_error&) {
      // no helper at all: this thread does every index
    }
  }
  work();
  for (auto& h : helpers) h.join();
  if (failure) std::rethrow_exception(failure);
}

}  // namespace kdseg
