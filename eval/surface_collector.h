// Surface distances (HD95, ASSD, NSD; core/surface_distance.h) per case and Dice region for
// `kdseg evaluate` (eval/evaluate.cpp), which feeds it every evaluated slice's predicted classes
// and labels, [H,W] uint8, and reads [cases, regions, {hd95, assd, nsd}] float64 at the end.
//
// Surface distances need a case's whole volume in one place. Each rank keeps its slices' class
// maps per case and measures a case as soon as it holds every slice of it. A case split between
// ranks (data::evaluation_rows gives each rank a contiguous block, so at most its first and
// last) is summed across ranks after the pass and measured by one of them. The store and the
// regions must outlive the collector.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <utility>
#include <vector>

#include "core/metrics.h"

namespace kdseg::data {
class PreparedStore;
}
namespace kdseg::dist {
class Communicator;
}

namespace kdseg::eval::detail {

class SurfaceCollector {
 public:
  // `rows`: the fold's store rows, split across the ranks of `comm` by data::evaluation_rows.
  // Voxels labelled `ignore_index` count neither way; `tolerance` (mm) is NSD's.
  SurfaceCollector(const data::PreparedStore& store, const std::vector<int64_t>& rows,
                   const std::vector<DiceRegion>& regions, int64_t ignore_index, double tolerance,
                   const dist::Communicator& comm);

  // One evaluated slice of this rank: its predicted classes and labels, [H,W] uint8.
  void add(int64_t row, at::Tensor predicted, at::Tensor label);

  // Collective: measures the shared cases, then returns [cases, regions, {hd95, assd, nsd}] on
  // every rank (zero for cases outside the fold).
  at::Tensor finish(dist::Communicator& comm);

 private:
  using Slices = std::map<int64_t, std::pair<at::Tensor, at::Tensor>>;  // row -> (classes, labels), [H,W] uint8

  int32_t case_of(int64_t row) const;
  void measure(int32_t case_index, const Slices& slices);

  const data::PreparedStore& store_;
  const std::vector<DiceRegion>& regions_;
  int64_t ignore_index_;
  double tolerance_;
  at::Tensor results_;
  std::map<int32_t, std::vector<int64_t>> rows_of_case_;  // the fold's rows of each case, in order
  std::vector<int32_t> shared_;                           // cases whose rows more than one rank holds
  std::map<int32_t, Slices> held_;                        // this rank's slices of cases not yet measured
};

}  // namespace kdseg::eval::detail
