// The report folder of `kdseg evaluate --output DIR` (docs/formats.md): the names of its files,
// spelled here only. Their contents: report.json, per_case.csv and report.html in eval/report.h,
// the figures in eval/case_figures.h, the predictions in eval/case_collector.h.
//
//   DIR/report.json                            every number; the folder's marker (a folder that
//                                              holds one is a report, which --force may replace)
//   DIR/per_case.csv
//   DIR/report.html
//   DIR/figures/<region>-<pick>-<case>.png     with figures
//   DIR/predictions/<model>/<case>.nii.gz      with --save-predictions, and <case>_probs.nii.gz
#pragma once

#include <array>
#include <cctype>
#include <string>

#include "core/hash.h"

namespace kdseg::eval {

inline constexpr char kReportJsonFile[] = "report.json";
inline constexpr char kPerCaseCsvFile[] = "per_case.csv";
inline constexpr char kReportHtmlFile[] = "report.html";
inline constexpr char kFiguresFolder[] = "figures";
inline constexpr char kPredictionsFolder[] = "predictions";

// The longest stem of a file named after a case or a model. A name must stay within NAME_MAX
// (255 bytes) with its suffixes ("_probs.nii.gz") and, for figures, the region and pick around
// it; case ids of nested folders reach 250 characters ("File name too long" otherwise).
inline constexpr size_t kMaxFileStem = 120;

// `stem` when it is at most kMaxFileStem bytes, else its first kMaxFileStem - 17 bytes, '-' and
// the hash of `full` (the name before any character was replaced): still readable, the same on
// every run and rank, and two long names that share the prefix still differ. report.json keeps
// each case's id next to its file names, so a shortened name is never ambiguous.
inline std::string bounded_file_stem(const std::string& stem, const std::string& full) {
  if (stem.size() <= kMaxFileStem) return stem;
  return stem.substr(0, kMaxFileStem - 17) + "-" + hex64(fnv1a(kFnvOffset, full.data(), full.size()));
}

// `name` with every character but letters, digits, '-', '_' and '.' replaced by '_', and bounded
// as above: a model's folder under predictions/ and a case's prediction files (QUBIQ case ids
// hold slashes).
inline std::string safe_file_name(const std::string& name) {
  std::string out;
  for (char ch : name) {
    out += std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_' || ch == '.' ? ch : '_';
  }
  return bounded_file_stem(out, name);
}

// A case's files in predictions/<model>/: its predicted labels and its foreground probability.
inline std::array<std::string, 2> prediction_files(const std::string& case_id) {
  const std::string name = safe_file_name(case_id);
  return {name + ".nii.gz", name + "_probs.nii.gz"};
}

}  // namespace kdseg::eval
