// Surface distances between a predicted and a reference binary mask on a 3-D grid with
// anisotropic spacing: the boundary metrics of segmentation papers (HD95, ASSD, NSD).
//
// Definitions (docs/formats.md):
// - The surface of a mask is its voxels with a 6-neighbour outside the mask; outside the grid
//   counts as outside, so a mask touching the grid's edge has a surface there.
// - d(p, S) is the Euclidean distance in mm between voxel centres, from p to the nearest voxel
//   of surface S. The directed distances run from each surface voxel of one mask to the other
//   mask's surface.
// - HD95 = the larger of the two directed 95th percentiles (linear interpolation between order
//   statistics, numpy's default), as MONAI's compute_hausdorff_distance(percentile=95).
// - ASSD = the mean of all directed distances of both surfaces together.
// - NSD (normalised surface Dice, Nikolov et al. 2021) at tolerance t mm = the fraction of the
//   surface voxels of both masks that lie within t of the other surface (voxel counts, as
//   MONAI's compute_surface_dice).
// - Both masks empty: HD95 = ASSD = 0, NSD = 1 (the same convention as Dice = 1). Exactly one
//   empty: HD95 = ASSD = the grid's diagonal in mm (the largest distance the grid allows) and
//   NSD = 0, so a missed or spurious structure is never left out of a mean.
//
// The surfel-based surface Dice below is another definition, the one KiTS23's evaluation uses.
//
// The distances come from exact Euclidean distance transforms (Felzenszwalb & Huttenlocher's
// separable lower envelope of parabolas) over the bounding box of the two surfaces, so the cost
// grows with the structure, not with the grid: 8 bytes per voxel of that box (a prediction that
// spans a whole 600x512x512 grid needs 1.3 GB). No LibTorch here.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

namespace kdseg {

struct SurfaceMetrics {
  double hd95 = 0;
  double assd = 0;
  double nsd = 1;
  int64_t prediction_surface = 0;  // surface voxels of each mask
  int64_t reference_surface = 0;
};

// `prediction` and `reference` hold shape[0] * shape[1] * shape[2] bytes in C order, non-zero
// inside the mask; spacing[i] (mm, > 0) is the distance between neighbours along axis i.
// Throws kdseg::Error for a non-positive size, spacing or tolerance.
SurfaceMetrics surface_metrics(const uint8_t* prediction, const uint8_t* reference, const std::array<int64_t, 3>& shape,
                               const std::array<double, 3>& spacing, double tolerance_mm);

// A mask's surface: its voxels [i,j,k] with a 6-neighbour outside it (or outside the grid).
using Surface = std::vector<std::array<int64_t, 3>>;
Surface surface_voxels(const uint8_t* mask, const std::array<int64_t, 3>& shape);

// surface_metrics from the two masks' surfaces, so that a caller need not hold both masks (or
// either) while the distances are computed.
SurfaceMetrics surface_metrics(const Surface& prediction, const Surface& reference, const std::array<int64_t, 3>& shape,
                               const std::array<double, 3>& spacing, double tolerance_mm);

// --- surfels: the surface Dice of DeepMind's surface-distance, as KiTS23 computes it -----------
//
// Nikolov et al.'s own definition (github.com/google-deepmind/surface-distance,
// compute_surface_distances and compute_surface_dice_at_tolerance), which KiTS23's evaluation
// calls per HEC region:
// - The surface lives on the corners between voxels: corner c = (i,j,k), 0 <= c <= shape, touches
//   the 2x2x2 voxels c - 1 .. c (outside the grid counts as outside). Its neighbourhood code has
//   bit 7 - (4a + 2b + c') set when voxel (i-1+a, j-1+b, k-1+c') is in the mask; a corner whose
//   code is neither 0 nor 255 is a surfel.
// - A surfel's area (mm^2) is that of the marching-cubes triangles of its code, from a fixed
//   table of their normals scaled by the spacing (area of normal n: |(n0 s1 s2, n1 s0 s2,
//   n2 s0 s1)|), so a lone voxel of spacing s has area sqrt((s1 s2)^2 + (s0 s2)^2 + (s0 s1)^2).
// - Distances run between corner positions (Euclidean, mm), from each surfel of one mask to the
//   nearest surfel of the other.
// - Surface Dice at t mm = (area of both masks' surfels within t of the other surface, distance
//   <= t) / (area of all surfels of both).
// - Both masks empty: 1; exactly one: 0 (KiTS23's compute_metrics_for_label).
// It differs from `nsd` above (voxel-centre surfaces, counted not weighed), most where the
// spacing is anisotropic.
struct Surfels {
  std::vector<std::array<int64_t, 3>> corners;
  std::vector<double> areas;  // mm^2, per corner
};
Surfels surfels(const uint8_t* mask, const std::array<int64_t, 3>& shape, const std::array<double, 3>& spacing);

// The area (mm^2) of the surfels of neighbourhood code `code` (0-255) at `spacing`.
double surfel_area(int code, const std::array<double, 3>& spacing);

// The surface Dice of two masks' surfels at `tolerance_mm` (> 0) on a grid of `shape` and
// `spacing` (mm, > 0; the surfels' corners range over 0..shape). Throws kdseg::Error otherwise.
double surfel_surface_dice(const Surfels& prediction, const Surfels& reference, const std::array<int64_t, 3>& shape,
                           const std::array<double, 3>& spacing, double tolerance_mm);
double surfel_surface_dice(const uint8_t* prediction, const uint8_t* reference, const std::array<int64_t, 3>& shape,
                           const std::array<double, 3>& spacing, double tolerance_mm);

}  // namespace kdseg
