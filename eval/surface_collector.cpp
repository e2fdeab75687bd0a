#include "eval/surface_collector.h"

#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <set>

#include "core/surface_distance.h"
#include "data/loader.h"
#include "data/nifti.h"
#include "data/prepared_store.h"
#include "dist/communicator.h"

namespace kdseg::eval::detail {
namespace {
using torch::Tensor;

// 1 where `classes` holds one of the region's classes (the ignore label is in none).
Tensor in_region(const Tensor& classes, const DiceRegion& region) {
  Tensor mask = torch::zeros_like(classes, torch::kBool);
  for (int64_t k : region.classes) mask.logical_or_(classes == k);
  return mask.to(torch::kByte).contiguous();
}

}  // namespace

SurfaceCollector::SurfaceCollector(const data::PreparedStore& store, const std::vector<int64_t>& rows,
                                   const std::vector<DiceRegion>& regions, int64_t ignore_index, double tolerance,
                                   const dist::Communicator& comm)
    : store_(store),
      regions_(regions),
      ignore_index_(ignore_index),
      tolerance_(tolerance),
      results_(torch::zeros({static_cast<int64_t>(store.case_ids().size()), static_cast<int64_t>(regions.size()), 3},
                            torch::kDouble)) {
  std::map<int32_t, std::set<int>> ranks_of_case;
  for (int rank = 0; rank < comm.size(); ++rank) {
    for (int64_t row : data::evaluation_rows(rows, rank, comm.size())) {
      const int32_t c = case_of(row);
      rows_of_case_[c].push_back(row);
      ranks_of_case[c].insert(rank);
    }
  }
  for (const auto& [c, ranks] : ranks_of_case) {
    if (ranks.size() > 1) shared_.push_back(c);
  }
}

void SurfaceCollector::add(int64_t row, Tensor predicted, Tensor label) {
  const int32_t c = case_of(row);
  Slices& held = held_[c];
  held[row] = {std::move(predicted), std::move(label)};
  if (held.size() != rows_of_case_.at(c).size()) return;
  measure(c, held);
  held_.erase(c);
}

Tensor SurfaceCollector::finish(dist::Communicator& comm) {
  const int64_t h = store_.height(), w = store_.width();
  for (size_t i = 0; i < shared_.size(); ++i) {
    const int32_t c = shared_[i];
    const std::vector<int64_t>& rows = rows_of_case_.at(c);
    Tensor volume = torch::zeros({static_cast<int64_t>(rows.size()), 2, h, w}, torch::kByte);
    const auto held = held_.find(c);
    for (size_t j = 0; held != held_.end() && j < rows.size(); ++j) {
      const auto slice = held->second.find(rows[j]);
      if (slice == held->second.end()) continue;
      volume[static_cast<int64_t>(j)][0].copy_(slice->second.first);
      volume[static_cast<int64_t>(j)][1].copy_(slice->second.second);
    }
    dist::all_reduce_any_device(comm, volume, dist::ReduceOp::kSum);  // exactly one rank holds each slice
    if (static_cast<int>(i) % comm.size() != comm.rank()) continue;
    Slices gathered;
    for (size_t j = 0; j < rows.size(); ++j) {
      const Tensor slice = volume[static_cast<int64_t>(j)];
      gathered[rows[j]] = {slice[0], slice[1]};
    }
    measure(c, gathered);
  }
  held_.clear();
  dist::all_reduce_any_device(comm, results_, dist::ReduceOp::kSum);  // each case measured by one rank
  return results_;
}

int32_t SurfaceCollector::case_of(int64_t row) const { return store_.slice_case()[static_cast<size_t>(row)]; }

// Stacks the case's slices at their positions along the S axis (slices a store left out are
// empty in both) and measures each region on the store's grid: the in-plane spacing is the
// canonical spacing scaled by the resize. Voxels with the ignore label take the prediction's
// value in the reference, so that, as for Dice, they count neither way.
void SurfaceCollector::measure(int32_t case_index, const Slices& slices) {
  const auto c = static_cast<size_t>(case_index);
  int32_t first = INT32_MAX, last = INT32_MIN;
  for (int64_t row : rows_of_case_.at(case_index)) {
    first = std::min(first, store_.slice_index()[static_cast<size_t>(row)]);
    last = std::max(last, store_.slice_index()[static_cast<size_t>(row)]);
  }
  const int64_t h = store_.height(), w = store_.width();
  Tensor predicted = torch::zeros({last - first + 1, h, w}, torch::kByte), label = torch::zeros_like(predicted);
  for (const auto& [row, slice] : slices) {
    const int64_t z = store_.slice_index()[static_cast<size_t>(row)] - first;
    predicted[z].copy_(slice.first);
    label[z].copy_(slice.second);
  }
  const auto shape = store_.case_shapes()[c];
  const std::array<double, 3> mm = data::voxel_spacing(store_.case_affines()[c]);
  const std::array<double, 3> spacing = {mm[2], mm[0] * static_cast<double>(shape[0]) / static_cast<double>(h),
                                         mm[1] * static_cast<double>(shape[1]) / static_cast<double>(w)};
  const std::array<int64_t, 3> size = {predicted.size(0), h, w};
  const Tensor ignored = label == ignore_index_;
  for (size_t k = 0; k < regions_.size(); ++k) {
    const Tensor in_prediction = in_region(predicted, regions_[k]);
    const Tensor in_reference = torch::where(ignored, in_prediction, in_region(label, regions_[k])).contiguous();
    const SurfaceMetrics distances =
        surface_metrics(in_prediction.data_ptr<uint8_t>(), in_reference.data_ptr<uint8_t>(), size, spacing, tolerance_);
    results_[case_index][static_cast<int64_t>(k)].copy_(
        torch::tensor({distances.hd95, distances.assd, distances.nsd}, torch::kDouble));
  }
}

}  // namespace kdseg::eval::detail
