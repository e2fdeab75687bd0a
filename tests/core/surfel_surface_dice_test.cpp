// The surfel-based surface Dice (core/surface_distance.h, KiTS23's definition): surfel areas
// worked out by hand for a lone voxel and a box at anisotropic spacing, the conventions, and
// agreement with an independent numpy/scipy implementation of DeepMind's algorithm
// (tests/core/surfel_reference.py) on shifted boxes and random blobs.
#include <gtest/gtest.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/surface_distance.h"

namespace {
namespace fs = std::filesystem;
using Shape = std::array<int64_t, 3>;
using Spacing = std::array<double, 3>;

// A mask of `shape` holding the box [lo, hi) of voxels.
std::vector<uint8_t> box(const Shape& shape, const Shape& lo, const Shape& hi) {
  std::vector<uint8_t> mask(static_cast<size_t>(shape[0] * shape[1] * shape[2]), 0);
  for (int64_t i = lo[0]; i < hi[0]; ++i) {
    for (int64_t j = lo[1]; j < hi[1]; ++j) {
      for (int64_t k = lo[2]; k < hi[2]; ++k) mask[static_cast<size_t>((i * shape[1] + j) * shape[2] + k)] = 1;
    }
  }
  return mask;
}

double total_area(const kdseg::Surfels& s) {
  double sum = 0;
  for (double a : s.areas) sum += a;
  return sum;
}

// Marching cubes around a lone voxel gives an octahedron through the midpoints to its 6
// neighbours: 8 triangles, each with vertices (s0/2,0,0), (0,s1/2,0), (0,0,s2/2), of area
// |(s1 s2, s0 s2, s0 s1)| / 8.
TEST(SurfelSurfaceDice, LoneVoxelIsAnOctahedron) {
  const Spacing s = {2.0, 0.5, 3.0};
  const kdseg::Surfels surfels = kdseg::surfels(box({3, 3, 3}, {1, 1, 1}, {2, 2, 2}).data(), {3, 3, 3}, s);
  ASSERT_EQ(surfels.corners.size(), 8u);  // the corners (1..2)^3 around it
  const double triangle = std::sqrt(std::pow(s[1] * s[2], 2) + std::pow(s[0] * s[2], 2) + std::pow(s[0] * s[1], 2)) / 8;
  for (double a : surfels.areas) EXPECT_NEAR(a, triangle, 1e-12);
  // A voxel at the grid's edge has the same surface: outside the grid is outside.
  EXPECT_NEAR(total_area(kdseg::surfels(box({1, 1, 1}, {0, 0, 0}, {1, 1, 1}).data(), {1, 1, 1}, s)), 8 * triangle,
              1e-12);
  EXPECT_EQ(kdseg::surfel_area(0, s), 0.0);
  EXPECT_EQ(kdseg::surfel_area(255, s), 0.0);
  EXPECT_NEAR(kdseg::surfel_area(15, s), s[1] * s[2], 1e-12);  // half the cube in: a flat face cell
}

// A box of n0 x n1 x n2 voxels: flat faces between its outer voxel centres, a 45-degree strip
// along each edge (width half the diagonal of the two other spacings) and an octahedron's
// triangle at each corner.
TEST(SurfelSurfaceDice, BoxAreaByHand) {
  const Spacing s = {2.0, 0.5, 3.0};
  const Shape n = {3, 4, 5};
  const kdseg::Surfels surfels = kdseg::surfels(box({7, 8, 9}, {2, 2, 2}, {5, 6, 7}).data(), {7, 8, 9}, s);
  const double faces = 2 * ((n[1] - 1) * (n[2] - 1) * s[1] * s[2] + (n[0] - 1) * (n[2] - 1) * s[0] * s[2] +
                            (n[0] - 1) * (n[1] - 1) * s[0] * s[1]);
  const double edges =
      4 * ((n[0] - 1) * s[0] * std::hypot(s[1], s[2]) / 2 + (n[1] - 1) * s[1] * std::hypot(s[0], s[2]) / 2 +
           (n[2] - 1) * s[2] * std::hypot(s[0], s[1]) / 2);
  const double corners = std::sqrt(std::pow(s[1] * s[2], 2) + std::pow(s[0] * s[2], 2) + std::pow(s[0] * s[1], 2));
  EXPECT_NEAR(total_area(surfels), faces + edges + corners, 1e-9);
}

// Against itself every surfel is at distance 0; shifted by one voxel along axis 0 (2 mm) every
// surfel has the other's copy at 2 mm, so a 2 mm tolerance takes all, and less does not.
TEST(SurfelSurfaceDice, IdentityShiftAndEmptyMasks) {
  const Spacing s = {2.0, 0.5, 3.0};
  const Shape shape = {7, 8, 9};
  const auto a = box(shape, {2, 2, 2}, {5, 6, 7}), b = box(shape, {3, 2, 2}, {6, 6, 7});
  EXPECT_DOUBLE_EQ(kdseg::surfel_surface_dice(a.data(), a.data(), shape, s, 1e-6), 1.0);
  EXPECT_DOUBLE_EQ(kdseg::surfel_surface_dice(a.data(), b.data(), shape, s, 2.0), 1.0);
  const double below = kdseg::surfel_surface_dice(a.data(), b.data(), shape, s, 1.99);
  EXPECT_GT(below, 0.5);
  EXPECT_LT(below, 1.0);
  const std::vector<uint8_t> empty(a.size(), 0);
  EXPECT_EQ(kdseg::surfel_surface_dice(empty.data(), empty.data(), shape, s, 1.0), 1.0);
  EXPECT_EQ(kdseg::surfel_surface_dice(a.data(), empty.data(), shape, s, 1.0), 0.0);
  EXPECT_EQ(kdseg::surfel_surface_dice(empty.data(), a.data(), shape, s, 1.0), 0.0);
  EXPECT_THROW(kdseg::surfel_surface_dice(a.data(), b.data(), shape, s, 0.0), kdseg::Error);
  EXPECT_THROW(kdseg::surfel_surface_dice(a.data(), b.data(), shape, {2.0, 0.0, 3.0}, 1.0), kdseg::Error);
}

// A random blob: voxels within an ellipsoid whose radius is jittered voxel by voxel.
std::vector<uint8_t> blob(const Shape& shape, std::mt19937& rng) {
  std::uniform_real_distribution<double> u(0, 1);
  const double c[3] = {shape[0] * (0.3 + 0.4 * u(rng)), shape[1] * (0.3 + 0.4 * u(rng)),
                       shape[2] * (0.3 + 0.4 * u(rng))};
  const double r[3] = {shape[0] * (0.15 + 0.2 * u(rng)), shape[1] * (0.15 + 0.2 * u(rng)),
                       shape[2] * (0.15 + 0.2 * u(rng))};
  std::vector<uint8_t> mask(static_cast<size_t>(shape[0] * shape[1] * shape[2]));
  size_t v = 0;
  for (int64_t i = 0; i < shape[0]; ++i) {
    for (int64_t j = 0; j < shape[1]; ++j) {
      for (int64_t k = 0; k < shape[2]; ++k, ++v) {
        const double d =
            std::pow((i - c[0]) / r[0], 2) + std::pow((j - c[1]) / r[1], 2) + std::pow((k - c[2]) / r[2], 2);
        mask[v] = d < 0.8 + 0.4 * u(rng);
      }
    }
  }
  return mask;
}

TEST(SurfelSurfaceDice, MatchesIndependentNumpyReference) {
  const std::string python = "/usr/bin/python3";
  if (std::system((python + " -c 'import numpy, scipy' 2>/dev/null").c_str()) != 0)
    GTEST_SKIP() << python << " with numpy and scipy is needed for the reference";
  const fs::path dir = fs::temp_directory_path() / ("kdseg-surfel-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  struct Case {
    Shape shape;
    Spacing spacing;
    double tolerance;
    std::vector<uint8_t> prediction, reference;
  };
  std::vector<Case> cases;
  const Shape box_shape = {7, 8, 9};
  for (double tolerance : {0.3, 0.5, 1.0, 1.99, 2.0}) {
    cases.push_back({box_shape,
                     {2.0, 0.5, 3.0},
                     tolerance,
                     box(box_shape, {3, 2, 2}, {6, 6, 7}),
                     box(box_shape, {2, 2, 2}, {5, 6, 7})});
  }
  std::mt19937 rng(7);
  const Spacing spacings[] = {{1, 1, 1}, {5, 0.8, 0.8}, {2.5, 0.7, 0.9}, {0.5, 1.5, 1.0}};
  for (int n = 0; n < 12; ++n) {
    const Shape shape = {8 + n % 5, 12 + n % 3, 10 + n % 4};
    const Spacing& s = spacings[n % 4];
    cases.push_back({shape, s, 0.6 + 0.35 * n, blob(shape, rng), blob(shape, rng)});
  }
  // A blob touching the grid's edges everywhere: the surface there is still closed.
  const Shape full = {6, 6, 6};
  cases.push_back({full, {1.0, 2.0, 0.5}, 1.0, box(full, {0, 0, 0}, {6, 6, 6}), box(full, {0, 1, 0}, {6, 6, 5})});
  nlohmann::json spec = nlohmann::json::array();
  for (size_t c = 0; c < cases.size(); ++c) {
    const auto write = [&](const std::vector<uint8_t>& mask, const std::string& name) {
      const std::string file = (dir / (name + std::to_string(c))).string();
      std::ofstream(file, std::ios::binary)
          .write(reinterpret_cast<const char*>(mask.data()), static_cast<std::streamsize>(mask.size()));
      return file;
    };
    spec.push_back({{"shape", cases[c].shape},
                    {"spacing", cases[c].spacing},
                    {"tolerance", cases[c].tolerance},
                    {"prediction", write(cases[c].prediction, "p")},
                    {"reference", write(cases[c].reference, "r")}});
  }
  std::ofstream((dir / "cases.json").string()) << spec.dump();
  const std::string command = python + " " + KDSEG_TESTS_DIR + "/core/surfel_reference.py " +
                              (dir / "cases.json").string() + " > " + (dir / "out.json").string();
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  const nlohmann::json out = nlohmann::json::parse(std::ifstream((dir / "out.json").string()));
  ASSERT_EQ(out.at("results").size(), cases.size());
  int partial = 0;
  for (size_t c = 0; c < cases.size(); ++c) {
    const Case& k = cases[c];
    const double mine =
        kdseg::surfel_surface_dice(k.prediction.data(), k.reference.data(), k.shape, k.spacing, k.tolerance);
    // Both sum the same areas in another order: a few ulps apart.
    EXPECT_NEAR(mine, out.at("results")[c].get<double>(), 1e-12) << "case " << c;
    partial += mine > 0.05 && mine < 0.95;
  }
  EXPECT_GE(partial, 6);  // most cases are neither all nor nothing
  fs::remove_all(dir);
}

}  // namespace
