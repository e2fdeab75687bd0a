#include "data/canonical_writer.h"

#include <torch/torch.h>

#include <algorithm>

#include "core/error.h"

namespace kdseg::data {

CanonicalWriter::CanonicalWriter(const std::vector<File>& files, const std::array<int64_t, 3>& file_shape,
                                 const Affine& affine, const Reorientation& r, int threads)
    : file_shape_(file_shape), affine_(affine), r_(r) {
  const auto axis = std::find(r.order.begin(), r.order.end(), 2) - r.order.begin();
  axial_planes_ = axis == 2;
  const int64_t depth = r.shape[2];
  order_.resize(static_cast<size_t>(depth));
  for (int64_t k = 0; k < depth; ++k) {
    order_[static_cast<size_t>(k)] = axial_planes_ && r.flip[2] ? depth - 1 - k : k;
  }
  for (const File& f : files) {
    writers_.push_back(std::make_unique<NiftiPlaneWriter>(f.path, file_shape, affine, f.type, threads));
    if (!axial_planes_) {
      whole_.push_back(
          torch::zeros({r.shape[0], r.shape[1], depth}, f.type == NiftiType::kUint8 ? torch::kByte : torch::kFloat));
    }
  }
}

void CanonicalWriter::write(const std::vector<at::Tensor>& planes) {
  KDSEG_CHECK(planes.size() == writers_.size() && written_ < order_.size(), "CanonicalWriter: ", planes.size(),
              " planes for ", writers_.size(), " files, slice ", written_, " of ", order_.size());
  for (size_t f = 0; f < planes.size(); ++f) {
    if (axial_planes_) {
      writers_[f]->write(to_file_plane(planes[f], r_));
    } else {
      whole_[f].select(2, order_[written_]).copy_(planes[f]);
    }
  }
  ++written_;
}

void CanonicalWriter::close() {
  KDSEG_CHECK(written_ == order_.size(), "CanonicalWriter: closed after ", written_, " of ", order_.size(), " slices");
  for (size_t f = 0; f < writers_.size(); ++f) {
    if (!axial_planes_) {
      const at::Tensor in_file = from_canonical(whole_[f], affine_);
      for (int64_t k = 0; k < file_shape_[2]; ++k) writers_[f]->write(in_file.select(2, k));
      whole_[f] = at::Tensor();
    }
    writers_[f]->close();
  }
}

}  // namespace kdseg::data
