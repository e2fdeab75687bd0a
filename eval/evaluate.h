// `kdseg evaluate`: runs one or more models over every slice of a fold's cases exactly once
// (split across ranks), groups slices by case, and writes report.json, per_case.csv and
// report.html (eval/report.h), optionally with the predictions as NIfTI in each case's
// original geometry.
#pragma once

#include <c10/core/Device.h>
#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/task.h"
#include "dist/communicator.h"

namespace kdseg {
class FrozenModel;
}

namespace kdseg::eval {

struct EvaluatedModel {
  std::string name;                    // its column in the report
  std::string file;                    // for provenance (hash, path)
  std::shared_ptr<FrozenModel> model;  // maps images to logits; loaded by the caller
};

struct EvaluateOptions {
  std::string data;     // prepared store
  int fold = 0;         // the cases evaluated
  std::string output;   // report folder
  data::TaskSpec task;  // tumor
  std::vector<EvaluatedModel> models;
  int64_t batch_size = 4;
  int workers = 2;
  int bins = 10;                   // calibration bins
  int bootstrap = 2000;            // resamples of the confidence intervals over cases
  uint64_t seed = 0;               // of the bootstrap
  bool save_predictions = false;   // output/predictions/<model>/<case>.nii.gz and <case>_probs.nii.gz
  bool surface = true;             // HD95, ASSD and NSD per case and region (core/surface_distance.h)
  double surface_tolerance = 2.0;  // mm, of NSD
  double band_mm = 2.0;            // half width of the band ECE's boundary band
  // The regions: the task's (data::dice_regions), or KiTS23's HEC regions (data::kits23_regions),
  // whose surface metrics add KiTS23's surfel surface Dice at its tolerances.
  data::RegionSet regions = data::RegionSet::kTask;
  // Where the models run: the CPU or this rank's GPU (dist::rank_device), resolved by the caller
  // that loaded the models onto it.
  c10::Device device = c10::kCPU;
  // Replace the report in `output` (without it, a report there is refused before any work; a
  // folder holding anything but a report is refused either way). The new report is staged
  // beside it and swapped in whole at the end, so a failed evaluation leaves the previous one.
  bool force = false;
  // Figures (eval/case_figures.h): the worst, median and best case per region, and these cases.
  bool figures = true;
  std::vector<std::string> show_cases;
  std::string cache;  // a teacher's soft-label cache of this store, shown in the figures where it holds the slice
  // Training curves of models that are kdseg checkpoints, from the metrics.jsonl beside them.
  bool curves = true;
};

// Collective over `comm`; rank 0 writes the report. Returns report.json's content (on every
// rank). Throws kdseg::Error for a missing fold, a model whose class count differs from the
// task, duplicate model names, a non-positive surface tolerance.
nlohmann::json evaluate(const EvaluateOptions& options, dist::Communicator& comm);

}  // namespace kdseg::eval
