// What surface distances cost per case at CT sizes, and what transforming only the surfaces'
// bounding box saves against transforming the whole grid. The baseline is the same call with
// one extra voxel at two opposite corners of both masks, which stretches the box to the grid
// (and changes the metrics only by those two voxels). Each row prints the largest difference of
// the box's HD95 (relative) and NSD from the grid's: the two voxels move HD95's percentile by
// about one rank and NSD by about 2 over the surface voxels, so one above 0.05 means the box
// gives another result, and the program exits 1.
//   surface_bench [slices=200] [repeats=3]
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "bench/bench_check.h"
#include "core/surface_distance.h"

namespace {

using Shape = std::array<int64_t, 3>;
using Spacing = std::array<double, 3>;

// An ellipsoid with semi-axes `radii` (mm) around `centre` (mm from the grid's first voxel).
std::vector<uint8_t> ellipsoid(const Shape& s, const Spacing& mm, const std::array<double, 3>& centre,
                               const std::array<double, 3>& radii) {
  std::vector<uint8_t> m(static_cast<size_t>(s[0] * s[1] * s[2]));
  for (int64_t i = 0; i < s[0]; ++i) {
    for (int64_t j = 0; j < s[1]; ++j) {
      for (int64_t k = 0; k < s[2]; ++k) {
        const double x = (static_cast<double>(i) * mm[0] - centre[0]) / radii[0];
        const double y = (static_cast<double>(j) * mm[1] - centre[1]) / radii[1];
        const double z = (static_cast<double>(k) * mm[2] - centre[2]) / radii[2];
        m[static_cast<size_t>((i * s[1] + j) * s[2] + k)] = x * x + y * y + z * z <= 1;
      }
    }
  }
  return m;
}

template <typename F>
double best_ms(int repeats, F&& f) {
  double best = 1e300;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t slices = argc > 1 ? std::atoll(argv[1]) : 200;
  const int repeats = argc > 2 ? std::atoi(argv[2]) : 3;
  const Shape shape = {slices, 512, 512};
  const Spacing mm = {1.5, 0.78, 0.78};  // a typical abdominal CT: 1.5 mm slices, 400 mm field of view
  const double depth = static_cast<double>(slices) * mm[0];
  struct Case {
    const char* name;
    std::array<double, 3> centre, radii, shift, grow;
  };
  const Case cases[] = {
      {"liver-sized (100x80x70 mm)", {depth / 2, 200, 170}, {70, 100, 80}, {3, 2, -2}, {1.03, 0.98, 1.02}},
      {"tumour-sized (15 mm)", {depth / 2, 230, 150}, {15, 15, 15}, {2, 1, 0}, {0.9, 0.9, 0.9}},
  };
  std::printf("grid %lld x 512 x 512, spacing %.2f x %.2f x %.2f mm, best of %d\n", static_cast<long long>(slices),
              mm[0], mm[1], mm[2], repeats);
  std::printf("%-28s %10s %10s %10s %10s %8s %10s\n", "case", "HD95 mm", "NSD@2mm", "box ms", "grid ms", "grid/box",
              "max err");
  kdseg::bench::ErrorCheck check(0.05);
  for (const Case& c : cases) {
    std::array<double, 3> centre_b{}, radii_b{};
    for (int a = 0; a < 3; ++a) {
      centre_b[a] = c.centre[a] + c.shift[a];
      radii_b[a] = c.radii[a] * c.grow[a];
    }
    std::vector<uint8_t> a = ellipsoid(shape, mm, c.centre, c.radii), b = ellipsoid(shape, mm, centre_b, radii_b);
    kdseg::SurfaceMetrics m;
    const double box = best_ms(repeats, [&] { m = kdseg::surface_metrics(a.data(), b.data(), shape, mm, 2.0); });
    for (auto* mask : {&a, &b}) {
      mask->front() = 1;
      mask->back() = 1;
    }
    kdseg::SurfaceMetrics g;
    const double grid = best_ms(repeats, [&] { g = kdseg::surface_metrics(a.data(), b.data(), shape, mm, 2.0); });
    const double error = check.record(std::max(std::abs(m.hd95 - g.hd95) / g.hd95, std::abs(m.nsd - g.nsd)));
    std::printf("%-28s %10.2f %10.4f %10.1f %10.1f %7.1fx %10.2g\n", c.name, m.hd95, m.nsd, box, grid, grid / box,
                error);
  }
  return check.exit_status("surface_bench");
}
