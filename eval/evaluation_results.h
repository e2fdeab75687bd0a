// What `kdseg evaluate` finds, typed: the evaluator (eval/evaluate.cpp) measures each model's
// cases, eval/evaluation_statistics.h summarises and compares them, eval/case_figures.h draws
// cases picked from them, and eval/report_schema.h alone turns the whole into report.json (the
// schema, key by key, in eval/report.h). NaN marks a value that is undefined for its case (written
// as null). No LibTorch here. Internal to eval/.
#pragma once

#include <cmath>
#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "eval/statistics.h"

namespace kdseg::eval::detail {

// The surface distances per case and region, in this order (report.json's hd95, assd, nsd).
inline constexpr size_t kSurfaceMetricCount = 3;

// A model's numbers against the raters' mean (SoftReferenceMetrics, core/metrics.h), for a store
// with raters.
struct SoftReferenceCases {
  std::vector<std::vector<double>> threshold_dice;  // [region][case]
  std::vector<double> l1, brier;                    // [case]
  std::vector<double> rater_ece;                    // [case]
};

// One model's numbers per case, indexed by the store's case.
struct CaseValues {
  std::vector<int64_t> slices;  // [case]; 0 for a case outside the fold (or with every voxel ignored)
  std::vector<std::vector<double>> dice, slice_dice;              // [region][case]
  std::vector<double> ece, slice_ece, classwise_ece, nll, brier;  // [case]
  std::vector<double> ace, mce;                                   // [case], on the ECE's bins
  std::vector<double> band_ece;  // [case] within EvaluationSettings::band_mm of the reference's boundary
  // [metric][region][case] (kSurfaceMetricCount metrics); empty without surface metrics. A case
  // outside the fold holds 0, not NaN.
  std::vector<std::vector<std::vector<double>>> surface;
  // [region][case] the surfel surface Dice (core/surface_distance.h, KiTS23's) with --regions
  // kits23 and surface metrics; empty otherwise. NaN for a region without a surfel tolerance.
  std::vector<std::vector<double>> surface_dice;
  std::optional<SoftReferenceCases> soft;

  bool evaluated(size_t c) const { return slices[c] != 0; }
  bool has_surface() const { return !surface.empty(); }
};

// The mean over cases and its percentile-bootstrap interval (eval/statistics.h).
struct Estimate {
  double mean = 0;
  Interval ci95{0, 0};
};

struct RegionDiceSummary {
  Estimate over_cases;
  double global = 0;  // over every voxel of the fold pooled
  double worst5 = 0;  // the mean of the lowest 5% of cases
};

struct SoftReferenceSummary {
  std::vector<Estimate> threshold_dice;  // [region]
  Estimate l1, brier, rater_ece;
};

// A model's numbers over the fold's cases.
struct ModelSummary {
  std::vector<RegionDiceSummary> dice;  // [region]
  std::vector<double> slice_dice;       // [region], means over cases
  Estimate ece;
  double slice_ece = 0, classwise_ece = 0, nll = 0, brier = 0;  // means over cases
  double ace = 0, mce = 0;                                      // means over cases
  Estimate band_ece;
  std::vector<std::array<Estimate, kSurfaceMetricCount>> surface;  // [region]; empty without surface metrics
  std::vector<Estimate> surface_dice;                              // [region]; as CaseValues::surface_dice
  std::optional<SoftReferenceSummary> soft;
};

// The calibration bins over every voxel of the fold.
struct ReliabilityBins {
  int bins = 0;
  std::vector<double> confidence, accuracy;  // per bin; NaN for an empty bin
  std::vector<int64_t> count;
};

// A model against the first one: per region, the per-case Dice difference (paired_difference)
// and its p-value adjusted over every comparison of the report (holm_adjusted).
struct PairedComparison {
  std::string reference;               // the first model's name
  std::vector<PairedDifference> dice;  // [region]
  std::vector<double> p_holm;          // [region]
};

struct ModelResult {
  std::string name;
  std::string file;       // absolute; empty for a model given in memory
  std::string file_hash;  // empty without a file
  std::string description;
  int64_t slices = 0;                  // all cases together
  int64_t parameters = 0;              // 0 where the model does not say
  double ms_per_slice = std::nan("");  // the forward pass and softmax, per slice on one rank
  CaseValues cases;
  ModelSummary summary;
  ReliabilityBins reliability;
  std::optional<PairedComparison> paired;  // every model but the first
  nlohmann::json curves;                   // eval/training_curves.h; null without
};

// A figure of a case (eval/case_figures.h).
struct CaseFigure {
  std::string region;
  std::string pick;  // worst | median | best | asked
  std::string case_id;
  int64_t slice = 0;  // axial index
  std::string file;   // relative to the report folder
  std::vector<std::string> columns, rows;
  std::vector<std::pair<std::string, double>> dice;  // (model, the case's Dice) for each model that evaluated it
};

// How evaluate ran (report.json's "options").
struct EvaluationSettings {
  std::string device;
  int64_t batch_size = 0;
  int bins = 0;
  int bootstrap = 0;
  uint64_t seed = 0;
  int ranks = 1;
  bool save_predictions = false;
  bool surface = false;
  double surface_tolerance = 0;  // mm, with surface metrics
  std::string layout;
  int64_t slices = 0;            // evaluated
  std::string regions = "task";  // data::RegionSet's name
  // (region, tolerance in mm) of the surfel surface Dice, for the regions that have one.
  std::vector<std::pair<std::string, double>> surface_dice_tolerance;
  double band_mm = 2.0;  // half width of band_ece's band
};

struct EvaluationResults {
  std::string tool_version, created, data, store_hash;
  nlohmann::json store_options;  // the store's prepare options, as it holds them
  int fold = 0;
  std::string task;
  int64_t classes = 0;
  std::vector<std::string> class_names;
  std::vector<std::string> regions;   // the Dice regions
  std::vector<std::string> case_ids;  // the store's, the index of CaseValues
  int64_t raters = 0;                 // 0: against the store's label; else the raters' majority (and their mean)
  // How much the raters of the evaluated cases agree with each other (report.json's
  // rater_agreement), null for stores without it.
  nlohmann::json rater_agreement;
  EvaluationSettings settings;
  double empty_slice_dice = 1;
  std::vector<ModelResult> models;
  std::optional<std::vector<CaseFigure>> figures;
};

}  // namespace kdseg::eval::detail
