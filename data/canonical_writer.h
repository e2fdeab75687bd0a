// NIfTI files written from canonical (RAS) axial slices, in the source scan's own voxel order and
// affine: `evaluate --save-predictions` and `predict` write their label maps and probabilities
// through it. When the file's planes are axial (a CT's k axis) each canonical slice is turned
// into its plane and streamed, so memory holds one slice; otherwise (sagittal or coronal planes)
// the canonical volumes are gathered and reoriented whole when the writer is closed.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/nifti.h"
#include "data/orientation.h"

namespace kdseg::data {

class CanonicalWriter {
 public:
  struct File {
    std::string path;
    NiftiType type;
  };
  // `r` takes the file's voxel axes to the canonical ones (canonical_reorientation of `affine`
  // and `file_shape`, or the identity for files written in the canonical geometry).
  CanonicalWriter(const std::vector<File>& files, const std::array<int64_t, 3>& file_shape, const Affine& affine,
                  const Reorientation& r, int threads);

  // The canonical slice indices, in the order write() takes them.
  const std::vector<int64_t>& order() const { return order_; }
  // The planes [X,Y] of canonical slice order()[i] at the i-th call, one per file.
  void write(const std::vector<at::Tensor>& planes);
  // Writes what is gathered and closes the files; every slice must have been written.
  void close();

 private:
  std::array<int64_t, 3> file_shape_;
  Affine affine_;
  Reorientation r_;
  bool axial_planes_;
  std::vector<int64_t> order_;
  size_t written_ = 0;
  std::vector<std::unique_ptr<NiftiPlaneWriter>> writers_;
  std::vector<at::Tensor> whole_;  // canonical volumes, for files of other planes
};

}  // namespace kdseg::data
