// The surface rater model of `kdseg synth` (--rater-model kits23 or high), used by synth.cpp.
//
// Every case has the same field of view in millimetres (320 x 320 mm in-plane, 160 mm along the
// slices), so that voxel sizes follow from --size and --slices and every structure, and every
// disagreement, has the same size in millimetres whatever the voxel size.
//
// Latent anatomy: a body, two kidneys, one or two tumours on a kidney (some exophytic), and in
// half the cases one to three cysts; each a perturbed ellipsoid given by its signed distance d(x)
// in mm (positive inside).
//
// Ambiguity: each structure has a smooth field a(x) > 0 (log-normal, mean 1, correlation 20 mm).
// The image shows it and nothing else of the raters: the structure's boundary in the CT is a
// logistic ramp of scale (partial volume of the voxel) + w a(x), faint where a is large, and a
// tumour's contrast fades there too.
//
// Raters: rater j marks structure s where d(x) + delta_js(x) > 0 (thresholded at the voxel centre,
// so the expected disagreement in mm does not depend on the voxel size), with
//     delta_js(x) = A_kind (r_s / r_kind)^0.45 c_kind (b_j + a_s(x) g_js(x)),
// A_kind the calibrated amplitude of the structure's kind (mm), r_s the structure's radius against
// its kind's reference (37, 20, 9 mm: KiTS23's disagreement in mm grows so with size), c_kind a
// per-case factor (log-normal, one per kind),
// b_j the rater's bias (an under- or over-segmenter, shared by its structures) and g_js the
// rater's own smooth unit-variance field (correlation 25 mm) along the structure's surface. A
// lesion below the regime's size leaves the rater's masks with the regime's probability
// (structural disagreement). A kidney's mask covers the lesions its rater drew, as KiTS's kidney
// instances do. The raters come from their own streams (one per rater), so the image is the same
// for every number of raters, and the first raters do not change when raters are added.
//
// The aggregated label is the raters' majority as KiTS aggregates it: a voxel is in an instance
// when more than half of the raters mark it, painted kidney, then cyst, then tumour.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstddef>
#include <vector>

#include "data/synth.h"

namespace kdseg::data::synth {

enum class StructureKind { kOrgan, kTumour, kCyst };

// A structure's name in the rater files: kidney_instance-I, tumor_instance-I, cyst_instance-I.
struct StructureName {
  StructureKind kind;
  int instance;  // from 1 within its kind
  size_t host;   // index of the host organ; an organ's own index
};

struct SurfaceCase {
  at::Tensor hu;                               // canonical [X,Y,Z] float64, rounded and clipped to [-1024, 3071]
  at::Tensor label;                            // canonical [X,Y,Z] int64, the raters' aggregation (see above)
  std::vector<StructureName> structures;       // organs, then tumours, then cysts
  std::vector<std::vector<at::Tensor>> masks;  // [rater][structure] canonical uint8
  std::array<double, 3> spacing{};             // mm
};

// The calibrations of the two regimes (docs/benchmarks.md "Synthetic raters" gives the fit).
struct SurfaceCalibration {
  std::array<double, 3> amplitude;       // mm, per StructureKind
  std::array<double, 3> case_spread;     // log-sd of the per-case factor c, per StructureKind
  double bias;                           // sd of b_j
  std::array<double, 3> optional_below;  // mm: lesions of a smaller radius may be left out (0: never)
  double keep_optional;                  // probability that a rater draws such a lesion
};
const SurfaceCalibration& surface_calibration(RaterModel model);

// Case `index` of a dataset made with `options` (rater_model kits23 or high, raters >= 1).
SurfaceCase make_surface_case(const SynthOptions& options, int index);

}  // namespace kdseg::data::synth
