// data/orientation.h: the inverse undoes the forward map for every one of the 48 orientations.
#include "data/orientation.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <string>
#include <vector>

#include "core/error.h"

namespace {
namespace D = kdseg::data;

// The 48 orientations: every permutation of the world axes, every sign of each.
std::vector<D::Orientation> all_orientations() {
  std::vector<D::Orientation> out;
  std::array<int, 3> axes{0, 1, 2};
  do {
    for (int signs = 0; signs < 8; ++signs) {
      D::Orientation o;
      o.world_axis = axes;
      for (int v = 0; v < 3; ++v) o.direction[static_cast<size_t>(v)] = (signs >> v & 1) ? -1 : 1;
      out.push_back(o);
    }
  } while (std::next_permutation(axes.begin(), axes.end()));
  return out;
}

// A canonical affine: spacing 0.7, 0.8, 2.5 mm and an origin away from 0.
D::Affine canonical_affine() { return {0.7, 0, 0, -90.5, 0, 0.8, 0, 12.25, 0, 0, 2.5, -300, 0, 0, 0, 1}; }

TEST(Orientation, TheInverseUndoesTheForwardMapForAll48) {
  const std::vector<D::Orientation> orientations = all_orientations();
  ASSERT_EQ(orientations.size(), 48u);
  const std::array<int64_t, 3> canonical_shape{5, 6, 7};
  // Distinct values, so that any misplaced voxel shows.
  const at::Tensor canonical = torch::arange(5 * 6 * 7, torch::kInt).reshape({5, 6, 7});
  for (const D::Orientation& o : orientations) {
    const std::string name = std::to_string(o.world_axis[0]) + std::to_string(o.world_axis[1]) +
                             std::to_string(o.world_axis[2]) + " " + std::to_string(o.direction[0]) +
                             std::to_string(o.direction[1]) + std::to_string(o.direction[2]);
    // Inverse: the stored voxels and their affine.
    const D::Affine affine = D::affine_in_orientation(o, canonical_affine(), canonical_shape);
    const at::Tensor stored = D::from_canonical(canonical, o);
    const std::array<int64_t, 3> shape{stored.size(0), stored.size(1), stored.size(2)};
    const D::Orientation found = D::closest_orientation(affine);
    EXPECT_EQ(found.world_axis, o.world_axis) << name;
    EXPECT_EQ(found.direction, o.direction) << name;
    // Forward: back to the canonical voxels and affine.
    const D::Reorientation r = D::canonical_reorientation(affine, shape);
    EXPECT_EQ(r.shape, canonical_shape) << name;
    for (size_t i = 0; i < 16; ++i) EXPECT_NEAR(r.affine[i], canonical_affine()[i], 1e-12) << name << " " << i;
    const at::Tensor back = D::to_canonical_voxels(stored, r);
    EXPECT_TRUE(back.equal(canonical)) << name;
    EXPECT_TRUE(D::from_canonical(back, affine).equal(stored)) << name << ": from the file's affine";
    for (int64_t k = 0; k < canonical_shape[2]; ++k) {
      const at::Tensor slice = D::canonical_slice(stored, r, k);
      EXPECT_TRUE(slice.equal(canonical.select(2, k))) << name << " slice " << k;
      if (r.order[2] == 2) {  // the file's planes are axial: a slice goes back as plane k'
        const at::Tensor plane = stored.select(2, r.flip[2] ? shape[2] - 1 - k : k);
        EXPECT_TRUE(D::to_file_plane(slice, r).equal(plane)) << name << " plane " << k;
      }
    }
  }
}

TEST(Orientation, ObliqueAffinesPickTheNearestAxis) {
  // Voxel axis 0 leans 20 degrees from A towards R; axis 1 points along -R; axis 2 along S.
  const double c = std::cos(0.349), s = std::sin(0.349);
  const D::Affine affine{s, -1, 0, 0, c, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 1};
  const D::Orientation o = D::closest_orientation(affine);
  EXPECT_EQ(o.world_axis, (std::array<int, 3>{1, 0, 2}));
  EXPECT_EQ(o.direction, (std::array<int, 3>{1, -1, 1}));
  EXPECT_THROW(D::closest_orientation(D::Affine{0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 1}), kdseg::Error);
}

}  // namespace
