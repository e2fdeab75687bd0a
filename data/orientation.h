// Voxel orientation: how a volume's voxel axes map onto the closest canonical RAS orientation
// by axis permutations and flips only (nibabel's as_closest_canonical), and back. The forward
// map (canonical_reorientation, to_canonical_voxels, canonical_slice) takes a file's voxels to
// canonical ones; the inverse (affine_in_orientation, from_canonical, to_file_plane) takes
// canonical voxels back to a file's order, for writing them with the file's own affine.
// Every function here only permutes and flips: no value changes.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>

namespace kdseg::data {

// Row-major 4x4 map from voxel indices (i,j,k,1) to world coordinates (x,y,z,1), RAS+ in mm.
using Affine = std::array<double, 16>;

// Voxel spacing (column norms of the affine), in mm.
std::array<double, 3> voxel_spacing(const Affine& affine);

// For each voxel axis: the world axis (0 R, 1 A, 2 S) it points along most closely, and the
// direction (+1 or -1). Each world axis is taken once, so there are 48 orientations.
struct Orientation {
  std::array<int, 3> world_axis{};
  std::array<int, 3> direction{};
};
// Errors when a column of the affine is zero.
Orientation closest_orientation(const Affine& affine);

// How a volume's voxel axes become the canonical ones, computed from its affine and shape: the
// permutation and flips, without moving a voxel.
struct Reorientation {
  std::array<int64_t, 3> order{};  // canonical axis w is voxel axis order[w]
  std::array<bool, 3> flip{};      // canonical axis w runs against voxel axis order[w]
  std::array<int64_t, 3> shape{};  // the canonical shape
  Affine affine{};                 // the canonical affine: every voxel keeps its world position
};
Reorientation canonical_reorientation(const Affine& affine, const std::array<int64_t, 3>& shape);

// --- forward: a file's voxels to canonical ones ---

// `voxels` [I,J,K] (any view, any dtype) permuted and flipped into the canonical order
// (r.shape), contiguous.
at::Tensor to_canonical_voxels(const at::Tensor& voxels, const Reorientation& r);

// Canonical axial slice k [X,Y] (contiguous, the voxels' dtype) of `voxels` [I,J,K], which may
// be any view (read_nifti's kAsStored voxels): to_canonical_voxels(voxels, r).select(2, k).
at::Tensor canonical_slice(const at::Tensor& voxels, const Reorientation& r, int64_t k);

// --- inverse: canonical voxels back to a file's order ---

// The affine of voxels stored in orientation `o` whose canonical affine is `canonical` and
// canonical shape `canonical_shape`: canonical_reorientation(result, stored shape).affine is
// `canonical` again (and closest_orientation(result) is `o`, for an axis-aligned `canonical`).
Affine affine_in_orientation(const Orientation& o, const Affine& canonical,
                             const std::array<int64_t, 3>& canonical_shape);

// `canonical` [X,Y,Z] voxels back in the order of voxels stored in orientation `o` (stored axis
// v runs along canonical axis o.world_axis[v], against it where o.direction[v] < 0), contiguous.
at::Tensor from_canonical(const at::Tensor& canonical, const Orientation& o);

// The same for the orientation of a file whose affine is `original_affine` (and whose canonical
// shape `canonical` has): the inverse of to_canonical_voxels, so that the result can be written
// with `original_affine`.
at::Tensor from_canonical(const at::Tensor& canonical, const Affine& original_affine);

// The inverse of canonical_slice for a file whose k axis is its canonical axial one
// (r.order[2] == 2): canonical slice [X,Y] back as the file's plane [I,J] (a view).
at::Tensor to_file_plane(const at::Tensor& slice, const Reorientation& r);

}  // namespace kdseg::data
