#include "data/sampler.h"

#include <algorithm>
#include <utility>

#include "core/error.h"
#include "core/random.h"

namespace kdseg::data {

DistributedSampler::DistributedSampler(std::vector<int64_t> rows, int rank, int world_size, int64_t global_batch,
                                       uint64_t seed, bool drop_last)
    : rows_(std::move(rows)),
      rank_(rank),
      world_(world_size),
      global_batch_(global_batch),
      seed_(seed),
      drop_last_(drop_last) {
  KDSEG_CHECK(world_ >= 1 && rank_ >= 0 && rank_ < world_, "sampler: rank ", rank_, " outside [0, ", world_, ")");
  KDSEG_CHECK(global_batch_ >= world_ && global_batch_ % world_ == 0, "--batch-size ", global_batch_,
              " is the global batch: it must be a multiple of the number of ranks (", world_, ")");
  KDSEG_CHECK(!rows_.empty(), "sampler: no slices to sample from");
}

int64_t DistributedSampler::steps_per_epoch() const {
  const int64_t n = static_cast<int64_t>(rows_.size());
  return drop_last_ ? std::max<int64_t>(1, n / global_batch_) : (n + global_batch_ - 1) / global_batch_;
}

std::vector<std::vector<DistributedSampler::Item>> DistributedSampler::batches(int64_t epoch) const {
  std::vector<int64_t> order = rows_;
  Rng rng(derive_seed(seed_, {0x5A3D, static_cast<uint64_t>(epoch)}));
  for (size_t i = order.size(); i > 1; --i) {
    std::swap(order[i - 1], order[static_cast<size_t>(rng.uniform_int(0, static_cast<int64_t>(i) - 1))]);
  }
  const int64_t steps = steps_per_epoch();
  std::vector<std::vector<Item>> out(static_cast<size_t>(steps));
  for (int64_t step = 0; step < steps; ++step) {
    for (int64_t j = rank_; j < global_batch_; j += world_) {
      const int64_t position = step * global_batch_ + j;
      // Padding repeats the epoch from its start (a batch smaller than the data set is full).
      const int64_t row = order[static_cast<size_t>(position % static_cast<int64_t>(order.size()))];
      out[static_cast<size_t>(step)].push_back(
          {row, derive_seed(seed_, {static_cast<uint64_t>(epoch), static_cast<uint64_t>(position)})});
    }
  }
  return out;
}

std::vector<int64_t> evaluation_rows(const std::vector<int64_t>& rows, int rank, int world_size) {
  const int64_t n = static_cast<int64_t>(rows.size());
  const int64_t begin = n * rank / world_size, end = n * (rank + 1) / world_size;
  return std::vector<int64_t>(rows.begin() + begin, rows.begin() + end);
}

std::vector<int64_t> evaluation_case_rows(const std::vector<int64_t>& rows, const std::vector<int32_t>& slice_case,
                                          int rank, int world_size) {
  const int64_t n = static_cast<int64_t>(rows.size());
  const auto case_at = [&](int64_t i) { return slice_case[static_cast<size_t>(rows[static_cast<size_t>(i)])]; };
  const auto boundary = [&](int64_t i) {
    while (i > 0 && i < n && case_at(i) == case_at(i - 1)) ++i;
    return i;
  };
  const int64_t begin = boundary(n * rank / world_size), end = boundary(n * (rank + 1) / world_size);
  return std::vector<int64_t>(rows.begin() + begin, rows.begin() + end);
}

std::vector<std::vector<DistributedSampler::Item>> evaluation_plan(const std::vector<int64_t>& rows, int64_t batch) {
  std::vector<std::vector<DistributedSampler::Item>> plan;
  for (size_t i = 0; i < rows.size(); i += static_cast<size_t>(batch)) {
    std::vector<DistributedSampler::Item> items;
    for (size_t j = i; j < std::min(rows.size(), i + static_cast<size_t>(batch)); ++j) items.push_back({rows[j], 0});
    plan.push_back(std::move(items));
  }
  return plan;
}

}  // namespace kdseg::data
