// The figures of `kdseg evaluate` (report.json "figures", report/figures/*.png): for each Dice
// region the worst, the median and the best case by the first model's Dice, and any case asked
// for by id; on each, the evaluated slice where the reference region is largest, drawn at its true
// aspect: a column for the reference (the CT with its contour; below it the soft label a student
// learnt from: a teacher's cached probability, or the raters' mean), then a column per model (its contour over the
// reference's; its foreground probability; its entropy). Internal to eval/.
#pragma once

#include <c10/core/Device.h>
#include <memory>
#include <string>
#include <vector>

#include "core/metrics.h"
#include "data/task.h"
#include "eval/evaluate.h"
#include "eval/evaluation_results.h"

namespace kdseg::data {
class PreparedStore;
class SoftLabelCache;
}  // namespace kdseg::data

namespace kdseg::eval::detail {

struct FigureInputs {
  std::string store_path;
  const data::PreparedStore* store = nullptr;
  data::Task task;
  std::vector<DiceRegion> regions;
  std::vector<int64_t> rows;  // the evaluated rows
  const std::vector<EvaluatedModel>* models = nullptr;
  c10::Device device = c10::kCPU;
  std::vector<std::string> show_cases;  // case ids drawn besides the worst, median and best
  // A teacher's cache: where it holds the slice, the reference column shows the teacher's
  // probability (else the raters' mean, where the store keeps raters).
  std::shared_ptr<const data::SoftLabelCache> cache;
};

// Writes the PNGs into folder/figures/ and returns report.json's "figures" (eval/report.h), one
// per picked case of each region; `models` are the evaluated models' results, in the order of
// in.models (the first model's per-case Dice picks the cases). Throws kdseg::Error for an asked
// case that is not in the evaluated fold.
std::vector<CaseFigure> write_case_figures(const FigureInputs& in, const std::vector<ModelResult>& models,
                                           const std::string& folder);

}  // namespace kdseg::eval::detail
