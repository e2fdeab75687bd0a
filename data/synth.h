// Synthetic CT data in the LiTS, KiTS and QUBIQ layouts, written as real NIfTI files: air, a body
// outline, an organ with realistic HU (liver, or two kidneys), and tumours as lower-density
// blobs whose boundaries are soft (partial-volume blur plus noise), so that the label at the
// boundary is genuinely ambiguous. Orientations (axis permutations and flips), datatypes and,
// for LiTS, .nii/.nii.gz vary across cases. Deterministic from the seed.
//
// Raters (kits23 and qubiq, --raters R): every structure (organ, tumour, cyst) keeps its soft
// occupancy, and rater j thresholds it at its own level: a per-rater level of 0.5 +- 0.08 with a
// per-structure jitter of +- 0.03 (all within [0.3, 0.7]); with R >= 3 one rater (drawn) is an
// under-segmenter (level 0.62-0.68) and another an over-segmenter (0.32-0.38); each rater misses
// each small tumour (radius under 0.35 of its kidney's) with probability 0.3. Rater draws come
// from their own stream (derive_seed(seed, {case, "rater"})), so the image and the aggregated
// label are the same for every R.
//   kits23: case_XXXXX/instances/{kidney,tumor,cyst}_instance-I_annotation-J.nii.gz, binary
//           uint8 in the image's orientation; a kidney's mask covers the lesions its rater drew
//           inside it. segmentation.nii.gz stays the aggregated label of R = 0 (every structure
//           at 0.5, painted kidney, cyst, tumour), not the raters' majority.
//   qubiq:  caseNN/image.nii.gz (the KiTS19 body: two kidneys and their tumours) and
//           caseNN/task01_segRR.nii.gz, rater RR's binary uint8 mask of the kidneys (lesions
//           included, as QUBIQ's kidney task); no aggregated label.
#pragma once

#include <cstdint>
#include <string>

#include "core/enum_names.h"
#include "data/layout.h"

namespace kdseg::data {

// How the synthetic raters disagree (--rater-model).
//   threshold  the first model (above): each rater thresholds the visible soft occupancy at its own
//              level. Its disagreement is about one voxel wide at every size.
//   kits23     the surface model (data/synth_surface.h, docs/benchmarks.md "Synthetic raters"):
//              geometry in millimetres, each rater's boundary displaced by its own smooth field
//              and bias, scaled by an ambiguity the image shows only as a faint boundary, small
//              lesions some raters leave out; calibrated to KiTS23's measured agreement.
//   high       the surface model at a declared high disagreement (target pairwise Dice 0.75-0.90,
//              as QUBIQ's tasks), with lesions the raters disagree on including.
enum class RaterModel { kThreshold, kKits23, kHigh };
inline constexpr EnumName<RaterModel> kRaterModelNames[] = {
    {RaterModel::kThreshold, "threshold", "each rater thresholds the visible ramp (the first model)"},
    {RaterModel::kKits23, "kits23", "surface model calibrated to KiTS23's agreement"},
    {RaterModel::kHigh, "high", "surface model at high disagreement (pairwise Dice 0.75-0.90)"},
};
constexpr EnumNames<RaterModel> enum_names(EnumTag<RaterModel>) { return kRaterModelNames; }

struct SynthOptions {
  Layout layout = Layout::kLits;
  int cases = 4;
  int64_t size = 64;    // in-plane voxels
  int64_t slices = 32;  // axial slices
  uint64_t seed = 0;
  bool force = false;  // write into a folder that holds other files
  int raters = 0;      // rater files per case (kits23, qubiq; qubiq needs 1 or more); 0: none
  RaterModel rater_model = RaterModel::kThreshold;  // kits23 and high need raters
};

struct SynthSummary {
  int cases = 0;
  int64_t tumour_voxels = 0;
  int64_t organ_voxels = 0;
};

// Writes the dataset into `dir` (created if needed) and records the options in
// dir/.kdseg-synth.json first (raters only when > 0, so that older markers still match). A
// folder that holds anything else is refused (it may be real data) unless `force`; a folder
// written before with the same options is rewritten with the same files, so a rerun of an
// interrupted synth completes it. Throws kdseg::Error naming the folder, or naming --raters when
// the layout takes no raters (lits, kits19) or needs them (qubiq).
SynthSummary write_synthetic_dataset(const std::string& dir, const SynthOptions& options);

// A simulated CT for real annotations (kdseg synth --from-annotations): for each KiTS-layout case
// folder under `annotations` that has instance annotations and no imaging.nii.gz, writes
// dir/<case>/imaging.nii.gz in the annotations' exact grid (shape, affine, voxel order) and
// copies its instances/ and segmentation.nii.gz beside it (the sources are never modified; a
// case without segmentation.nii.gz gets KiTS's aggregation of its annotations, read_rater_maps),
// so that `prepare --layout kits23` reads the folder with the real raters' disagreement.
//
// The image is made from the raters' mean occupancy of each structure m_s (the fraction of
// raters marking the voxel): soft tissue 40 HU, kidney 140-180 HU, tumour 40-70 HU darker, cyst
// 0-20 HU, mixed by m_s, so that a boundary is as sharp as the raters' agreement on it; then the
// scanner's in-plane point spread (a [1,2,1]/4 blur along both in-plane axes) and noise of 12 HU.
// Deterministic from the seed and the case's id. A case whose instances are incomplete (an
// annotation missing, grids that differ) is an error naming the file, before anything is written.
struct AnnotationSynthOptions {
  uint64_t seed = 0;
  bool force = false;  // write into a folder that holds other files
};
struct AnnotationSynthSummary {
  int cases = 0;           // written
  int already_imaged = 0;  // case folders with an imaging.nii.gz of their own: left alone
  int raters = 0;          // per case (the largest)
};
AnnotationSynthSummary write_dataset_from_annotations(const std::string& annotations, const std::string& dir,
                                                      const AnnotationSynthOptions& options);

}  // namespace kdseg::data
