#include "data/orientation.h"

#include <torch/torch.h>

#include <cmath>
#include <vector>

#include "core/error.h"

namespace kdseg::data {
namespace {

// a * t for the 4x4 `t` (row-major `a`).
Affine times(const Affine& a, const double (&t)[4][4]) {
  Affine out{};
  for (int row = 0; row < 4; ++row) {
    for (int c = 0; c < 4; ++c) {
      double sum = 0;
      for (int k = 0; k < 4; ++k) sum += a[static_cast<size_t>(row * 4 + k)] * t[k][c];
      out[static_cast<size_t>(row * 4 + c)] = sum;
    }
  }
  return out;
}

// The axes among the first `count` for which `flip` holds.
std::vector<int64_t> flipped_axes(const std::array<bool, 3>& flip, int64_t count) {
  std::vector<int64_t> axes;
  for (int64_t w = 0; w < count; ++w) {
    if (flip[static_cast<size_t>(w)]) axes.push_back(w);
  }
  return axes;
}

}  // namespace

std::array<double, 3> voxel_spacing(const Affine& a) {
  std::array<double, 3> s{};
  for (int c = 0; c < 3; ++c) {
    s[static_cast<size_t>(c)] = std::sqrt(a[c] * a[c] + a[4 + c] * a[4 + c] + a[8 + c] * a[8 + c]);
  }
  return s;
}

Orientation closest_orientation(const Affine& a) {
  // Direction cosines of each voxel axis; then, greedily, the largest |cosine| among the
  // unassigned voxel and world axes. For the permutation-and-flip affines of CT scanners this
  // is nibabel's io_orientation; for oblique ones it picks the nearest axis the same way.
  double cosine[3][3];
  const std::array<double, 3> spacing = voxel_spacing(a);
  for (int v = 0; v < 3; ++v) {
    KDSEG_CHECK(spacing[static_cast<size_t>(v)] > 0, "affine has a zero column for voxel axis ", v);
    for (int w = 0; w < 3; ++w) cosine[w][v] = a[static_cast<size_t>(w * 4 + v)] / spacing[static_cast<size_t>(v)];
  }
  Orientation o;
  bool voxel_used[3] = {false, false, false}, world_used[3] = {false, false, false};
  for (int step = 0; step < 3; ++step) {
    int best_v = -1, best_w = -1;
    double best = -1;
    for (int v = 0; v < 3; ++v) {
      for (int w = 0; w < 3; ++w) {
        if (voxel_used[v] || world_used[w]) continue;
        if (std::abs(cosine[w][v]) > best) {
          best = std::abs(cosine[w][v]);
          best_v = v;
          best_w = w;
        }
      }
    }
    voxel_used[best_v] = world_used[best_w] = true;
    o.world_axis[static_cast<size_t>(best_v)] = best_w;
    o.direction[static_cast<size_t>(best_v)] = cosine[best_w][best_v] < 0 ? -1 : 1;
  }
  return o;
}

Reorientation canonical_reorientation(const Affine& affine, const std::array<int64_t, 3>& shape) {
  const Orientation o = closest_orientation(affine);
  Reorientation r;
  for (int v = 0; v < 3; ++v) r.order[static_cast<size_t>(o.world_axis[static_cast<size_t>(v)])] = v;
  for (size_t w = 0; w < 3; ++w) {
    r.flip[w] = o.direction[static_cast<size_t>(r.order[w])] < 0;
    r.shape[w] = shape[static_cast<size_t>(r.order[w])];
  }
  // old index[v] = d < 0 ? n_v - 1 - new[w] : new[w] with w = world_axis[v]: A' = A * T.
  double t[4][4] = {{0}};
  t[3][3] = 1;
  for (int v = 0; v < 3; ++v) {
    const int w = o.world_axis[static_cast<size_t>(v)];
    const int d = o.direction[static_cast<size_t>(v)];
    t[v][w] = d;
    t[v][3] = d < 0 ? static_cast<double>(shape[static_cast<size_t>(v)] - 1) : 0.0;
  }
  r.affine = times(affine, t);
  return r;
}

at::Tensor to_canonical_voxels(const at::Tensor& voxels, const Reorientation& r) {
  const at::Tensor axes = voxels.permute({r.order[0], r.order[1], r.order[2]});
  const std::vector<int64_t> flips = flipped_axes(r.flip, 3);
  return (flips.empty() ? axes : axes.flip(flips)).contiguous();
}

at::Tensor canonical_slice(const at::Tensor& voxels, const Reorientation& r, int64_t k) {
  const at::Tensor axes = voxels.permute({r.order[0], r.order[1], r.order[2]});
  const at::Tensor slice = axes.select(2, r.flip[2] ? r.shape[2] - 1 - k : k);
  const std::vector<int64_t> flips = flipped_axes(r.flip, 2);
  return flips.empty() ? slice.contiguous() : slice.flip(flips).contiguous();
}

Affine affine_in_orientation(const Orientation& o, const Affine& canonical,
                             const std::array<int64_t, 3>& canonical_shape) {
  // canonical index[w] = d < 0 ? n_w - 1 - stored[v] : stored[v] with w = world_axis[v]:
  // the inverse of canonical_reorientation's T.
  double t[4][4] = {{0}};
  t[3][3] = 1;
  for (int v = 0; v < 3; ++v) {
    const int w = o.world_axis[static_cast<size_t>(v)];
    const int d = o.direction[static_cast<size_t>(v)];
    t[w][v] = d;
    t[w][3] = d < 0 ? static_cast<double>(canonical_shape[static_cast<size_t>(w)] - 1) : 0.0;
  }
  return times(canonical, t);
}

at::Tensor from_canonical(const at::Tensor& canonical, const Orientation& o) {
  KDSEG_CHECK(canonical.dim() == 3, "from_canonical: expected [I,J,K] voxels, got ", canonical.sizes());
  // to_canonical flipped canonical axis w = world_axis[v] where direction[v] < 0, then the file's
  // voxel axis v is canonical axis world_axis[v].
  std::vector<int64_t> flips;
  for (int v = 0; v < 3; ++v) {
    if (o.direction[static_cast<size_t>(v)] < 0) flips.push_back(o.world_axis[static_cast<size_t>(v)]);
  }
  const at::Tensor unflipped = flips.empty() ? canonical : canonical.flip(flips);
  return unflipped.permute({o.world_axis[0], o.world_axis[1], o.world_axis[2]}).contiguous();
}

at::Tensor from_canonical(const at::Tensor& canonical, const Affine& original_affine) {
  return from_canonical(canonical, closest_orientation(original_affine));
}

at::Tensor to_file_plane(const at::Tensor& slice, const Reorientation& r) {
  const std::vector<int64_t> flips = flipped_axes(r.flip, 2);
  const at::Tensor unflipped = flips.empty() ? slice : slice.flip(flips);
  return r.order[0] == 0 ? unflipped : unflipped.t();
}

}  // namespace kdseg::data
