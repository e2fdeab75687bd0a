// NIfTI-1 volumes through niftilib: reading (.nii and .nii.gz; uint8, int8, int16, uint16,
// int32, float32, float64; scl_slope/scl_inter applied), writing, and reorientation to the
// closest canonical RAS orientation by axis permutations and flips only (nibabel's
// as_closest_canonical).
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <memory>
#include <string>

namespace kdseg::data {

// Row-major 4x4 map from voxel indices (i,j,k,1) to world coordinates (x,y,z,1), RAS+ in mm.
using Affine = std::array<double, 16>;

struct Volume {
  // [I,J,K] float32, indexed as nibabel's get_fdata(): voxels[i][j][k].
  at::Tensor voxels;
  Affine affine{};
  std::string path;
  std::string datatype;  // the file's datatype: "int16", "float32", ...
};

// The voxels read_nifti returns: float32 [I,J,K] contiguous, or the values as the file stores
// them ([I,J,K] as a view of the file's [K,J,I] order, no copy; uint16 widened to int32, and
// float32 when scl_slope/scl_inter scale them), which keeps a CT at 2 bytes a voxel.
enum class VoxelType { kFloat32, kAsStored };

// Reads a 3D volume. The affine is the sform when sform_code > 0, else the qform. Errors name
// the file: unreadable or truncated, 4D, unsupported datatype, NaN or Inf values (when
// `require_finite`). A .nii.gz is inflated whole (libdeflate) into the voxels' own buffer.
Volume read_nifti(const std::string& path, bool require_finite = true, VoxelType type = VoxelType::kFloat32);

// Writes `voxels` [I,J,K] (any real dtype) as `datatype` ("uint8", "int8", "int16", "uint16",
// "int32", "float32" or "float64"), with the affine as both sform and qform (code 1), and
// optional scl_slope/scl_inter (stored values are (value - inter) / slope). The extension
// chooses .nii or .nii.gz. Atomic: a crash never leaves a partial file.
void write_nifti(const std::string& path, const at::Tensor& voxels, const Affine& affine, const std::string& datatype,
                 double slope = 1.0, double inter = 0.0);

// Writes a NIfTI-1 volume of shape [I,J,K] one k-plane at a time, without holding the volume:
// the header, then each plane in order. A .nii.gz is written as one gzip member per plane,
// compressed by libdeflate on `threads` threads; concatenated members are one gzip file to zlib,
// nibabel, ITK and niftilib. Atomic: the file appears when close() succeeds; a failed write (a
// full disk) names the file, and the destructor of an unclosed writer leaves nothing behind.
class NiftiPlaneWriter {
 public:
  NiftiPlaneWriter(const std::string& path, const std::array<int64_t, 3>& shape, const Affine& affine,
                   const std::string& datatype, int threads = 1);
  ~NiftiPlaneWriter();
  NiftiPlaneWriter(const NiftiPlaneWriter&) = delete;
  NiftiPlaneWriter& operator=(const NiftiPlaneWriter&) = delete;

  // The next plane [I,J] (any real dtype), converted to the datatype (rounded and saturated for
  // integer types).
  void write(const at::Tensor& plane);
  void close();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// For each voxel axis: the world axis (0 R, 1 A, 2 S) it points along most closely, and the
// direction (+1 or -1).
struct Orientation {
  std::array<int, 3> world_axis{};
  std::array<int, 3> direction{};
};
Orientation closest_orientation(const Affine& affine);

// The same volume with voxel axes permuted and flipped so that they run along R, A and S, and
// the affine adjusted so that every voxel keeps its world position.
Volume to_canonical(const Volume& volume);

// How a volume's voxel axes become the canonical ones, computed from its affine and shape: the
// same permutation and flips as to_canonical, without moving a voxel.
struct Reorientation {
  std::array<int64_t, 3> order{};  // canonical axis w is voxel axis order[w]
  std::array<bool, 3> flip{};      // canonical axis w runs against voxel axis order[w]
  std::array<int64_t, 3> shape{};  // the canonical shape
  Affine affine{};                 // the canonical affine
};
Reorientation canonical_reorientation(const Affine& affine, const std::array<int64_t, 3>& shape);

// Canonical axial slice k [X,Y] (contiguous, the voxels' dtype) of `voxels` [I,J,K], which may
// be any view (read_nifti's kAsStored voxels).
at::Tensor canonical_slice(const at::Tensor& voxels, const Reorientation& r, int64_t k);

// The inverse of to_canonical: `canonical` [I,J,K] voxels in the canonical orientation of a
// volume whose file has `original_affine` (and whose canonical shape they have), back in the
// file's voxel order, so that they can be written with `original_affine`.
at::Tensor from_canonical(const at::Tensor& canonical, const Affine& original_affine);

// A file's shape and affine from its header alone (the voxels are not read).
struct Geometry {
  std::array<int64_t, 3> shape{};
  Affine affine{};
  std::string datatype;  // "int16", "float32", ...; empty when kdseg cannot read it
  bool scaled = false;   // scl_slope/scl_inter change the stored values
};
Geometry read_nifti_geometry(const std::string& path);

// `volume` must lie on `image`'s voxels: the same shape and (to 1e-3, relative) the same affine.
// The error names both files.
void check_same_grid(const Volume& volume, const Volume& image);

// Voxel spacing (column norms of the affine), in mm.
std::array<double, 3> voxel_spacing(const Affine& affine);

}  // namespace kdseg::data
