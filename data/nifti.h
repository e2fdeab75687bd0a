// NIfTI-1 volumes through niftilib: reading (.nii and .nii.gz; uint8, int8, int16, uint16,
// int32, float32, float64; scl_slope/scl_inter applied), writing, and the whole volume in the
// closest canonical RAS orientation (the orientation maps themselves are data/orientation.h).
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <memory>
#include <optional>
#include <string>

#include "data/orientation.h"

namespace kdseg::data {

// The voxel data types kdseg reads and writes (NIfTI's DT_UINT8, ...).
enum class NiftiType { kUint8, kInt8, kInt16, kUint16, kInt32, kFloat32, kFloat64 };
// "uint8", "int8", "int16", "uint16", "int32", "float32" or "float64", for messages.
const char* nifti_type_name(NiftiType type);

struct Volume {
  // [I,J,K] float32, indexed as nibabel's get_fdata(): voxels[i][j][k].
  at::Tensor voxels;
  Affine affine{};
  std::string path;
  NiftiType datatype = NiftiType::kFloat32;  // the file's datatype
};

// The voxels read_nifti returns: float32 [I,J,K] contiguous, or the values as the file stores
// them ([I,J,K] as a view of the file's [K,J,I] order, no copy; uint16 widened to int32, and
// float32 when scl_slope/scl_inter scale them), which keeps a CT at 2 bytes a voxel.
enum class VoxelType { kFloat32, kAsStored };

// Reads a 3D volume. The affine is the sform when sform_code > 0, else the qform. Errors name
// the file: unreadable or truncated, 4D, unsupported datatype, NaN or Inf values (when
// `require_finite`), a .nii.gz whose gzip data are damaged or fail their CRC-32 or length check.
// A .nii.gz is inflated whole (libdeflate) into the voxels' own buffer.
Volume read_nifti(const std::string& path, bool require_finite = true, VoxelType type = VoxelType::kFloat32);

// Writes `voxels` [I,J,K] (any real dtype) as `datatype`, with the affine as both sform and qform (code 1), and
// optional scl_slope/scl_inter (stored values are (value - inter) / slope). The extension
// chooses .nii or .nii.gz. Atomic: a crash never leaves a partial file.
void write_nifti(const std::string& path, const at::Tensor& voxels, const Affine& affine, NiftiType datatype,
                 double slope = 1.0, double inter = 0.0);

// Writes a NIfTI-1 volume of shape [I,J,K] one k-plane at a time, without holding the volume:
// the header, then each plane in order. A .nii.gz is written as one gzip member per plane,
// compressed by libdeflate on `threads` threads; concatenated members are one gzip file to zlib,
// nibabel, ITK and niftilib. Atomic: the file appears when close() succeeds; a failed write (a
// full disk) names the file, and the destructor of an unclosed writer leaves nothing behind.
class NiftiPlaneWriter {
 public:
  NiftiPlaneWriter(const std::string& path, const std::array<int64_t, 3>& shape, const Affine& affine,
                   NiftiType datatype, int threads = 1);
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

// The same volume with voxel axes permuted and flipped so that they run along R, A and S, and
// the affine adjusted so that every voxel keeps its world position (to_canonical_voxels).
Volume to_canonical(const Volume& volume);

// A file's shape and affine from its header alone (the voxels are not read).
struct Geometry {
  std::array<int64_t, 3> shape{};
  Affine affine{};
  std::optional<NiftiType> datatype;  // none when kdseg cannot read it
  bool scaled = false;                // scl_slope/scl_inter change the stored values
  std::string not_a_volume;           // why read_nifti would refuse its shape (2D, 4D); empty for a 3D volume
};
Geometry read_nifti_geometry(const std::string& path);

// `volume` must lie on `image`'s voxels: the same shape and (to 1e-3, relative) the same affine.
// The error names both files.
void check_same_grid(const Volume& volume, const Volume& image);

}  // namespace kdseg::data
