// A parallel loop for the few places that run their own threads beside LibTorch's pool (prepare's
// compressors, the NIfTI writer's gzip members): exceptions come back to the caller instead of
// ending the process, and a system that refuses more threads gets the work done on fewer.
#pragma once

#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

namespace kdseg {

// Calls fn(i) once for each i in [0, n), on up to `threads` threads, this one included. The
// first exception a call throws is rethrown here after every thread has stopped; no index starts
// after it. When a thread cannot be started, the threads already running do its share.
void parallel_for(int64_t n, int threads, const std::function<void(int64_t)>& fn);

// Starts up to `count` threads running `fn`, appending them to `threads`; stops at the first the
// system refuses. Rethrows that refusal (std::system_error) only when no thread started, so the
// caller never holds a half-started pool it cannot join.
void start_threads(std::vector<std::thread>& threads, int count, const std::function<void()>& fn);

}  // namespace kdseg
