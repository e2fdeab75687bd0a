// The report of `kdseg evaluate`: the schema of report.json, which eval/report_schema.h alone
// writes (from evaluate's typed results, eval/evaluation_results.h), and its rendering as a
// self-contained report.html and a per_case.csv. No LibTorch here, so a report can be re-rendered
// (and tested) without a model. The statistics over cases are in eval/statistics.h; the folder's
// file names in eval/report_files.h.
//
// report.json ("format": "kdseg report 1"); NaN is stored as null and shown as "–" (HTML) or
// an empty field (CSV). evaluate writes every key below (those marked optional where it says);
// the renderer requires those not marked optional, and store_options only where it is there.
//
//   format, tool_version, created (ISO 8601), data, store_hash   strings
//   store_options: any JSON           the store's prepare options as the store holds them
//   fold                                                         integer
//   task: {name, classes, class_names: [string]}
//   regions: [string]                 the Dice regions, e.g. ["kidney", "tumor", "kidney+tumor"]
//   reference (optional): {label: "store" | "majority", raters: integer, soft: "rater mean"}
//                                     what Dice and calibration compare against (soft with raters)
//   options: {device, batch_size, bins, bootstrap_resamples, bootstrap_seed, ranks,
//     save_predictions, surface_metrics, surface_tolerance_mm (null without surface metrics),
//     band_mm (band_ece's half width), band_definition ("footprint": core/metrics.h boundary_band), layout, slices
//     (evaluated); with --regions kits23 also regions: "kits23" and surface_dice_tolerance_mm: {<region>: mm} (null
//     without surface metrics)}; the renderer shows any JSON pretty-printed
//   figures (optional; not with --no-figures): [{region, pick, case, slice, file, columns:
//     [string], rows: [string], dice: {<model>: number}}]  PNGs under the report folder
//     (eval/case_figures.h)
//   rater_agreement (optional; stores that keep it): {measure, cases, pairwise_dice: {<region>:
//     {median, p10, p90, min, max, cases}}}: how much the raters of the evaluated fold's cases
//     agree with each other (/cases/rater_pairwise_dice, data/rater_agreement.h)
//   empty_slice_dice: number          slice Dice when prediction and label are both empty
//   models: [{
//     name, file, file_hash, description: string;  slices: integer (all cases together)
//     summary: {
//       dice: {<region>: {mean, ci95: [low, high], global, worst5}}
//       slice_dice: {<region>: number}
//       ece: {mean, ci95: [low, high]},  slice_ece, classwise_ece, ace, mce, nll, brier: number
//       parameters: the model's parameter count (0 where unknown); ms_per_slice: milliseconds of its
//         forward pass and softmax per slice on one rank, the first batch (set-up) not timed
//       band_ece: {mean, ci95}: the ECE of the pixels reaching within band_mm of the reference's boundary
//         (the raters' union with raters, else the label's foreground; boundary_band, core/metrics.h)
//       surface (optional, with every model or none): {<region>: {hd95, assd, nsd: {mean,
//         ci95: [low, high]}}}; options then hold surface_tolerance_mm; with --regions kits23
//         each region adds surface_dice: {mean, ci95} (surfels, core/surface_distance.h)
//       soft_reference (optional, with every model or none; stores with raters): {threshold_dice:
//         {<region>: {mean, ci95}}, l1, brier, rater_ece: {mean, ci95}} against the raters' mean
//         (SoftReferenceMetrics, core/metrics.h)
//     }
//     reliability: {bins, confidence: [bins], accuracy: [bins], count: [bins integers]}
//     cases: [{id, file_name (the stem of its files under predictions/<model>/: the id made safe,
//              and shortened with a hash when long, eval/report_files.h), slices, dice: {<region>}, slice_dice:
//              {<region>}, ece, slice_ece, classwise_ece, ace, mce, band_ece, nll, brier, and with surface:
//              hd95, assd, nsd: {<region>}
//              (and surface_dice:
//              {<region>} with --regions kits23);
//              and with soft_reference: soft_reference: {threshold_dice: {<region>}, l1, brier, rater_ece}}]
//            (the number of cases is the length of this array; there is no separate count)
//     curves (optional): {source, steps, loss, lr, validation: {steps, dice, ece}} of a kdseg
//       checkpoint's run (eval/training_curves.h)
//     paired (optional; every model but the first): {reference: the first model's name,
//       dice: {<region>: {cases, mean, ci95: [low, high], p_value, p_holm}}}: per-case Dice minus
//       the reference's over the cases where both are defined (paired_difference, eval/statistics.h);
//       p_holm (optional) is p_value adjusted over every comparison of the report (holm_adjusted)
//   }]
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <string>

namespace kdseg::eval::report {

// report.json's "format": evaluate writes it and the renderer accepts nothing else.
inline constexpr char kFormat[] = "kdseg report 1";

// One HTML page with no external resources (its Content-Security-Policy forbids every fetch):
// header; section#figures when report.json lists figures (each PNG of `folder`/figures/ embedded
// as a data: URI; without `folder` they show as missing); section#curves (one svg.curve per
// quantity, a path.curve per model with curves); table#comparison, table#slice-dice,
// table#soft-reference when the models carry metrics against the raters' mean, and table#surface
// when the models carry surface distances (the best value of each column has class "best"),
// table#paired when the models carry paired differences, one svg.reliability per model,
// svg#per-case-dice (the "tumor" region, else the first), table#per-case and
// section#configuration. A small script sets body[data-rendered="ok"] once the page has loaded
// with its charts in place, every figure decoded and every curve chart holding a path per model,
// and html[data-error] on a script error, console.error or blocked load.
// Throws kdseg::Error when `report` does not follow the schema above.
std::string render_html(const nlohmann::json& report, const std::string& folder = "");

// model,case,slices,<region>_dice (with surface distances each followed by <region>_hd95,
// <region>_assd, <region>_nsd)...,ece,classwise_ece,nll,brier (with soft_reference then
// <region>_threshold_dice...,soft_l1,soft_brier): one line per model and case, numbers as written
// in report.json. Throws kdseg::Error when `report` does not follow the schema.
std::string render_per_case_csv(const nlohmann::json& report);

// Writes folder/report.json, folder/per_case.csv and folder/report.html, each atomically;
// creates the folder when needed. Renders everything before writing anything.
void write_report(const std::string& folder, const nlohmann::json& report);

}  // namespace kdseg::eval::report
