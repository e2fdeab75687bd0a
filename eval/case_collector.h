// The per-case work of `kdseg evaluate` that needs a case's whole volume: its surface distances
// (HD95, ASSD, NSD; core/surface_distance.h) and its predictions written as NIfTI in the source
// file's geometry.
//
// Evaluate gives each rank whole cases (data::evaluation_case_rows) and feeds their slices in row
// order. A case's predicted classes and labels are held packed into one byte a voxel (and, when
// predictions are saved, its foreground probability to 1/65535 in two) until its last slice arrives; the
// case is then measured, written plane by plane (data::NiftiPlaneWriter) and freed, so memory
// follows the largest case, not the fold. Predictions of ranks other than 0 are written to a
// local folder and sent to rank 0 by finish(). The store and the regions must outlive the
// collector.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/metrics.h"

namespace kdseg::data {
class PreparedStore;
}
namespace kdseg::dist {
class Communicator;
}

namespace kdseg::eval::detail {

struct CaseOutputs {
  bool surface = true;
  double tolerance = 2.0;  // mm, NSD's
  int64_t classes = 2;
  int64_t ignore_index = 255;
  // Predictions as <case>.nii.gz and <case>_probs.nii.gz in `folder`, rank 0's report folder.
  bool predictions = false;
  std::string folder;
  std::vector<uint8_t> value_of_class;  // the label value written for each class
  int threads = 1;                      // compressing the NIfTI files
};

// The metrics per case and region of CaseCollector::finish: kSurfaceMetricCount, plus one when a
// region has a surfel tolerance.
int64_t surface_metric_count(const std::vector<DiceRegion>& regions);

class CaseCollector {
 public:
  // `rows`: the fold's store rows; this rank's are data::evaluation_case_rows of them.
  CaseCollector(const data::PreparedStore& store, const std::vector<int64_t>& rows,
                const std::vector<DiceRegion>& regions, CaseOutputs outputs, const dist::Communicator& comm);
  ~CaseCollector();
  CaseCollector(const CaseCollector&) = delete;
  CaseCollector& operator=(const CaseCollector&) = delete;

  // The rows this rank evaluates, in the order add() takes them.
  const std::vector<int64_t>& rows() const { return mine_; }

  // This rank's next slice: predicted classes [H,W] (any integer type), labels [H,W] (classes or
  // ignore_index) and, when predictions are saved, the foreground probability [H,W] float32.
  void add(int64_t row, const at::Tensor& classes, const at::Tensor& labels, const at::Tensor& foreground);

  // Collective: rank 0 receives the other ranks' prediction files; returns [cases, regions,
  // {hd95, assd, nsd} and, where a region asks for it, the surfel surface Dice (NaN for the other
  // regions)] float64 on every rank (zero for cases outside the fold): surface_metric_count.
  at::Tensor finish(dist::Communicator& comm);

 private:
  int32_t case_of(int64_t row) const;
  void complete_case();
  void measure(int32_t c);
  void write_predictions(int32_t c);

  const data::PreparedStore& store_;
  const std::vector<DiceRegion>& regions_;
  CaseOutputs out_;
  int rank_;
  std::string folder_;  // where this rank writes predictions: rank 0's report folder or a local one
  std::vector<int64_t> mine_;
  std::map<int32_t, int> owner_;                          // the rank that evaluates each case
  std::map<int32_t, std::vector<int64_t>> rows_of_case_;  // this rank's rows of each of its cases
  at::Tensor results_;
  // The case being filled: its rows' packed classes and labels [n,H,W] and foreground [n,H,W].
  int32_t current_ = -1;
  size_t filled_ = 0;
  at::Tensor packed_, foreground_;
};

}  // namespace kdseg::eval::detail
