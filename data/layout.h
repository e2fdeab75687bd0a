// The on-disk layouts of the LiTS and KiTS downloads, and the cases found in them.
//   lits:   volume-N.nii[.gz] with segmentation-N.nii[.gz], in any folder depth (the official
//           batches); labels 0 background, 1 liver, 2 tumour.
//   kits19: case_XXXXX/imaging.nii.gz with segmentation.nii.gz; labels 0, 1 kidney, 2 tumour.
//   kits23: the same files (KiTS21/23); labels 0, 1 kidney, 2 tumour, 3 cyst. KiTS21's aggregated
//           aggregated_MAJ_seg.nii.gz stands in for segmentation.nii.gz. Several raters: KiTS23's
//           instances/{kidney,tumor,cyst}_instance-I_annotation-J.nii.gz, KiTS21's segmentations/
//           (data/raters.h).
//   qubiq:  <folder>/caseNN/image.nii.gz with taskTT_segRR.nii.gz, one binary mask per rater RR
//           (QUBIQ); labels 0, 1 the task's structure. The stored label is the raters' majority.
#pragma once

#include <string>
#include <vector>

#include "core/enum_names.h"

namespace kdseg::data {

enum class Layout { kLits, kKits19, kKits23, kQubiq };
// --layout, and the store's "layout" attribute: parse_enum<data::Layout>, enum_name.
inline constexpr EnumName<Layout> kLayoutNames[] = {
    {Layout::kLits, "lits", ""},         {Layout::kKits19, "kits19", ""}, {Layout::kKits23, "kits23", ""},
    {Layout::kKits23, "kits21", kAlias}, {Layout::kQubiq, "qubiq", ""},
};
constexpr EnumNames<Layout> enum_names(EnumTag<Layout>) { return kLayoutNames; }

// The label values a layout's segmentations may hold.
std::vector<int> label_values(Layout layout);
// The label value of the tumour, and of the organ.
int tumour_label(Layout layout);
int organ_label(Layout layout);

// LiTS when a volume-N file exists under `dir`, KiTS (as kits23, whose labels include KiTS19's)
// when a case_XXXXX/imaging file does, QUBIQ when a caseNN/image file does; otherwise an error
// naming what was looked for.
Layout detect_layout(const std::string& dir);

struct CaseFiles {
  std::string id;       // "volume-12" / "case_00012"
  std::string image;    // path
  std::string label;    // path; empty when the partner file is missing, and for QUBIQ (raters only)
  std::string problem;  // why the case cannot be used (missing partner), empty when fine
};

// The number `digits` (\d+ from the name of `path`: a case, instance, annotation, task or rater
// number) as an int; an error naming `path` when it is too large ("case_99999999999").
int number_in_name(const std::string& digits, const std::string& path);

// The cases under `dir`, sorted by their number (QUBIQ: by folder, then number). A volume without segmentation (or the
// reverse) is returned with `problem` set, so that --skip-bad-cases can report and skip it. Two
// names of one case ("case_00003" and "case_3", "case03" and "case3" in one folder, an image or
// segmentation as both .nii and .nii.gz) are an error naming both, as is a number too large.
std::vector<CaseFiles> find_cases(const std::string& dir, Layout layout);

}  // namespace kdseg::data
