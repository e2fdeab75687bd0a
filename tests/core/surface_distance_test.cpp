// Surface distances (HD95, ASSD, NSD) against hand-worked cases and a brute-force computation
// that pairs every surface voxel with every other.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "core/error.h"
#include "core/surface_distance.h"

namespace kdseg {
namespace {

using Shape = std::array<int64_t, 3>;
using Spacing = std::array<double, 3>;

struct Grid {
  Shape shape;
  std::vector<uint8_t> a, b;
  explicit Grid(Shape s) : shape(s), a(static_cast<size_t>(s[0] * s[1] * s[2])), b(a.size()) {}
  size_t at(int64_t i, int64_t j, int64_t k) const { return static_cast<size_t>((i * shape[1] + j) * shape[2] + k); }
};

// Written independently of the implementation: a voxel is on the surface when one of its six
// neighbours is outside the grid or outside the mask.
std::vector<std::array<int64_t, 3>> brute_surface(const Grid& g, const std::vector<uint8_t>& m) {
  const auto inside = [&](int64_t i, int64_t j, int64_t k) {
    return i >= 0 && j >= 0 && k >= 0 && i < g.shape[0] && j < g.shape[1] && k < g.shape[2] && m[g.at(i, j, k)] != 0;
  };
  std::vector<std::array<int64_t, 3>> out;
  for (int64_t i = 0; i < g.shape[0]; ++i) {
    for (int64_t j = 0; j < g.shape[1]; ++j) {
      for (int64_t k = 0; k < g.shape[2]; ++k) {
        if (!inside(i, j, k)) continue;
        if (!inside(i - 1, j, k) || !inside(i + 1, j, k) || !inside(i, j - 1, k) || !inside(i, j + 1, k) ||
            !inside(i, j, k - 1) || !inside(i, j, k + 1)) {
          out.push_back({i, j, k});
        }
      }
    }
  }
  return out;
}

SurfaceMetrics brute_force(const Grid& g, const Spacing& s, double tolerance) {
  const auto sa = brute_surface(g, g.a), sb = brute_surface(g, g.b);
  const auto directed = [&](const auto& from, const auto& to) {
    std::vector<double> d;
    for (const auto& p : from) {
      double best = INFINITY;
      for (const auto& q : to) {
        double d2 = 0;
        for (int x = 0; x < 3; ++x) d2 += std::pow(static_cast<double>(p[x] - q[x]) * s[x], 2);
        best = std::min(best, std::sqrt(d2));
      }
      d.push_back(best);
    }
    return d;
  };
  const auto p95 = [](std::vector<double> d) {  // numpy.percentile(d, 95)
    std::sort(d.begin(), d.end());
    const double pos = 0.95 * static_cast<double>(d.size() - 1);
    const auto lo = static_cast<size_t>(pos);
    const double hi = lo + 1 < d.size() ? d[lo + 1] : d[lo];
    return d[lo] + (pos - static_cast<double>(lo)) * (hi - d[lo]);
  };
  const std::vector<double> ab = directed(sa, sb), ba = directed(sb, sa);
  SurfaceMetrics m;
  m.prediction_surface = static_cast<int64_t>(sa.size());
  m.reference_surface = static_cast<int64_t>(sb.size());
  m.hd95 = std::max(p95(ab), p95(ba));
  double sum = 0;
  int64_t within = 0;
  for (const auto* d : {&ab, &ba}) {
    for (double x : *d) {
      sum += x;
      within += x <= tolerance;
    }
  }
  m.assd = sum / static_cast<double>(ab.size() + ba.size());
  m.nsd = static_cast<double>(within) / static_cast<double>(ab.size() + ba.size());
  return m;
}

SurfaceMetrics of(const Grid& g, const Spacing& s, double tolerance) {
  return surface_metrics(g.a.data(), g.b.data(), g.shape, s, tolerance);
}

TEST(SurfaceDistance, TwoVoxelsApart) {
  Grid g({1, 1, 5});
  g.a[g.at(0, 0, 0)] = 1;
  g.b[g.at(0, 0, 3)] = 1;
  const Spacing s = {1, 1, 2};  // three steps of 2 mm
  const SurfaceMetrics m = of(g, s, 2.0);
  EXPECT_DOUBLE_EQ(m.hd95, 6.0);
  EXPECT_DOUBLE_EQ(m.assd, 6.0);
  EXPECT_DOUBLE_EQ(m.nsd, 0.0);
  EXPECT_EQ(m.prediction_surface, 1);
  EXPECT_EQ(m.reference_surface, 1);
  EXPECT_DOUBLE_EQ(of(g, s, 6.5).nsd, 1.0);
}

TEST(SurfaceDistance, ShiftedBlockHasKnownDistances) {
  // A 3x3x3 block and the same block one voxel further along axis 0 (2 mm). Of each block's 26
  // surface voxels, the 9 of its outer face are 2 mm from the other's surface; the centre of
  // its inner face is inside the other block, 1 mm (axis 1 or 2) from its side; the other 16
  // lie on the other's surface.
  Grid g({6, 5, 5});
  for (int64_t i = 0; i < 3; ++i) {
    for (int64_t j = 1; j < 4; ++j) {
      for (int64_t k = 1; k < 4; ++k) {
        g.a[g.at(i + 1, j, k)] = 1;
        g.b[g.at(i + 2, j, k)] = 1;
      }
    }
  }
  const SurfaceMetrics m = of(g, {2, 1, 1}, 1.0);
  EXPECT_EQ(m.prediction_surface, 26);
  EXPECT_EQ(m.reference_surface, 26);
  // Sorted, each direction's distances end in nine 2s, so the 95th percentile is 2.
  EXPECT_NEAR(m.hd95, 2.0, 1e-12);
  EXPECT_NEAR(m.assd, 2.0 * (9 * 2 + 1) / 52, 1e-12);
  EXPECT_NEAR(m.nsd, 34.0 / 52, 1e-12);
}

TEST(SurfaceDistance, EmptyMasks) {
  Grid g({3, 4, 5});
  const Spacing s = {1, 2, 0.5};
  const SurfaceMetrics both = of(g, s, 1.0);
  EXPECT_EQ(both.hd95, 0.0);
  EXPECT_EQ(both.assd, 0.0);
  EXPECT_EQ(both.nsd, 1.0);
  g.b[g.at(1, 1, 1)] = 1;  // a missed structure: the worst the grid allows
  const double diagonal = std::sqrt(2.0 * 2.0 + 6.0 * 6.0 + 2.0 * 2.0);
  const SurfaceMetrics missed = of(g, s, 1.0);
  EXPECT_DOUBLE_EQ(missed.hd95, diagonal);
  EXPECT_DOUBLE_EQ(missed.assd, diagonal);
  EXPECT_EQ(missed.nsd, 0.0);
  std::swap(g.a, g.b);  // a spurious one
  EXPECT_DOUBLE_EQ(of(g, s, 1.0).hd95, diagonal);
  g.b = g.a;  // identical
  const SurfaceMetrics same = of(g, s, 1.0);
  EXPECT_EQ(same.hd95, 0.0);
  EXPECT_EQ(same.nsd, 1.0);
}

TEST(SurfaceDistance, MatchesBruteForceOnRandomMasks) {
  std::mt19937 rng(7);
  const std::vector<Spacing> spacings = {{1, 1, 1}, {0.7, 1.1, 2.3}, {3.0, 0.8, 0.8}};
  int compared = 0;
  for (int trial = 0; trial < 24; ++trial) {
    Grid g({5 + trial % 4, 7, 6 + trial % 3});
    // Sparse and dense masks, each in a random sub-box so the surfaces' box is not the grid's.
    const double density[2] = {trial % 2 ? 0.08 : 0.4, trial % 3 ? 0.5 : 0.05};
    for (int which = 0; which < 2; ++which) {
      std::vector<uint8_t>& m = which == 0 ? g.a : g.b;
      std::bernoulli_distribution inside(density[which]);
      const int64_t cut = trial % 3;
      for (int64_t i = cut; i < g.shape[0]; ++i) {
        for (int64_t j = 0; j < g.shape[1] - cut; ++j) {
          for (int64_t k = 0; k < g.shape[2]; ++k) m[g.at(i, j, k)] = inside(rng);
        }
      }
    }
    const Spacing& s = spacings[static_cast<size_t>(trial) % spacings.size()];
    const double tolerance = 1.3;
    const SurfaceMetrics got = of(g, s, tolerance), want = brute_force(g, s, tolerance);
    if (want.prediction_surface == 0 || want.reference_surface == 0) continue;
    ++compared;
    EXPECT_EQ(got.prediction_surface, want.prediction_surface) << "trial " << trial;
    EXPECT_EQ(got.reference_surface, want.reference_surface) << "trial " << trial;
    EXPECT_NEAR(got.hd95, want.hd95, 1e-9) << "trial " << trial;
    EXPECT_NEAR(got.assd, want.assd, 1e-9) << "trial " << trial;
    EXPECT_NEAR(got.nsd, want.nsd, 1e-12) << "trial " << trial;
  }
  EXPECT_GE(compared, 20);
}

TEST(SurfaceDistance, BadArguments) {
  Grid g({2, 2, 2});
  EXPECT_THROW(surface_metrics(g.a.data(), g.b.data(), {2, 0, 2}, {1, 1, 1}, 1.0), Error);
  EXPECT_THROW(surface_metrics(g.a.data(), g.b.data(), g.shape, {1, -1, 1}, 1.0), Error);
  EXPECT_THROW(surface_metrics(g.a.data(), g.b.data(), g.shape, {1, 1, 1}, 0.0), Error);
}

}  // namespace
}  // namespace kdseg
