// The report of `kdseg evaluate`: the schema of report.json, which eval/evaluate.cpp writes,
// and its rendering as a self-contained report.html and a per_case.csv. No LibTorch here, so a
// report can be re-rendered (and tested) without a model. The statistics over cases are in
// eval/statistics.h.
//
// report.json ("format": "kdseg report 1"); NaN is stored as null and shown as "–" (HTML) or
// an empty field (CSV). Every key below must be present.
//
//   format, tool_version, created (ISO 8601), data, store_hash   strings
//   fold                                                         integer
//   task: {name, classes, class_names: [string]}
//   regions: [string]                 the Dice regions, e.g. ["kidney", "tumor", "kidney+tumor"]
//   reference (optional): {label: "store" | "majority", raters: integer, soft: "rater mean"}
//                                     what Dice and calibration compare against
//   options: any JSON                 shown pretty-printed
//   figures (optional): [{region, pick, case, slice, file, columns: [string], rows: [string],
//     dice: {<model>: number}}]        PNGs under the report folder (eval/case_figures.h)
//   empty_slice_dice: number          slice Dice when prediction and label are both empty
//   models: [{
//     name, file, file_hash, description: string;  slices: integer (all cases together)
//     summary: {
//       dice: {<region>: {mean, ci95: [low, high], global, worst5}}
//       slice_dice: {<region>: number}
//       ece: {mean, ci95: [low, high]},  classwise_ece, nll, brier: number
//       surface (optional, with every model or none): {<region>: {hd95, assd, nsd: {mean,
//         ci95: [low, high]}}}; options then hold surface_tolerance_mm
//       soft_reference (optional, with every model or none; stores with raters): {threshold_dice:
//         {<region>: {mean, ci95}}, l1: {mean, ci95}, brier: {mean, ci95}} against the raters' mean
//         (SoftReferenceMetrics, core/metrics.h)
//     }
//     reliability: {bins, confidence: [bins], accuracy: [bins], count: [bins integers]}
//     cases: [{id, slices, dice: {<region>}, slice_dice: {<region>}, ece, classwise_ece, nll, brier,
//              and with surface: hd95, assd, nsd: {<region>};
//              and with soft_reference: soft_reference: {threshold_dice: {<region>}, l1, brier}}]
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

// model,case,slices,<region>_dice...,ece,classwise_ece,nll,brier: one line per model and case,
// numbers as written in report.json. Throws kdseg::Error when `report` does not follow the schema.
std::string render_per_case_csv(const nlohmann::json& report);

// Writes folder/report.json, folder/per_case.csv and folder/report.html, each atomically;
// creates the folder when needed. Renders everything before writing anything.
void write_report(const std::string& folder, const nlohmann::json& report);

}  // namespace kdseg::eval::report
