// From the prepared store to training batches: the task (which labels become which classes),
// the HU window, augmentation, distributed sampling, and a prefetching batch loader.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "data/layout.h"

namespace kdseg::data {

// Maps stored label values (0-255) to classes, and HU to [-1, 1].
struct Task {
  std::string name;            // "tumor", "organ-tumor" or "map:<spec>"
  int64_t classes = 2;
  std::array<int64_t, 256> class_of{};  // stored label value -> class, or ignore_index
  int64_t ignore_index = 255;
  double hu_low = -60, hu_high = 140;

  // labels [*] uint8 -> int64 classes; images [*] HU -> clamp to the window, map to [-1, 1].
  at::Tensor classes_of(const at::Tensor& labels) const;
  at::Tensor window(const at::Tensor& hu) const;
};

// "tumor" (tumour 1, everything else 0: the paper), "organ-tumor" (0, organ 1, tumour 2; KiTS23
// cysts by `cysts`: "organ", "tumor" or "ignore"), or an explicit map "0:0,1:1,2:2,3:ignore".
// The window defaults to the layout's (LiTS [-60,140], KiTS [-200,300]) unless given.
Task make_task(const std::string& name, Layout layout, const std::string& cysts = "organ",
               std::optional<std::pair<double, double>> window = std::nullopt);

struct AugmentOptions {
  double scale_min = 0.5, scale_max = 2.0;  // random scale (1 and 1: none)
  bool flip = true;                         // left-right flip (the R axis, dim 0 of a slice)
  int64_t crop = 384;                       // output size; 0 keeps the (scaled) slice
};

// One sample: image [1,H,W] (windowed), label [H,W] int64, optional extra maps [C,H,W]
// (soft labels) that follow the same geometric transform.
struct Sample {
  at::Tensor image, label, extra;
};

// The training transform, drawing its randomness from `seed` only: random scale (bilinear
// image and extra maps, which stay normalised; nearest labels), flip, random crop with padding
// (image with -1, the window's low end; labels with ignore_index; extra maps with 0).
Sample augment(const Sample& in, const AugmentOptions& options, uint64_t seed, int64_t ignore_index);
// The evaluation transform: centre crop (with the same padding), or the whole slice (crop 0).
Sample center_crop(const Sample& in, int64_t crop, int64_t ignore_index);

// Training order: reshuffled every epoch from (seed, epoch); the global batch at step s is
// positions [s*B, (s+1)*B) and rank r takes every world-th of them, so the global batch and
// every sample's randomness are the same whatever the number of ranks.
class DistributedSampler {
 public:
  struct Item {
    int64_t row;   // row of the prepared store
    uint64_t seed; // augmentation seed of this sample: derived from (seed, epoch, position)
  };
  DistributedSampler(std::vector<int64_t> rows, int rank, int world_size, int64_t global_batch, uint64_t seed,
                     bool drop_last = true);
  // This rank's batches of `epoch`, each of global_batch / world_size items.
  std::vector<std::vector<Item>> batches(int64_t epoch) const;
  int64_t steps_per_epoch() const;

 private:
  std::vector<int64_t> rows_;
  int rank_, world_;
  int64_t global_batch_;
  uint64_t seed_;
  bool drop_last_;
};

// Evaluation: every row exactly once across ranks, in contiguous blocks (uneven allowed).
std::vector<int64_t> evaluation_rows(const std::vector<int64_t>& rows, int rank, int world_size);
// Evaluation batches: `rows` in order, `batch` at a time (the last may be smaller), unaugmented.
std::vector<std::vector<DistributedSampler::Item>> evaluation_plan(const std::vector<int64_t>& rows, int64_t batch);

struct Batch {
  at::Tensor images;  // [B,1,H,W] float32
  at::Tensor labels;  // [B,H,W] int64
  at::Tensor soft;    // [B,C,H,W] float32 teacher probabilities (with LoaderOptions::soft_labels)
  std::vector<int64_t> rows;
};

class SoftLabelCache;

struct LoaderOptions {
  int workers = 2;          // decoding/augmenting threads
  int prefetch = 4;         // batches kept ready ahead of the consumer
  bool train = true;        // augment (train) or centre crop (eval)
  AugmentOptions augment;
  // Soft labels from a teacher's cache, turned into probabilities at `temperature` and
  // transformed with the image (bilinear, so they stay normalised; 0 where padded).
  std::shared_ptr<const SoftLabelCache> soft_labels;
  double temperature = 1.0;
  // Batches in page-locked memory (for training on CUDA; needs a CUDA device).
  bool pin_memory = false;
};

// Loads batches in background threads. HDF5 is not thread-safe: the compressed chunk of each
// slice is read under a lock (H5Dread_chunk), and decompression, unshuffling, windowing and
// augmentation run in the workers without it. Batches come out in plan order.
class BatchLoader {
 public:
  BatchLoader(const std::string& store, Task task, LoaderOptions options,
              std::vector<std::vector<DistributedSampler::Item>> plan);
  ~BatchLoader();
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  // The next batch, or nothing at the end of the plan. Rethrows a worker's error.
  std::optional<Batch> next();
  // Seconds the consumer has waited for data so far.
  double wait_seconds() const { return wait_seconds_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  double wait_seconds_ = 0;
};

}  // namespace kdseg::data
