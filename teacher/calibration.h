// Temperature scaling of a teacher (Guo et al., 2017): the single T that minimises the negative
// log-likelihood of softmax(z / T) on held-out slices. `kdseg precompute --temperature fit` fits
// it on folds the students never train on and caches the calibrated teacher's logits z / T.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <string>
#include <vector>

#include "data/task.h"
#include "dist/communicator.h"

namespace at {
class Tensor;
}
namespace kdseg {
class FrozenModel;
}
namespace kdseg::data {
class PreparedStore;
}

namespace kdseg::teacher {

struct TemperatureFit {
  double temperature = 1;    // the minimiser, a point of the grid
  double nll_before = 0;     // mean NLL per voxel at T = 1
  double nll_after = 0;      // at the fitted T
  int64_t voxels = 0;        // labelled voxels of the held-out slices
  bool at_grid_end = false;  // T is 0.1 or 10: the minimum may lie beyond
};

// Runs `teacher` over every slice of `folds` of the store (split across ranks, whole slices,
// against the store's label, or its raters' majority where it keeps raters) and returns the T of
// a grid of 241 log-spaced values in [0.1, 10] (a ratio of 1.02 between neighbours) with the
// lowest NLL. A grid, rather than a continuous search, gives the same T on any number of ranks.
// Collective over `comm`.
TemperatureFit fit_temperature(FrozenModel& teacher, const std::string& store, const data::Task& task,
                               const std::vector<int>& folds, c10::Device device, int workers, int64_t batch_size,
                               dist::Communicator& comm);

// Throws kdseg::Error when the logits [B,C,H,W] that `teacher` gave for the store rows `rows`
// (one per batch item) of `store` (read from `store_path`) hold a NaN or an infinity, naming the
// teacher, the first such slice (its case, slice index and store row) and what it holds: such a teacher yields no soft
// labels and no temperature, and is refused rather than cached.
void check_finite_logits(const at::Tensor& logits, const std::vector<int64_t>& rows, const data::PreparedStore& store,
                         const std::string& store_path, const FrozenModel& teacher);

}  // namespace kdseg::teacher
