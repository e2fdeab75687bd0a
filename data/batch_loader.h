// The prefetching batch loader: reads the slices of a plan (data/sampler.h) from the prepared
// store, windows and maps them by the task (data/task.h), makes the label kind asked of the
// raters (data/raters.h), transforms them (data/augment.h) with the teacher's and the raters' soft
// labels when given, and hands out batches in plan order. Used by the
// trainer, the evaluator and the teacher's precompute.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "data/augment.h"
#include "data/sampler.h"
#include "data/task.h"

namespace kdseg::data {

struct Batch {
  at::Tensor images;      // [B,1,H,W] float32
  at::Tensor labels;      // [B,H,W] int64
  at::Tensor soft;        // [B,C,H,W] float32 teacher probabilities (with LoaderOptions::soft_labels)
  at::Tensor rater_soft;  // [B,C,H,W] float32 rater mean (RaterLabels::kMean, kWeighted)
  std::vector<int64_t> rows;
};

class SoftLabelCache;

// What the loader makes of a store's raters (/slices/raters, data/raters.h): nothing (the stored
// label); the majority, or one rater drawn per sample and epoch, as the label; or the majority as
// the label and the raters' mean, uniform or weighted by their agreement with the majority, as
// Batch::rater_soft. The majority is the store's /slices/majority where it keeps one (KiTS's
// aggregation, per instance), else the raters' per-pixel vote (ties to the lowest class).
enum class RaterLabels { kNone, kMajority, kRandom, kMean, kWeighted };

struct LoaderOptions {
  int workers = 2;    // decoding/augmenting threads
  int prefetch = 4;   // batches kept ready ahead of the consumer
  bool train = true;  // augment (train) or centre crop (eval)
  AugmentOptions augment;
  // Soft labels from a teacher's cache, turned into probabilities at `temperature` and
  // transformed with the image (bilinear, so they stay normalised; 0 where padded).
  std::shared_ptr<const SoftLabelCache> soft_labels;
  double temperature = 1.0;
  RaterLabels raters = RaterLabels::kNone;
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
