// Several raters per case: where a layout keeps their files, how one rater's label map is built
// from them, and what training and evaluation make of R label maps: the majority vote, one rater
// drawn at random, the uniform mean and the mean weighted by each rater's agreement with the
// majority (the hard and soft multi-rater labels of the DML paper).
//
//   KiTS23  case_XXXXX/instances/{kidney,tumor,cyst}_instance-I_annotation-J.nii[.gz]
//   KiTS21  case_XXXXX/segmentations/, the same names
//           Rater J's map: every instance's annotation J, kidney first (1), then cyst (3), then
//           tumour (2) over both, as the aggregated segmentation ranks them. The majority is KiTS's
//           own aggregation, per instance (read_rater_maps), not a vote of these maps.
//   QUBIQ   caseNN/taskTT_segRR.nii[.gz]: rater RR's mask of task TT, nonzero -> 1.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/enum_names.h"
#include "data/layout.h"
#include "data/nifti.h"

namespace kdseg::data {

// Whether `prepare` reads raters: when their files exist (auto), or never (none).
enum class RaterSearch { kAuto, kNone };
// --raters: parse_enum<data::RaterSearch>, enum_name.
inline constexpr EnumName<RaterSearch> kRaterSearchNames[] = {
    {RaterSearch::kAuto, "auto", "when the files exist"},
    {RaterSearch::kNone, "none", ""},
};
constexpr EnumNames<RaterSearch> enum_names(EnumTag<RaterSearch>) { return kRaterSearchNames; }

// One rater's files in the order they are painted: each file's nonzero voxels take `value`.
struct RaterPart {
  std::string file;
  uint8_t value = 1;
};
struct RaterFiles {
  std::vector<std::vector<RaterPart>> raters;  // [rater][part]; empty when the case has none
  std::string problem;                         // why the raters cannot be used, naming a file
  // Part p of every rater is the same structure instance, annotated once per rater (KiTS): the
  // majority is voted per instance. Otherwise (QUBIQ) it is the flat vote of the raters' maps.
  bool instances = false;
};

// The raters of a case in its layout (LiTS and KiTS19 have none). A KiTS instance that lacks an
// annotation another instance has, or a QUBIQ rater number missing from 1..R, is a problem that
// names the missing file; so is one annotation under two file names (.nii beside .nii.gz,
// "seg4" beside "seg04"), naming both. A number too large in a file's name is an error naming it.
RaterFiles find_rater_files(const CaseFiles& files, Layout layout, int qubiq_task = 1);

// Every rater's label map [R,I,J,K] uint8 on `image`'s voxels (the file's orientation). Errors
// name a file whose shape or affine differs from the image's, or that holds NaN or Inf.
at::Tensor read_raters(const RaterFiles& files, const Volume& image);

// The raters' label maps (as read_raters) and their majority [I,J,K] uint8, each file read once.
//   files.instances (KiTS21/23): KiTS's own aggregation (kits23/annotation/import.py, aggregate):
//     an instance's voxel is on when more than half of its R annotations mark it (2 of 3); a
//     structure is the union of its instances; painted kidney (1), cyst (3), tumour (2), later
//     over earlier. Kidney masks include the masses, so a voxel that one rater calls kidney and
//     another tumour is kidney; two instances' votes never add up.
//   otherwise: majority_label of the maps (`values` label values), the flat vote.
// Errors as read_raters.
struct RaterMaps {
  at::Tensor raters;    // [R,I,J,K] uint8
  at::Tensor majority;  // [I,J,K] uint8
};
RaterMaps read_rater_maps(const RaterFiles& files, const Volume& image, int64_t values);

// Label maps [R,*] (uint8 label values) -> per-value majority [*] uint8: the value with the most
// votes, a tie going to the lowest value (so that a binary foreground needs floor(R/2)+1 votes).
at::Tensor majority_label(const at::Tensor& raters, int64_t values);

// Each rater's Dice against the majority (majority_label) over all of `raters` [R,*] (a case),
// averaged over the foreground values either holds; 1 when neither holds any or the Dice is 0, as
// the paper's code weights raters. The weights of `weighted`.
std::vector<double> rater_agreement(const at::Tensor& raters, int64_t values);
// The same against a given majority [*] (read_rater_maps').
std::vector<double> rater_agreement(const at::Tensor& raters, const at::Tensor& majority, int64_t values);

// --- the label kinds, on class maps [R,*] int64 (the task's classes; ignore_index votes for none)

// Votes per class [C,*] float32 (a rater whose class is ignore_index votes for none).
at::Tensor class_votes(const at::Tensor& classes, int64_t num_classes);
// The class with the most votes (ties to the lowest class); ignore_index where nobody voted.
at::Tensor majority_class(const at::Tensor& votes, int64_t ignore_index);
// sum_j w_j onehot(classes_j) / sum_j w_j [C,*] (uniform weights: the rater mean); 0 where
// nobody voted.
at::Tensor weighted_mean(const at::Tensor& classes, const std::vector<double>& weights, int64_t num_classes,
                         int64_t ignore_index);
// The rater a sample uses in `random`: drawn from the sample's seed (data/sampler.h), so the same
// on any number of ranks and new every epoch.
int64_t random_rater(uint64_t sample_seed, int64_t raters);

}  // namespace kdseg::data
