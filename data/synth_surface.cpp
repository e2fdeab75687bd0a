#include "data/synth_surface.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/random.h"
#include "data/layout.h"

namespace kdseg::data::synth {
namespace {
using torch::Tensor;

constexpr double kFovXY = 320.0;           // mm
constexpr double kFovZ = 160.0;            // mm
constexpr double kAmbiguityLength = 20.0;  // mm, correlation of a(x)
constexpr double kAmbiguitySpread = 0.5;   // log-sd of a(x)
constexpr double kRaterLength = 25.0;      // mm, correlation of each rater's field g
// A structure's displacement grows as (radius / reference)^kSizeExponent: KiTS23's measured
// disagreement (mm, from pairwise Dice and volume) grows so with the structure's size.
constexpr double kSizeExponent = 0.45;
constexpr std::array<double, 3> kReferenceRadius{37, 20, 9};  // mm, per StructureKind
constexpr double kPi = 3.14159265358979323846;
// The streams of derive_seed(seed, {case, ...}): the raters' case-level draws, and rater j's own.
constexpr uint64_t kRaterStream = 0x7261746572;  // "rater"
constexpr uint64_t kNoiseStream = 17;

// Fitted by simulation to KiTS23's agreement.csv (docs/benchmarks.md "Synthetic raters").
const SurfaceCalibration kKits23{{0.51, 0.37, 0.34}, {0.30, 0.15, 0.25}, 0.3, {0.0, 0.0, 4.0}, 0.85};
// Chosen for a pairwise Dice of 0.75-0.90 on QUBIQ's kidney mask.
const SurfaceCalibration kHigh{{2.6, 2.5, 1.5}, {0.3, 0.3, 0.3}, 0.6, {0.0, 15.0, 8.0}, 0.6};

// Voxel centres in mm (centred on the field of view), one axis each, float32.
struct Grid {
  int64_t n, k;
  double sxy, sz;
  Tensor x, y, z;  // [n,1,1], [1,n,1], [1,1,k]
};

Grid make_grid(int64_t n, int64_t k) {
  Grid g{n, k, kFovXY / static_cast<double>(n), kFovZ / static_cast<double>(k), {}, {}, {}};
  const auto f = torch::TensorOptions().dtype(torch::kFloat);
  const Tensor xy = (torch::arange(n, f) + 0.5) * g.sxy - kFovXY / 2;
  g.x = xy.view({n, 1, 1});
  g.y = xy.view({1, n, 1});
  g.z = ((torch::arange(k, f) + 0.5) * g.sz - kFovZ / 2).view({1, 1, k});
  return g;
}

// plane [P, J] x depth [J, Z], written out rather than left to the BLAS LibTorch links, which may
// be the reference one (its sgemm took two thirds of synth's time at 128x128x32). The loop over z
// vectorises, and each output sums over j in the same order on every machine.
Tensor plane_times_depth(const Tensor& plane, const Tensor& depth) {
  const int64_t points = plane.size(0), terms = plane.size(1), zs = depth.size(1);
  Tensor out = torch::zeros({points, zs}, torch::kFloat);
  const float* p = plane.data_ptr<float>();
  const float* d = depth.data_ptr<float>();
  float* o = out.data_ptr<float>();
  at::parallel_for(0, points, 256, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      float* row = o + i * zs;
      for (int64_t j = 0; j < terms; ++j) {
        const float v = p[i * terms + j];
        const float* dj = d + j * zs;
        for (int64_t z = 0; z < zs; ++z) row[z] += v * dj[z];
      }
    }
  });
  return out;
}

// A smooth Gaussian random field on the grid, mean 0, variance 1, covariance exp(-r^2 / 2L^2):
// the sum of M random Fourier features sqrt(2/M) cos(k_m . x + phi_m), k_m ~ N(0, I / L^2),
// evaluated exactly at the voxel centres. cos(a + b) is the real part of e^{ia} e^{ib}, so with a
// over the (x, y) plane and b along z the sum over features is one real product [X*Y, 2M] x [2M, Z].
Tensor smooth_field(Rng& rng, const Grid& g, double length) {
  constexpr int kFeatures = 48;
  std::vector<float> k(3 * kFeatures), phase(kFeatures);
  for (int m = 0; m < kFeatures; ++m) {
    for (int a = 0; a < 3; ++a) k[static_cast<size_t>(3 * m + a)] = static_cast<float>(rng.normal() / length);
    phase[static_cast<size_t>(m)] = static_cast<float>(rng.uniform(0, 2 * kPi));
  }
  const Tensor kk = torch::from_blob(k.data(), {kFeatures, 3}, torch::kFloat).clone();
  const Tensor ph = torch::from_blob(phase.data(), {kFeatures}, torch::kFloat).clone();
  // Per axis [points, M] angles; the phase rides on x.
  const Tensor ax = g.x.view({-1, 1}) * kk.select(1, 0) + ph;
  const Tensor ay = g.y.view({-1, 1}) * kk.select(1, 1);
  const Tensor az = g.z.view({-1, 1}) * kk.select(1, 2);
  const Tensor a = (ax.unsqueeze(1) + ay.unsqueeze(0)).flatten(0, 1);    // [X*Y, M]
  const Tensor plane = torch::cat({a.cos(), -a.sin()}, 1).contiguous();  // [X*Y, 2M]
  const Tensor depth = (torch::cat({az.cos(), az.sin()}, 1) * std::sqrt(2.0 / kFeatures)).t().contiguous();  // [2M, Z]
  return plane_times_depth(plane, depth).view({g.n, g.n, g.k});
}

// Signed distance (mm, positive inside) to an ellipsoid, to first order: (1 - q) / |grad q| with
// q the ellipsoid's normalised radius; exact for a sphere and close to any surface.
Tensor ellipsoid_distance(const Grid& g, const std::array<double, 3>& c, const std::array<double, 3>& r) {
  const Tensor dx = (g.x - c[0]) / r[0], dy = (g.y - c[1]) / r[1], dz = (g.z - c[2]) / r[2];
  const Tensor q = (dx * dx + dy * dy + dz * dz).sqrt().clamp_min(1e-6);
  const Tensor gradient = ((dx / r[0]).pow(2) + (dy / r[1]).pow(2) + (dz / r[2]).pow(2)).sqrt().clamp_min(1e-9) / q;
  return (1 - q) / gradient;
}

std::array<double, 3> random_direction(Rng& rng) {
  std::array<double, 3> u{rng.normal(), rng.normal(), rng.normal()};
  const double norm = std::max(1e-9, std::sqrt(u[0] * u[0] + u[1] * u[1] + u[2] * u[2]));
  for (double& v : u) v /= norm;
  return u;
}

// Log-normal radius with median `median` mm, clipped to [low, high].
double radius(Rng& rng, double median, double spread, double low, double high) {
  return std::clamp(median * std::exp(spread * rng.normal()), low, high);
}

struct Latent {
  StructureName name;
  double radius;     // mm, equivalent
  Tensor distance;   // mm, positive inside
  Tensor ambiguity;  // a(x) > 0, mean 1
};

// A structure's share of each voxel in the image: a logistic ramp whose scale is the voxel's
// partial volume plus `faint` mm per unit of ambiguity.
Tensor image_occupancy(const Latent& s, const Grid& g, double faint) {
  const double partial_volume = 0.18 * g.sxy;  // a logistic ramp about as wide as one voxel
  return torch::sigmoid(s.distance / (partial_volume + faint * s.ambiguity));
}

}  // namespace

const SurfaceCalibration& surface_calibration(RaterModel model) {
  KDSEG_CHECK(model != RaterModel::kThreshold, "synth: the threshold rater model is not a surface model");
  return model == RaterModel::kKits23 ? kKits23 : kHigh;
}

SurfaceCase make_surface_case(const SynthOptions& o, int index) {
  const SurfaceCalibration& cal = surface_calibration(o.rater_model);
  const Grid g = make_grid(o.size, o.slices);
  const uint64_t case_id = static_cast<uint64_t>(index);
  Rng rng(derive_seed(o.seed, {case_id}));
  const auto ambiguity = [&] {
    return torch::exp(kAmbiguitySpread * smooth_field(rng, g, kAmbiguityLength) -
                      kAmbiguitySpread * kAmbiguitySpread / 2);
  };

  // Latent anatomy: two kidneys, then tumours, then cysts.
  std::vector<Latent> latent;
  std::vector<std::array<double, 3>> centres, radii;
  for (const double side : {-1.0, 1.0}) {
    centres.push_back({side * rng.uniform(68, 82), rng.uniform(15, 25), rng.uniform(-10, 10)});
    radii.push_back({rng.uniform(30, 36), rng.uniform(26, 32), rng.uniform(50, 62)});
    Tensor d = ellipsoid_distance(g, centres.back(), radii.back()) + 2.5 * smooth_field(rng, g, 30);
    const double r = std::cbrt(radii.back()[0] * radii.back()[1] * radii.back()[2]);
    latent.push_back({{StructureKind::kOrgan, static_cast<int>(latent.size()) + 1, latent.size()}, r, d, ambiguity()});
  }
  const auto lesion = [&](StructureKind kind, int instance, double r, double depth_low, double depth_high) {
    const size_t host = static_cast<size_t>(rng.uniform_int(0, 1));
    const auto u = random_direction(rng);
    const double depth = rng.uniform(depth_low, depth_high);  // 1: centred on the kidney's surface
    std::array<double, 3> c{}, axes{};
    for (size_t a = 0; a < 3; ++a) {
      c[a] = centres[host][a] + u[a] * radii[host][a] * depth;
      axes[a] = r * rng.uniform(0.85, 1.15);
    }
    Tensor d = ellipsoid_distance(g, c, axes) + 0.06 * r * smooth_field(rng, g, 15);
    latent.push_back({{kind, instance, host}, r, d, ambiguity()});
  };
  const int tumours = rng.bernoulli(0.25) ? 2 : 1;
  for (int t = 0; t < tumours; ++t) {
    const double r = t == 0 ? radius(rng, 20, 0.6, 6, 50) : radius(rng, 8, 0.4, 4, 15);
    lesion(StructureKind::kTumour, t + 1, r, 0.4, 1.0);
  }
  const int cysts = rng.bernoulli(0.5) ? static_cast<int>(rng.uniform_int(1, 3)) : 0;
  for (int c = 0; c < cysts; ++c) lesion(StructureKind::kCyst, c + 1, radius(rng, 7, 0.6, 3, 25), 0.3, 0.9);

  // The image: soft tissue in a body, kidneys enhanced, tumours darker, cysts near water.
  const Tensor body =
      torch::sigmoid((1 - ((g.x / 150).pow(2) + (g.y / 110).pow(2)).sqrt()) * 130 / (0.18 * g.sxy + 1.0))
          .expand({g.n, g.n, g.k});
  Tensor hu = -1000 + body * (1000 + 40);
  const double kidney_hu = rng.uniform(140, 180);
  for (const Latent& s : latent) {
    const Tensor occupancy = image_occupancy(s, g, s.name.kind == StructureKind::kOrgan ? 1.0 : 1.5);
    Tensor value;
    if (s.name.kind == StructureKind::kOrgan) {
      value = torch::full_like(occupancy, kidney_hu);
    } else if (s.name.kind == StructureKind::kTumour) {
      // Where the raters may disagree the tumour fades towards the kidney, and its texture varies.
      const double contrast = rng.uniform(40, 70);
      value = kidney_hu - contrast * (1 - 0.5 * (s.ambiguity - 1).clamp(0, 1)) + 10 * smooth_field(rng, g, 8);
    } else {
      value = torch::full_like(occupancy, rng.uniform(0, 20));
    }
    hu = hu * (1 - occupancy) + value * occupancy;
  }
  torch::manual_seed(derive_seed(o.seed, {case_id, kNoiseStream}));
  hu = hu.to(torch::kDouble) + torch::randn({g.n, g.n, g.k}, torch::kDouble) * 12;

  // The raters.
  SurfaceCase out;
  out.spacing = {g.sxy, g.sxy, g.sz};
  for (const Latent& s : latent) out.structures.push_back(s.name);
  Rng case_rng(derive_seed(o.seed, {case_id, kRaterStream}));
  std::array<double, 3> c{};
  for (size_t kind = 0; kind < 3; ++kind) c[kind] = std::exp(cal.case_spread[kind] * case_rng.normal());
  out.masks.resize(static_cast<size_t>(o.raters));
  for (int j = 0; j < o.raters; ++j) {
    Rng r(derive_seed(o.seed, {case_id, kRaterStream, static_cast<uint64_t>(j)}));
    const double bias = cal.bias * r.normal();
    auto& mine = out.masks[static_cast<size_t>(j)];
    for (const Latent& s : latent) {
      const size_t kind = static_cast<size_t>(s.name.kind);
      const Tensor field = smooth_field(r, g, kRaterLength);
      const bool optional = s.radius < cal.optional_below[kind];
      const bool drawn = !optional || r.bernoulli(cal.keep_optional);
      const double amplitude =
          cal.amplitude[kind] * std::pow(s.radius / kReferenceRadius[kind], kSizeExponent) * c[kind];
      const Tensor shift = amplitude * (bias + s.ambiguity * field);
      mine.push_back(drawn ? (s.distance + shift > 0).to(torch::kUInt8) : torch::zeros_like(s.distance, torch::kUInt8));
    }
    for (size_t s = 0; s < latent.size(); ++s) {
      if (latent[s].name.kind == StructureKind::kOrgan) continue;
      Tensor& host = mine[latent[s].name.host];
      host = torch::maximum(host, mine[s]);
    }
  }

  // KiTS's aggregation: each instance by majority, painted kidney, then cyst, then tumour.
  const Layout layout = o.layout == Layout::kQubiq ? Layout::kKits19 : o.layout;
  Tensor label = torch::zeros({g.n, g.n, g.k}, torch::kLong);
  for (const StructureKind kind : {StructureKind::kOrgan, StructureKind::kCyst, StructureKind::kTumour}) {
    const int value = kind == StructureKind::kOrgan    ? organ_label(layout)
                      : kind == StructureKind::kTumour ? tumour_label(layout)
                                                       : 3;
    for (size_t s = 0; s < latent.size(); ++s) {
      if (latent[s].name.kind != kind) continue;
      Tensor votes = torch::zeros({g.n, g.n, g.k}, torch::kInt);
      for (const auto& rater : out.masks) votes += rater[s];
      label.masked_fill_(votes * 2 > o.raters, value);
    }
  }
  out.hu = hu.round().clamp(-1024, 3071);
  out.label = label;
  return out;
}

}  // namespace kdseg::data::synth
