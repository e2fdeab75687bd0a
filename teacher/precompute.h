// The teacher pass (`kdseg precompute`): runs a teacher once over the un-augmented slices of a
// prepared store and caches its outputs (data/soft_label_cache.h). Slices are grouped into
// batches of a fixed composition in store order and the batches split across ranks in
// contiguous blocks, so the cache is the same, bit for bit on CPU, whatever the number of ranks
// and however often the pass was interrupted and resumed.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data/soft_label_cache.h"
#include "data/task.h"
#include "dist/communicator.h"

namespace kdseg {
class FrozenModel;
}
namespace kdseg::data {
class PreparedStore;
}

namespace kdseg::teacher {

struct PrecomputeOptions {
  // kdseg checkpoints or TorchScript files; several are an ensemble (teacher/model_loader.h
  // make_ensemble): the cache holds the log of their mean probability, every file's hash in its
  // provenance.
  std::vector<std::string> teachers;
  // Called on each teacher once loaded, with the open store of `data`, before anything is written;
  // throws to refuse it (`kdseg precompute --fold`: a teacher that trained on the students'
  // evaluation fold).
  std::function<void(const FrozenModel& teacher, const std::string& file, const data::PreparedStore& store)>
      check_teacher;
  std::string data;    // prepared store
  std::string output;  // cache folder
  data::CacheFormat format = data::CacheFormat::kLogitsF16;
  double temperature = 0;  // probs-u8: T of the stored probabilities (0: 1); logits-f16: must be 0
  // Calibrate the teacher first (`--temperature fit`): fit T on `calibration_folds`
  // (teacher/calibration.h), which must not overlap `folds`, and cache the logits z / T (the
  // calibrated teacher), recording T in the provenance's "calibration".
  bool fit_temperature = false;
  std::vector<int> calibration_folds;
  std::vector<int> folds;  // slices of these folds' cases; empty: every slice
  data::TaskSpec task;     // tumor; its class count must be the teacher's
  int64_t batch_size = 8;
  int compression = 4;                 // deflate level 0-9 (0: uncompressed)
  bool force = false;                  // replace a finished cache
  c10::DeviceType device = c10::kCPU;  // CPU, or CUDA (bf16 autocast, softmax in float32)
  int workers = 2;                     // slice-reading threads
};

struct PrecomputeSummary {
  int64_t slices = 0;    // in the cache
  int64_t computed = 0;  // by this run (all ranks); the rest were resumed
  double teacher_seconds = 0, write_seconds = 0, wait_seconds = 0, seconds = 0;  // rank 0's
  std::string master;                                                            // path of soft_labels.h5
  double calibration_temperature = 1;  // with fit_temperature: the fitted T, and the NLL it brought
  double nll_before = 0, nll_after = 0;
  // The signal that stopped this rank's pass after a batch (core/stop_request.h), its shard
  // flushed and the master not written; empty when the pass completed. Rerun to continue.
  std::string stopped_by;
};

// Collective over `comm`. Throws kdseg::Error naming the file and the problem.
PrecomputeSummary precompute(const PrecomputeOptions& options, dist::Communicator& comm);

}  // namespace kdseg::teacher
