#include "core/surface_distance.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"

namespace kdseg {
namespace {

using Shape = std::array<int64_t, 3>;
constexpr double kInf = std::numeric_limits<double>::infinity();

using Voxel = std::array<int64_t, 3>;

}  // namespace

Surface surface_voxels(const uint8_t* mask, const std::array<int64_t, 3>& s) {
  Surface out;
  const int64_t plane = s[1] * s[2], row = s[2];
  for (int64_t i = 0; i < s[0]; ++i) {
    for (int64_t j = 0; j < s[1]; ++j) {
      const uint8_t* line = mask + i * plane + j * row;
      for (int64_t k = 0; k < s[2]; ++k) {
        if (line[k] == 0) continue;
        const bool on_edge = i == 0 || i == s[0] - 1 || j == 0 || j == s[1] - 1 || k == 0 || k == s[2] - 1;
        if (on_edge || line[k - plane] == 0 || line[k + plane] == 0 || line[k - row] == 0 || line[k + row] == 0 ||
            line[k - 1] == 0 || line[k + 1] == 0) {
          out.push_back({i, j, k});
        }
      }
    }
  }
  return out;
}

namespace {

// The squared distance transform of one line in place: f[q] <- min_p ((q - p) s)^2 + f[p], over
// the lower envelope of the parabolas rooted at the finite samples. `v` and `z` are scratch of
// n and n + 1 entries.
void distance_transform_line(double* f, int64_t n, double s, std::vector<int64_t>& v, std::vector<double>& z,
                             std::vector<double>& out) {
  int64_t k = -1;
  for (int64_t q = 0; q < n; ++q) {
    if (f[q] == kInf) continue;
    const double xq = static_cast<double>(q) * s;
    while (k >= 0) {
      const double xp = static_cast<double>(v[k]) * s;
      const double cross = ((f[q] + xq * xq) - (f[v[k]] + xp * xp)) / (2 * (xq - xp));
      if (cross > z[k]) {
        ++k;
        v[k] = q;
        z[k] = cross;
        z[k + 1] = kInf;
        break;
      }
      --k;  // the parabola at v[k] is hidden below the new one everywhere it led
    }
    if (k < 0) {
      k = 0;
      v[0] = q;
      z[0] = -kInf;
      z[1] = kInf;
    }
  }
  if (k < 0) return;  // no finite sample: the line stays infinite
  for (int64_t q = 0, j = 0; q < n; ++q) {
    const double xq = static_cast<double>(q) * s;
    while (z[j + 1] < xq) ++j;
    const double d = static_cast<double>(q - v[j]) * s;
    out[q] = d * d + f[v[j]];
  }
  std::copy(out.begin(), out.begin() + n, f);
}

// Squared distances (mm^2) from every voxel of a box to the nearest of `features`, which must
// lie inside it; `lo` is the box's corner in the grid and `size` its extent.
std::vector<double> squared_distances(const std::vector<Voxel>& features, const Shape& lo, const Shape& size,
                                      const std::array<double, 3>& spacing) {
  std::vector<double> f(static_cast<size_t>(size[0] * size[1] * size[2]), kInf);
  for (const Voxel& p : features) {
    f[static_cast<size_t>(((p[0] - lo[0]) * size[1] + (p[1] - lo[1])) * size[2] + (p[2] - lo[2]))] = 0;
  }
  const int64_t longest = std::max({size[0], size[1], size[2]});
  std::vector<int64_t> v(static_cast<size_t>(longest));
  std::vector<double> z(static_cast<size_t>(longest + 1)), line(static_cast<size_t>(longest)), out(line.size());
  for (int axis = 0; axis < 3; ++axis) {
    const int64_t n = size[axis];
    int64_t inner = 1;
    for (int a = axis + 1; a < 3; ++a) inner *= size[a];
    const int64_t outer = static_cast<int64_t>(f.size()) / (n * inner);
    for (int64_t o = 0; o < outer; ++o) {
      for (int64_t i = 0; i < inner; ++i) {
        double* start = f.data() + o * n * inner + i;
        for (int64_t q = 0; q < n; ++q) line[q] = start[q * inner];
        distance_transform_line(line.data(), n, spacing[axis], v, z, out);
        for (int64_t q = 0; q < n; ++q) start[q * inner] = line[q];
      }
    }
  }
  return f;
}

// numpy.percentile(values, 100 q) with linear interpolation; reorders `values`.
double percentile(std::vector<double>& values, double q) {
  const double position = q * static_cast<double>(values.size() - 1);
  const auto below = static_cast<size_t>(std::floor(position));
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(below), values.end());
  const double low = values[below];
  if (below + 1 == values.size()) return low;
  const double high = *std::min_element(values.begin() + static_cast<std::ptrdiff_t>(below) + 1, values.end());
  return low + (position - static_cast<double>(below)) * (high - low);
}

}  // namespace

SurfaceMetrics surface_metrics(const uint8_t* prediction, const uint8_t* reference, const std::array<int64_t, 3>& shape,
                               const std::array<double, 3>& spacing, double tolerance_mm) {
  for (int a = 0; a < 3; ++a) {
    KDSEG_CHECK(shape[a] > 0 && spacing[a] > 0 && std::isfinite(spacing[a]), "surface_metrics: axis ", a, " has size ",
                shape[a], " and spacing ", spacing[a], "; both must be positive");
  }
  KDSEG_CHECK(tolerance_mm > 0 && std::isfinite(tolerance_mm), "surface_metrics: the tolerance must be positive, got ",
              tolerance_mm);
  return surface_metrics(surface_voxels(prediction, shape), surface_voxels(reference, shape), shape, spacing,
                         tolerance_mm);
}

SurfaceMetrics surface_metrics(const Surface& prediction, const Surface& reference, const std::array<int64_t, 3>& shape,
                               const std::array<double, 3>& spacing, double tolerance_mm) {
  for (int a = 0; a < 3; ++a) {
    KDSEG_CHECK(shape[a] > 0 && spacing[a] > 0 && std::isfinite(spacing[a]), "surface_metrics: axis ", a, " has size ",
                shape[a], " and spacing ", spacing[a], "; both must be positive");
  }
  KDSEG_CHECK(tolerance_mm > 0 && std::isfinite(tolerance_mm), "surface_metrics: the tolerance must be positive, got ",
              tolerance_mm);
  const Surface* surfaces[2] = {&prediction, &reference};
  SurfaceMetrics m;
  m.prediction_surface = static_cast<int64_t>(surfaces[0]->size());
  m.reference_surface = static_cast<int64_t>(surfaces[1]->size());
  if (surfaces[0]->empty() && surfaces[1]->empty()) return m;
  if (surfaces[0]->empty() || surfaces[1]->empty()) {
    double diagonal = 0;
    for (int a = 0; a < 3; ++a) diagonal += std::pow(static_cast<double>(shape[a] - 1) * spacing[a], 2);
    m.hd95 = m.assd = std::sqrt(diagonal);
    m.nsd = 0;
    return m;
  }
  // Every surface voxel lies in this box, so transforms over it are exact for both directions.
  Shape lo = (*surfaces[0])[0], hi = lo;
  for (const Surface* surface : surfaces) {
    for (const Voxel& p : *surface) {
      for (int a = 0; a < 3; ++a) {
        lo[a] = std::min(lo[a], p[a]);
        hi[a] = std::max(hi[a], p[a]);
      }
    }
  }
  const Shape size = {hi[0] - lo[0] + 1, hi[1] - lo[1] + 1, hi[2] - lo[2] + 1};
  double sum = 0, hd95 = 0;
  int64_t within = 0;
  for (int from = 0; from < 2; ++from) {
    const std::vector<double> to_other = squared_distances(*surfaces[1 - from], lo, size, spacing);
    std::vector<double> directed;
    directed.reserve(surfaces[from]->size());
    for (const Voxel& p : *surfaces[from]) {
      const double d = std::sqrt(
          to_other[static_cast<size_t>(((p[0] - lo[0]) * size[1] + (p[1] - lo[1])) * size[2] + (p[2] - lo[2]))]);
      directed.push_back(d);
      sum += d;
      within += d <= tolerance_mm;
    }
    hd95 = std::max(hd95, percentile(directed, 0.95));
  }
  const auto total = static_cast<double>(m.prediction_surface + m.reference_surface);
  m.hd95 = hd95;
  m.assd = sum / total;
  m.nsd = static_cast<double>(within) / total;
  return m;
}

namespace {

// The marching-cubes triangles of each 2x2x2 neighbourhood code, as normals in eighths whose
// length is the triangle's area at unit spacing (zero rows pad to four). The table is the data of
// DeepMind's surface-distance (lookup_tables.py, _NEIGHBOUR_CODE_TO_NORMALS; Apache License 2.0,
// Copyright 2018 Google Inc.), every entry a multiple of 1/8 there.
// clang-format off
constexpr int8_t kSurfelNormals[256][4][3] = {
    {},
    {{1, 1, 1}},
    {{-1, -1, 1}},
    {{-2, -2, 0}, {2, 2, 0}},
    {{1, -1, 1}},
    {{-2, 0, -2}, {2, 0, 2}},
    {{1, -1, 1}, {-1, -1, 1}},
    {{4, 0, 0}, {2, 2, 2}, {1, 1, 1}},
    {{-1, 1, 1}},
    {{1, 1, 1}, {-1, 1, 1}},
    {{-2, 0, 2}, {-2, 0, 2}},
    {{4, 0, 0}, {-2, -2, 2}, {-1, -1, 1}},
    {{2, -2, 0}, {2, -2, 0}},
    {{4, 0, 0}, {2, -2, 2}, {-1, 1, -1}},
    {{-4, 0, 0}, {-2, 2, 2}, {-1, 1, 1}},
    {{4, 0, 0}, {4, 0, 0}},
    {{1, -1, -1}},
    {{0, -2, -2}, {0, 2, 2}},
    {{-1, -1, 1}, {1, -1, -1}},
    {{0, -4, 0}, {2, 2, 2}, {1, 1, 1}},
    {{1, -1, 1}, {1, -1, -1}},
    {{0, 0, -4}, {2, 2, 2}, {-1, -1, -1}},
    {{-1, -1, 1}, {1, -1, 1}, {1, -1, -1}},
    {{-1, -1, -1}, {-2, -2, -2}, {2, 2, 2}, {1, 1, 1}},
    {{-1, 1, 1}, {1, -1, -1}},
    {{0, -2, -2}, {0, 2, 2}, {-1, 1, 1}},
    {{-2, 0, 2}, {-2, 0, 2}, {1, -1, -1}},
    {{1, 1, 1}, {3, 3, 3}, {0, -2, 2}, {-2, 0, 2}},
    {{1, -1, -1}, {2, -2, 0}, {2, -2, 0}},
    {{3, 3, 3}, {0, 2, -2}, {-1, -1, -1}, {-2, 2, 0}},
    {{-4, 0, 0}, {-1, -1, -1}, {-2, -2, -2}, {1, 1, 1}},
    {{-4, 0, 0}, {-1, -1, -1}, {-2, -2, -2}},
    {{1, -1, 1}},
    {{1, 1, 1}, {1, -1, 1}},
    {{0, -2, 2}, {0, 2, -2}},
    {{0, -4, 0}, {1, 1, -1}, {2, 2, -2}},
    {{1, -1, 1}, {1, -1, 1}},
    {{1, -1, 1}, {-2, 0, -2}, {2, 0, 2}},
    {{0, -2, 2}, {0, 2, -2}, {1, -1, 1}},
    {{-3, -3, 3}, {0, 2, 2}, {1, 1, -1}, {-2, 0, -2}},
    {{-1, 1, 1}, {1, -1, 1}},
    {{1, 1, 1}, {1, -1, 1}, {-1, 1, 1}},
    {{0, 0, 4}, {-2, -2, 2}, {-1, -1, 1}},
    {{2, 2, -2}, {2, 2, -2}, {1, 1, -1}, {-1, -1, 1}},
    {{1, -1, 1}, {2, -2, 0}, {2, -2, 0}},
    {{4, 0, 0}, {2, -2, 2}, {-1, 1, -1}, {1, -1, 1}},
    {{0, 2, -2}, {3, -3, -3}, {-1, 1, 1}, {2, 2, 0}},
    {{-4, 0, 0}, {-2, -2, 2}, {-1, -1, 1}},
    {{2, -2, 0}, {-2, 2, 0}},
    {{0, 4, 0}, {-2, 2, 2}, {1, -1, -1}},
    {{0, 4, 0}, {1, -1, 1}, {-2, 2, -2}},
    {{0, 4, 0}, {0, -4, 0}},
    {{2, -2, 0}, {-2, 2, 0}, {1, -1, 1}},
    {{-3, -3, -3}, {-2, 0, 2}, {-1, -1, -1}, {-2, 2, 0}},
    {{1, 1, 1}, {0, -4, 0}, {-2, -2, -2}, {-1, -1, -1}},
    {{0, -4, 0}, {-2, -2, -2}, {-1, -1, -1}},
    {{-1, 1, 1}, {2, -2, 0}, {-2, 2, 0}},
    {{0, 4, 0}, {2, 2, -2}, {-1, -1, 1}, {-1, -1, 1}},
    {{-3, 3, -3}, {-2, -2, 0}, {-1, 1, -1}, {-2, 0, 2}},
    {{0, 4, 0}, {2, 2, -2}, {-1, -1, 1}},
    {{2, -2, 0}, {-2, 2, 0}, {2, -2, 0}, {2, -2, 0}},
    {{-2, -2, 0}, {-2, -2, 0}, {-1, -1, 1}},
    {{1, 1, 1}, {-2, -2, 0}, {-2, -2, 0}},
    {{-2, -2, 0}, {-2, -2, 0}},
    {{-1, -1, 1}},
    {{1, 1, 1}, {-1, -1, 1}},
    {{-1, -1, 1}, {-1, -1, 1}},
    {{-1, -1, 1}, {-2, -2, 0}, {2, 2, 0}},
    {{0, -2, 2}, {0, -2, 2}},
    {{0, 0, 4}, {2, -2, 2}, {1, -1, 1}},
    {{0, -2, 2}, {0, -2, 2}, {-1, -1, 1}},
    {{3, -3, 3}, {0, -2, -2}, {-1, 1, -1}, {2, 2, 0}},
    {{-1, -1, 1}, {-1, 1, 1}},
    {{1, 1, 1}, {-1, -1, 1}, {-1, 1, 1}},
    {{-1, -1, 1}, {-2, 0, 2}, {-2, 0, 2}},
    {{4, 0, 0}, {-2, -2, 2}, {-1, -1, 1}, {-1, -1, 1}},
    {{0, 4, 0}, {-2, 2, -2}, {1, -1, 1}},
    {{-2, 2, -2}, {-2, 2, -2}, {-1, 1, -1}, {-1, 1, -1}},
    {{-2, 0, -2}, {3, -3, -3}, {0, 2, -2}, {-1, 1, 1}},
    {{4, 0, 0}, {-2, 2, -2}, {1, -1, 1}},
    {{-2, 0, 2}, {2, 0, -2}},
    {{0, 0, 4}, {-2, 2, 2}, {-1, 1, 1}},
    {{-1, -1, 1}, {-2, 0, 2}, {2, 0, -2}},
    {{-2, 0, -2}, {-3, 3, 3}, {-2, -2, 0}, {-1, 1, 1}},
    {{0, 0, -4}, {2, 2, -2}, {-1, -1, 1}},
    {{0, 0, 4}, {0, 0, 4}},
    {{1, 1, 1}, {1, 1, 1}, {2, 2, 2}, {0, 0, 4}},
    {{1, 1, 1}, {2, 2, 2}, {0, 0, 4}},
    {{-2, 0, 2}, {2, 0, -2}, {-1, 1, 1}},
    {{0, 0, 4}, {2, -2, 2}, {1, -1, 1}, {1, -1, 1}},
    {{-2, 0, 2}, {-2, 0, 2}, {-2, 0, 2}, {2, 0, -2}},
    {{1, -1, 1}, {2, 0, 2}, {2, 0, 2}},
    {{2, 0, 2}, {-3, -3, 3}, {-2, 2, 0}, {-1, -1, 1}},
    {{0, 0, 4}, {2, -2, 2}, {1, -1, 1}},
    {{1, 1, 1}, {2, 0, 2}, {2, 0, 2}},
    {{2, 0, 2}, {2, 0, 2}},
    {{-1, -1, 1}, {1, -1, 1}},
    {{1, 1, 1}, {-1, -1, 1}, {1, -1, 1}},
    {{-1, -1, 1}, {0, -2, 2}, {0, 2, -2}},
    {{0, -4, 0}, {1, 1, -1}, {2, 2, -2}, {-1, -1, 1}},
    {{0, -2, 2}, {0, -2, 2}, {1, -1, 1}},
    {{0, 0, 4}, {2, -2, 2}, {1, -1, 1}, {1, -1, 1}},
    {{0, -2, 2}, {0, -2, 2}, {0, -2, 2}, {0, 2, -2}},
    {{0, 2, 2}, {0, 2, 2}, {1, -1, -1}},
    {{-1, 1, 1}, {1, -1, 1}, {-1, -1, 1}},
    {{-1, 1, 1}, {1, -1, 1}, {-1, -1, 1}, {1, 1, 1}},
    {{0, 0, 4}, {-2, -2, 2}, {-1, -1, 1}, {-1, -1, 1}},
    {{1, 1, 1}, {1, -1, 1}, {1, -1, -1}},
    {{0, 4, 0}, {-2, 2, -2}, {1, -1, 1}, {1, -1, 1}},
    {{1, 1, 1}, {-1, -1, 1}, {1, -1, -1}},
    {{0, -2, -2}, {0, 2, 2}, {1, 1, 1}},
    {{1, 1, 1}, {1, -1, -1}},
    {{4, 0, 0}, {2, -2, -2}, {1, -1, -1}},
    {{-2, 2, 2}, {-1, 1, 1}, {-2, 2, 2}, {1, -1, -1}},
    {{3, -3, 3}, {0, 2, 2}, {-1, 1, -1}, {-2, 0, 2}},
    {{0, -4, 0}, {-2, 2, 2}, {-1, 1, 1}},
    {{-3, -3, 3}, {2, -2, 0}, {0, 2, 2}, {-1, -1, 1}},
    {{-1, 1, 1}, {-2, 2, 2}, {0, 0, 4}},
    {{1, 1, 1}, {0, 2, 2}, {0, 2, 2}},
    {{0, 2, 2}, {0, 2, 2}},
    {{4, 0, 0}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}},
    {{1, -1, 1}, {-1, -1, 1}, {1, 1, 1}},
    {{-2, 0, -2}, {2, 0, 2}, {1, 1, 1}},
    {{1, 1, 1}, {1, -1, 1}},
    {{-2, -2, 0}, {2, 2, 0}, {1, 1, 1}},
    {{1, 1, 1}, {-1, -1, 1}},
    {{1, 1, 1}, {1, 1, 1}},
    {{1, 1, 1}},
    {{1, 1, 1}},
    {{1, 1, 1}, {1, 1, 1}},
    {{1, 1, 1}, {-1, -1, 1}},
    {{-2, -2, 0}, {2, 2, 0}, {1, 1, 1}},
    {{1, 1, 1}, {1, -1, 1}},
    {{-2, 0, -2}, {2, 0, 2}, {1, 1, 1}},
    {{1, -1, 1}, {-1, -1, 1}, {1, 1, 1}},
    {{4, 0, 0}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}},
    {{0, 2, 2}, {0, 2, 2}},
    {{1, 1, 1}, {0, 2, 2}, {0, 2, 2}},
    {{-1, 1, 1}, {-2, 2, 2}, {0, 0, 4}},
    {{-3, -3, 3}, {2, -2, 0}, {0, 2, 2}, {-1, -1, 1}},
    {{0, -4, 0}, {-2, 2, 2}, {-1, 1, 1}},
    {{3, -3, 3}, {0, 2, 2}, {-1, 1, -1}, {-2, 0, 2}},
    {{-2, 2, 2}, {-1, 1, 1}, {-2, 2, 2}, {1, -1, -1}},
    {{4, 0, 0}, {2, -2, -2}, {1, -1, -1}},
    {{1, 1, 1}, {1, -1, -1}},
    {{0, -2, -2}, {0, 2, 2}, {1, 1, 1}},
    {{1, 1, 1}, {-1, -1, 1}, {1, -1, -1}},
    {{0, 4, 0}, {-2, 2, -2}, {1, -1, 1}, {1, -1, 1}},
    {{1, 1, 1}, {1, -1, 1}, {1, -1, -1}},
    {{0, 0, 4}, {-2, -2, 2}, {-1, -1, 1}, {-1, -1, 1}},
    {{-1, 1, 1}, {1, -1, 1}, {-1, -1, 1}, {1, 1, 1}},
    {{-1, 1, 1}, {1, -1, 1}, {-1, -1, 1}},
    {{0, 2, 2}, {0, 2, 2}, {1, -1, -1}},
    {{0, -2, -2}, {0, 2, 2}, {0, 2, 2}, {0, 2, 2}},
    {{0, 0, 4}, {2, -2, 2}, {1, -1, 1}, {1, -1, 1}},
    {{0, -2, 2}, {0, -2, 2}, {1, -1, 1}},
    {{0, -4, 0}, {1, 1, -1}, {2, 2, -2}, {-1, -1, 1}},
    {{-1, -1, 1}, {0, -2, 2}, {0, 2, -2}},
    {{1, 1, 1}, {-1, -1, 1}, {1, -1, 1}},
    {{-1, -1, 1}, {1, -1, 1}},
    {{2, 0, 2}, {2, 0, 2}},
    {{1, 1, 1}, {2, 0, 2}, {2, 0, 2}},
    {{0, 0, 4}, {2, -2, 2}, {1, -1, 1}},
    {{2, 0, 2}, {-3, -3, 3}, {-2, 2, 0}, {-1, -1, 1}},
    {{1, -1, 1}, {2, 0, 2}, {2, 0, 2}},
    {{-2, 0, -2}, {2, 0, 2}, {2, 0, 2}, {2, 0, 2}},
    {{0, 0, 4}, {2, -2, 2}, {1, -1, 1}, {1, -1, 1}},
    {{-2, 0, 2}, {2, 0, -2}, {-1, 1, 1}},
    {{1, 1, 1}, {2, 2, 2}, {0, 0, 4}},
    {{1, 1, 1}, {1, 1, 1}, {2, 2, 2}, {0, 0, 4}},
    {{0, 0, 4}, {0, 0, 4}},
    {{0, 0, -4}, {2, 2, -2}, {-1, -1, 1}},
    {{-2, 0, -2}, {-3, 3, 3}, {-2, -2, 0}, {-1, 1, 1}},
    {{-1, -1, 1}, {-2, 0, 2}, {2, 0, -2}},
    {{0, 0, 4}, {-2, 2, 2}, {-1, 1, 1}},
    {{-2, 0, 2}, {2, 0, -2}},
    {{4, 0, 0}, {-2, 2, -2}, {1, -1, 1}},
    {{-2, 0, -2}, {3, -3, -3}, {0, 2, -2}, {-1, 1, 1}},
    {{-2, 2, -2}, {-2, 2, -2}, {-1, 1, -1}, {-1, 1, -1}},
    {{0, 4, 0}, {-2, 2, -2}, {1, -1, 1}},
    {{4, 0, 0}, {-2, -2, 2}, {-1, -1, 1}, {-1, -1, 1}},
    {{-1, -1, 1}, {-2, 0, 2}, {-2, 0, 2}},
    {{1, 1, 1}, {-1, -1, 1}, {-1, 1, 1}},
    {{-1, -1, 1}, {-1, 1, 1}},
    {{3, -3, 3}, {0, -2, -2}, {-1, 1, -1}, {2, 2, 0}},
    {{0, -2, 2}, {0, -2, 2}, {-1, -1, 1}},
    {{0, 0, 4}, {2, -2, 2}, {1, -1, 1}},
    {{0, -2, 2}, {0, -2, 2}},
    {{-1, -1, 1}, {-2, -2, 0}, {2, 2, 0}},
    {{-1, -1, 1}, {-1, -1, 1}},
    {{1, 1, 1}, {-1, -1, 1}},
    {{-1, -1, 1}},
    {{-2, -2, 0}, {-2, -2, 0}},
    {{1, 1, 1}, {-2, -2, 0}, {-2, -2, 0}},
    {{-2, -2, 0}, {-2, -2, 0}, {-1, -1, 1}},
    {{-2, -2, 0}, {-2, -2, 0}, {-2, -2, 0}, {2, 2, 0}},
    {{0, 4, 0}, {2, 2, -2}, {-1, -1, 1}},
    {{-3, 3, -3}, {-2, -2, 0}, {-1, 1, -1}, {-2, 0, 2}},
    {{0, 4, 0}, {2, 2, -2}, {-1, -1, 1}, {-1, -1, 1}},
    {{-1, 1, 1}, {2, -2, 0}, {-2, 2, 0}},
    {{0, -4, 0}, {-2, -2, -2}, {-1, -1, -1}},
    {{1, 1, 1}, {0, -4, 0}, {-2, -2, -2}, {-1, -1, -1}},
    {{-3, -3, -3}, {-2, 0, 2}, {-1, -1, -1}, {-2, 2, 0}},
    {{2, -2, 0}, {-2, 2, 0}, {1, -1, 1}},
    {{0, 4, 0}, {0, -4, 0}},
    {{0, 4, 0}, {1, -1, 1}, {-2, 2, -2}},
    {{0, 4, 0}, {-2, 2, 2}, {1, -1, -1}},
    {{2, -2, 0}, {-2, 2, 0}},
    {{-4, 0, 0}, {-2, -2, 2}, {-1, -1, 1}},
    {{0, 2, -2}, {3, -3, -3}, {-1, 1, 1}, {2, 2, 0}},
    {{4, 0, 0}, {2, -2, 2}, {-1, 1, -1}, {1, -1, 1}},
    {{1, -1, 1}, {2, -2, 0}, {2, -2, 0}},
    {{2, 2, -2}, {2, 2, -2}, {1, 1, -1}, {-1, -1, 1}},
    {{0, 0, 4}, {-2, -2, 2}, {-1, -1, 1}},
    {{1, 1, 1}, {1, -1, 1}, {-1, 1, 1}},
    {{-1, 1, 1}, {1, -1, 1}},
    {{-3, -3, 3}, {0, 2, 2}, {1, 1, -1}, {-2, 0, -2}},
    {{0, -2, 2}, {0, 2, -2}, {1, -1, 1}},
    {{1, -1, 1}, {-2, 0, -2}, {2, 0, 2}},
    {{1, -1, 1}, {1, -1, 1}},
    {{0, -4, 0}, {1, 1, -1}, {2, 2, -2}},
    {{0, -2, 2}, {0, 2, -2}},
    {{1, 1, 1}, {1, -1, 1}},
    {{1, -1, 1}},
    {{-4, 0, 0}, {-1, -1, -1}, {-2, -2, -2}},
    {{-4, 0, 0}, {-1, -1, -1}, {-2, -2, -2}, {1, 1, 1}},
    {{3, 3, 3}, {0, 2, -2}, {-1, -1, -1}, {-2, 2, 0}},
    {{1, -1, -1}, {2, -2, 0}, {2, -2, 0}},
    {{1, 1, 1}, {3, 3, 3}, {0, -2, 2}, {-2, 0, 2}},
    {{-2, 0, 2}, {-2, 0, 2}, {1, -1, -1}},
    {{0, -2, -2}, {0, 2, 2}, {-1, 1, 1}},
    {{-1, 1, 1}, {1, -1, -1}},
    {{-1, -1, -1}, {-2, -2, -2}, {2, 2, 2}, {1, 1, 1}},
    {{-1, -1, 1}, {1, -1, 1}, {1, -1, -1}},
    {{0, 0, -4}, {2, 2, 2}, {-1, -1, -1}},
    {{1, -1, 1}, {1, -1, -1}},
    {{0, -4, 0}, {2, 2, 2}, {1, 1, 1}},
    {{-1, -1, 1}, {1, -1, -1}},
    {{0, -2, -2}, {0, 2, 2}},
    {{1, -1, -1}},
    {{4, 0, 0}, {4, 0, 0}},
    {{-4, 0, 0}, {-2, 2, 2}, {-1, 1, 1}},
    {{4, 0, 0}, {2, -2, 2}, {-1, 1, -1}},
    {{2, -2, 0}, {2, -2, 0}},
    {{4, 0, 0}, {-2, -2, 2}, {-1, -1, 1}},
    {{-2, 0, 2}, {-2, 0, 2}},
    {{1, 1, 1}, {-1, 1, 1}},
    {{-1, 1, 1}},
    {{4, 0, 0}, {2, 2, 2}, {1, 1, 1}},
    {{1, -1, 1}, {-1, -1, 1}},
    {{-2, 0, -2}, {2, 0, 2}},
    {{1, -1, 1}},
    {{-2, -2, 0}, {2, 2, 0}},
    {{-1, -1, 1}},
    {{1, 1, 1}},
    {},
};
// clang-format on

void check_grid(const std::array<int64_t, 3>& shape, const std::array<double, 3>& spacing, const char* caller) {
  for (int a = 0; a < 3; ++a) {
    KDSEG_CHECK(shape[a] > 0 && spacing[a] > 0 && std::isfinite(spacing[a]), caller, ": axis ", a, " has size ",
                shape[a], " and spacing ", spacing[a], "; both must be positive");
  }
}

}  // namespace

double surfel_area(int code, const std::array<double, 3>& s) {
  KDSEG_CHECK(code >= 0 && code < 256, "surfel_area: code ", code, " outside 0-255");
  double area = 0;
  for (const auto& n : kSurfelNormals[code]) {
    const double x = n[0] / 8.0 * s[1] * s[2], y = n[1] / 8.0 * s[0] * s[2], z = n[2] / 8.0 * s[0] * s[1];
    area += std::sqrt(x * x + y * y + z * z);
  }
  return area;
}

Surfels surfels(const uint8_t* mask, const std::array<int64_t, 3>& s, const std::array<double, 3>& spacing) {
  check_grid(s, spacing, "surfels");
  std::array<double, 256> area{};
  for (int code = 0; code < 256; ++code) area[static_cast<size_t>(code)] = surfel_area(code, spacing);
  const auto inside = [&](int64_t i, int64_t j, int64_t k) {
    return i >= 0 && i < s[0] && j >= 0 && j < s[1] && k >= 0 && k < s[2] && mask[(i * s[1] + j) * s[2] + k] != 0;
  };
  Surfels out;
  for (int64_t i = 0; i <= s[0]; ++i) {
    for (int64_t j = 0; j <= s[1]; ++j) {
      for (int64_t k = 0; k <= s[2]; ++k) {
        int code = 0;
        for (int bit = 0; bit < 8; ++bit) {
          const int a = bit >> 2 & 1, b = bit >> 1 & 1, c = bit & 1;
          if (inside(i - 1 + a, j - 1 + b, k - 1 + c)) code |= 128 >> bit;
        }
        if (code == 0 || code == 255) continue;
        out.corners.push_back({i, j, k});
        out.areas.push_back(area[static_cast<size_t>(code)]);
      }
    }
  }
  return out;
}

double surfel_surface_dice(const uint8_t* prediction, const uint8_t* reference, const std::array<int64_t, 3>& shape,
                           const std::array<double, 3>& spacing, double tolerance_mm) {
  return surfel_surface_dice(surfels(prediction, shape, spacing), surfels(reference, shape, spacing), shape, spacing,
                             tolerance_mm);
}

double surfel_surface_dice(const Surfels& prediction, const Surfels& reference, const std::array<int64_t, 3>& shape,
                           const std::array<double, 3>& spacing, double tolerance_mm) {
  check_grid(shape, spacing, "surfel_surface_dice");
  KDSEG_CHECK(tolerance_mm > 0 && std::isfinite(tolerance_mm),
              "surfel_surface_dice: the tolerance must be positive, got ", tolerance_mm);
  const Surfels* both[2] = {&prediction, &reference};
  if (prediction.corners.empty() && reference.corners.empty()) return 1.0;
  if (prediction.corners.empty() || reference.corners.empty()) return 0.0;
  Shape lo = prediction.corners[0], hi = lo;
  for (const Surfels* s : both) {
    for (const Voxel& p : s->corners) {
      for (int a = 0; a < 3; ++a) {
        lo[a] = std::min(lo[a], p[a]);
        hi[a] = std::max(hi[a], p[a]);
      }
    }
  }
  const Shape size = {hi[0] - lo[0] + 1, hi[1] - lo[1] + 1, hi[2] - lo[2] + 1};
  // As DeepMind's code compares the distance (a square root) with the tolerance.
  double within = 0, total = 0;
  for (int from = 0; from < 2; ++from) {
    const std::vector<double> to_other = squared_distances(both[1 - from]->corners, lo, size, spacing);
    const Surfels& mine = *both[from];
    for (size_t n = 0; n < mine.corners.size(); ++n) {
      const Voxel& p = mine.corners[n];
      const double d = std::sqrt(
          to_other[static_cast<size_t>(((p[0] - lo[0]) * size[1] + (p[1] - lo[1])) * size[2] + (p[2] - lo[2]))]);
      total += mine.areas[n];
      if (d <= tolerance_mm) within += mine.areas[n];
    }
  }
  return within / total;
}

}  // namespace kdseg
