// Which prepared-store rows each rank reads, in which batches: the training order (reshuffled
// every epoch, with each sample's augmentation seed) and the evaluation split and batches. The
// plans feed the batch loader; the trainer and the evaluator make them.
#pragma once

#include <cstdint>
#include <vector>

namespace kdseg::data {

// Training order: reshuffled every epoch from (seed, epoch); the global batch at step s is
// positions [s*B, (s+1)*B) and rank r takes every world-th of them, so the global batch and
// every sample's randomness are the same whatever the number of ranks.
class DistributedSampler {
 public:
  struct Item {
    int64_t row;    // row of the prepared store
    uint64_t seed;  // augmentation seed of this sample: derived from (seed, epoch, position)
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

// evaluation_rows with each case's rows on one rank: every block ends at the first case boundary
// at or after its even share. `slice_case` is the store's case of each row; `rows` holds each
// case's rows together (as PreparedStore::rows_in_folds does).
std::vector<int64_t> evaluation_case_rows(const std::vector<int64_t>& rows, const std::vector<int32_t>& slice_case,
                                          int rank, int world_size);
// Evaluation batches: `rows` in order, `batch` at a time (the last may be smaller), unaugmented.
std::vector<std::vector<DistributedSampler::Item>> evaluation_plan(const std::vector<int64_t>& rows, int64_t batch);

}  // namespace kdseg::data
