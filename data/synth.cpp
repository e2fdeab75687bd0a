#include "data/synth.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "core/error.h"
#include "core/file_util.h"
#include "core/random.h"
#include "data/nifti.h"
#include "data/synth_surface.h"

namespace kdseg::data {
namespace {
namespace fs = std::filesystem;
using torch::Tensor;

struct Storage {
  NiftiType image_type;
  double slope, inter;
  NiftiType label_type;
};
// Varied on purpose: integer and float images, a scaled unsigned encoding, several label types.
const Storage kStorages[] = {{NiftiType::kInt16, 1, 0, NiftiType::kUint8},
                             {NiftiType::kFloat32, 1, 0, NiftiType::kInt16},
                             {NiftiType::kUint16, 1, -1024, NiftiType::kUint8},
                             {NiftiType::kInt32, 1, 0, NiftiType::kFloat32},
                             {NiftiType::kFloat64, 1, 0, NiftiType::kUint8}};

// Orientation of the stored voxel axes: which canonical axis each one runs along, and its sign.
const Orientation kOrientations[] = {{{0, 1, 2}, {1, 1, 1}},  {{0, 1, 2}, {-1, -1, 1}}, {{1, 0, 2}, {1, -1, 1}},
                                     {{0, 2, 1}, {1, 1, -1}}, {{2, 0, 1}, {-1, 1, 1}},  {{1, 2, 0}, {1, -1, -1}}};

// A tumour whose radius is below this fraction of its host's is small: raters may miss it.
constexpr double kSmallTumour = 0.35;
// The stream of derive_seed(seed, {case, kRaterStream}) that draws the synthetic raters.
constexpr uint64_t kRaterStream = 0x7261746572;  // "rater"

// Soft occupancy of an ellipsoid: 1 inside, 0 outside, a logistic ramp of `blur` voxels.
Tensor ellipsoid(const Tensor& x, const Tensor& y, const Tensor& z, std::array<double, 3> c, std::array<double, 3> r,
                 double blur) {
  const Tensor d = ((x - c[0]) / r[0]).pow(2) + ((y - c[1]) / r[1]).pow(2) + ((z - c[2]) / r[2]).pow(2);
  const double mean_r = (r[0] + r[1] + r[2]) / 3;
  return torch::sigmoid((1 - d.sqrt()) * mean_r / blur);
}

using synth::StructureKind;
using synth::StructureName;

// One structure's soft occupancy, which the aggregated label thresholds at 0.5 and each rater at
// its own level. Lesions lie inside organ `host`.
struct Structure {
  StructureKind kind;
  int instance;      // from 1 within its kind
  size_t host;       // index of the host organ; an organ's own index
  bool small;        // a small tumour, which a rater may miss
  Tensor occupancy;  // canonical [X,Y,Z] float32 in [0,1]
};

struct CaseVolumes {
  Tensor hu, label;                   // canonical [X,Y,Z]
  std::vector<Structure> structures;  // organs, then tumours, then the cyst
};

// QUBIQ's synthetic cases use the KiTS19 body: kidneys as host organs and their tumours.
Layout body_layout(Layout layout) { return layout == Layout::kQubiq ? Layout::kKits19 : layout; }

CaseVolumes make_case(const SynthOptions& o, int index, Rng& rng, SynthSummary& summary) {
  const Layout layout = body_layout(o.layout);
  const int64_t n = o.size, k = o.slices;
  const auto g = torch::TensorOptions().dtype(torch::kDouble);
  const Tensor x = torch::arange(n, g).view({n, 1, 1}).expand({n, n, k});
  const Tensor y = torch::arange(n, g).view({1, n, 1}).expand({n, n, k});
  const Tensor z = torch::arange(k, g).view({1, 1, k}).expand({n, n, k});
  const double cx = n / 2.0, cy = n / 2.0;
  const Tensor body = ellipsoid(x, y, z, {cx, cy, k / 2.0}, {0.45 * n, 0.35 * n, 10.0 * k}, 1.0);
  Tensor hu = -1000 + body * (1000 + 40);  // air to soft tissue (40 HU)
  Tensor label = torch::zeros({n, n, k}, torch::kLong);
  std::vector<Structure> structures;
  const bool lits = layout == Layout::kLits;
  std::vector<std::array<double, 3>> organ_centres;
  std::vector<std::array<double, 3>> organ_radii;
  if (lits) {
    organ_centres.push_back({cx - 0.12 * n, cy - 0.02 * n, k * rng.uniform(0.45, 0.55)});
    organ_radii.push_back({0.2 * n, 0.16 * n, 0.42 * k});
  } else {
    for (const double side : {-1.0, 1.0}) {
      organ_centres.push_back({cx + side * 0.2 * n, cy + 0.08 * n, k * rng.uniform(0.45, 0.55)});
      organ_radii.push_back({0.07 * n, 0.09 * n, 0.3 * k});
    }
  }
  Tensor organ = torch::zeros({n, n, k}, g);
  for (size_t i = 0; i < organ_centres.size(); ++i) {
    const Tensor instance = ellipsoid(x, y, z, organ_centres[i], organ_radii[i], 0.7);
    organ = torch::maximum(organ, instance);
    structures.push_back({StructureKind::kOrgan, static_cast<int>(i) + 1, i, false, instance.to(torch::kFloat)});
  }
  const double organ_hu = lits ? rng.uniform(90, 120) : rng.uniform(140, 180);  // contrast-enhanced
  hu = hu * (1 - organ) + organ_hu * organ;
  label.masked_fill_(organ > 0.5, organ_label(layout));
  // Tumours: 1-3 darker blobs inside the organ with a wide, noisy boundary.
  const int tumours = static_cast<int>(rng.uniform_int(1, 3));
  for (int t = 0; t < tumours; ++t) {
    const size_t host = static_cast<size_t>(rng.uniform_int(0, static_cast<int64_t>(organ_centres.size()) - 1));
    const auto& c = organ_centres[host];
    const auto& r = organ_radii[host];
    const std::array<double, 3> centre{c[0] + rng.uniform(-0.4, 0.4) * r[0], c[1] + rng.uniform(-0.4, 0.4) * r[1],
                                       c[2] + rng.uniform(-0.3, 0.3) * r[2]};
    const double relative_radius = rng.uniform(0.25, 0.5);
    const double radius = relative_radius * std::min(r[0], r[1]);
    const Tensor blob = ellipsoid(x, y, z, centre, {radius, radius * rng.uniform(0.8, 1.2), radius * 0.6 * k / n * 2},
                                  rng.uniform(1.5, 2.5)) *
                        organ;
    const double tumour_hu = organ_hu - rng.uniform(40, 70);
    hu = hu * (1 - blob) + tumour_hu * blob;
    label.masked_fill_(blob > 0.5, tumour_label(layout));
    structures.push_back({StructureKind::kTumour, t + 1, host, relative_radius < kSmallTumour, blob.to(torch::kFloat)});
  }
  if (layout == Layout::kKits23 && rng.bernoulli(0.7)) {
    const auto& c = organ_centres[0];
    const Tensor cyst =
        ellipsoid(x, y, z, {c[0], c[1] - 0.05 * n, c[2] + 0.15 * k}, {0.03 * n, 0.03 * n, 0.08 * k}, 0.8) * organ;
    hu = hu * (1 - cyst) + 10 * cyst;
    label.masked_fill_((cyst > 0.5).logical_and(label == organ_label(layout)), 3);
    structures.push_back({StructureKind::kCyst, 1, 0, false, cyst.to(torch::kFloat)});
  }
  torch::manual_seed(derive_seed(o.seed, {static_cast<uint64_t>(index), 17}));
  hu = hu + torch::randn({n, n, k}, g) * 12;  // scanner noise
  summary.tumour_voxels += (label == tumour_label(layout)).sum().item<int64_t>();
  summary.organ_voxels += (label == organ_label(layout)).sum().item<int64_t>();
  // Scanners clip at -1024 HU.
  return {hu.round().clamp(-1024, 3071), label, std::move(structures)};
}

// Every rater's binary mask of every structure, [rater][structure], canonical [X,Y,Z] uint8. Each rater
// places boundaries at its own level of the soft occupancy (a per-rater threshold near 0.5, with
// a per-structure jitter); with 3 or more raters one under-segments (threshold ~0.65) and one
// over-segments (~0.35); each rater misses each small tumour with probability 0.3. A kidney's
// mask also covers the lesions the same rater drew inside it, as KiTS's kidney instances do.
// Draws from its own stream, so that the image and the aggregated label do not depend on R.
std::vector<std::vector<Tensor>> rater_masks(const SynthOptions& o, int index,
                                             const std::vector<Structure>& structures) {
  Rng rng(derive_seed(o.seed, {static_cast<uint64_t>(index), kRaterStream}));
  const int raters = o.raters;
  int under = -1, over = -1;
  if (raters >= 3) {
    under = static_cast<int>(rng.uniform_int(0, raters - 1));
    over = static_cast<int>(rng.uniform_int(0, raters - 2));
    if (over >= under) ++over;
  }
  std::vector<std::vector<Tensor>> masks(static_cast<size_t>(raters));
  for (int j = 0; j < raters; ++j) {
    const double level = j == under  ? rng.uniform(0.62, 0.68)
                         : j == over ? rng.uniform(0.32, 0.38)
                                     : 0.5 + rng.uniform(-0.08, 0.08);
    auto& mine = masks[static_cast<size_t>(j)];
    for (const Structure& s : structures) {
      const double threshold = std::clamp(level + rng.uniform(-0.03, 0.03), 0.3, 0.7);
      const bool missed = s.kind == StructureKind::kTumour && s.small && rng.bernoulli(0.3);
      mine.push_back(missed ? torch::zeros_like(s.occupancy, torch::kUInt8)
                            : (s.occupancy > threshold).to(torch::kUInt8));
    }
    for (size_t s = 0; s < structures.size(); ++s) {
      if (structures[s].kind == StructureKind::kOrgan) continue;
      Tensor& host = mine[structures[s].host];
      host = torch::maximum(host, mine[s]);
    }
  }
  return masks;
}

// The image and label file of case `i` in the layout's naming (LiTS: two batch folders and a
// mix of .nii and .nii.gz; KiTS: case_NNNNN/imaging.nii.gz; QUBIQ: caseNN/image.nii.gz and no
// label file).
std::pair<std::string, std::string> case_file_names(const std::string& dir, Layout layout, int i) {
  if (layout == Layout::kLits) {
    const std::string batch = (fs::path(dir) / (i % 2 == 0 ? "batch1" : "batch2")).string();
    fs::create_directories(batch);
    const std::string ext = i % 3 == 2 ? ".nii.gz" : ".nii";
    return {batch + "/volume-" + std::to_string(i) + ext, batch + "/segmentation-" + std::to_string(i) + ext};
  }
  char name[32];
  if (layout == Layout::kQubiq) {
    std::snprintf(name, sizeof name, "case%02d", i + 1);
  } else {
    std::snprintf(name, sizeof name, "case_%05d", i);
  }
  const std::string folder = (fs::path(dir) / name).string();
  fs::create_directories(folder);
  if (layout == Layout::kQubiq) return {folder + "/image.nii.gz", ""};
  return {folder + "/imaging.nii.gz", folder + "/segmentation.nii.gz"};
}

// Writes each rater's masks of case folder `folder` in stored orientation: KiTS23's
// instances/{kidney,tumor,cyst}_instance-I_annotation-J.nii.gz, or QUBIQ's task01_segRR.nii.gz
// (the union of the rater's kidneys, lesions included: QUBIQ's kidney task).
void write_rater_files(const std::string& folder, Layout layout, const std::vector<StructureName>& structures,
                       const std::vector<std::vector<Tensor>>& masks, const Orientation& orient, const Affine& affine) {
  char name[64];
  if (layout == Layout::kQubiq) {
    for (size_t j = 0; j < masks.size(); ++j) {
      Tensor kidneys = torch::zeros_like(masks[j].front());
      for (size_t s = 0; s < structures.size(); ++s) {
        if (structures[s].kind == StructureKind::kOrgan) kidneys = torch::maximum(kidneys, masks[j][s]);
      }
      std::snprintf(name, sizeof name, "task01_seg%02d.nii.gz", static_cast<int>(j) + 1);
      write_nifti((fs::path(folder) / name).string(), from_canonical(kidneys, orient), affine, NiftiType::kUint8);
    }
    return;
  }
  const fs::path instances = fs::path(folder) / "instances";
  fs::create_directories(instances);
  static const char* const kKindNames[] = {"kidney", "tumor", "cyst"};
  for (size_t s = 0; s < structures.size(); ++s) {
    for (size_t j = 0; j < masks.size(); ++j) {
      std::snprintf(name, sizeof name, "%s_instance-%d_annotation-%d.nii.gz",
                    kKindNames[static_cast<size_t>(structures[s].kind)], structures[s].instance,
                    static_cast<int>(j) + 1);
      write_nifti((instances / name).string(), from_canonical(masks[j][s], orient), affine, NiftiType::kUint8);
    }
  }
}

// Refuses a non-empty folder that synth did not write with these options, unless `force`;
// then records the options in it.
void claim_output_folder(const std::string& dir, const SynthOptions& o) {
  refuse_symlink_output(dir);
  std::error_code ec;
  fs::create_directories(dir, ec);
  KDSEG_CHECK(!ec, dir, ": cannot create the output folder: ", ec.message());
  const std::string marker = (fs::path(dir) / ".kdseg-synth.json").string();
  const std::string record =
      "{\"layout\": \"" + std::string(enum_name(o.layout)) + "\", \"cases\": " + std::to_string(o.cases) +
      ", \"size\": " + std::to_string(o.size) + ", \"slices\": " + std::to_string(o.slices) +
      ", \"seed\": " + std::to_string(o.seed) +
      (o.raters > 0 ? ", \"raters\": " + std::to_string(o.raters) : std::string()) +
      (o.rater_model != RaterModel::kThreshold ? ", \"rater_model\": \"" + std::string(enum_name(o.rater_model)) + "\""
                                               : std::string()) +
      "}\n";
  if (!o.force && !fs::is_empty(dir)) {
    KDSEG_CHECK(fs::is_regular_file(marker), dir, ": is not empty and kdseg synth did not write it (it may be real ",
                "data); choose an empty folder, or pass --force to write into it");
    const std::string previous = read_file(marker);
    KDSEG_CHECK(previous == record, dir, ": holds a synthetic dataset made with other options (",
                previous.substr(0, previous.find('\n')), "); choose another folder, or pass --force to replace it");
  }
  write_file_atomic(marker, record);
}

// The surface model's cases (synth_surface.h): the same storages and orientations as the first
// model's, voxel sizes from the fixed field of view.
void write_surface_cases(const std::string& dir, const SynthOptions& o, SynthSummary& summary) {
  for (int i = 0; i < o.cases; ++i) {
    const synth::SurfaceCase v = synth::make_surface_case(o, i);
    const Storage& storage = kStorages[static_cast<size_t>(i) % std::size(kStorages)];
    const Orientation& orient = kOrientations[static_cast<size_t>(i) % std::size(kOrientations)];
    const auto [sx, sy, sz] = v.spacing;
    const Affine canonical{sx, 0, 0, -100.0, 0, sy, 0, -120.0, 0, 0, sz, -300.0, 0, 0, 0, 1};
    const Affine affine = affine_in_orientation(orient, canonical, {v.hu.size(0), v.hu.size(1), v.hu.size(2)});
    const auto [image_path, label_path] = case_file_names(dir, o.layout, i);
    write_nifti(image_path, from_canonical(v.hu, orient), affine, storage.image_type, storage.slope, storage.inter);
    if (!label_path.empty()) write_nifti(label_path, from_canonical(v.label, orient), affine, storage.label_type);
    write_rater_files(fs::path(image_path).parent_path().string(), o.layout, v.structures, v.masks, orient, affine);
    const Layout body = body_layout(o.layout);
    summary.tumour_voxels += (v.label == tumour_label(body)).sum().item<int64_t>();
    summary.organ_voxels += (v.label == organ_label(body)).sum().item<int64_t>();
    ++summary.cases;
  }
}

}  // namespace

SynthSummary write_synthetic_dataset(const std::string& dir, const SynthOptions& o) {
  KDSEG_CHECK(o.cases >= 1 && o.size >= 16 && o.slices >= 4,
              "synth: need at least 1 case, 16x16 pixels and 4 slices, got ", o.cases, " cases of ", o.size, "x",
              o.size, "x", o.slices);
  KDSEG_CHECK(o.raters >= 0, "synth: --raters must be 0 or more, got ", o.raters);
  KDSEG_CHECK(o.raters == 0 || o.layout == Layout::kKits23 || o.layout == Layout::kQubiq, "synth: --raters ", o.raters,
              " needs --layout kits23 or qubiq (", enum_name(o.layout), " has no rater files)");
  KDSEG_CHECK(o.layout != Layout::kQubiq || o.raters >= 1,
              "synth: --layout qubiq needs --raters 1 or more (its labels are the raters' masks)");
  KDSEG_CHECK(o.rater_model == RaterModel::kThreshold || o.raters >= 1, "synth: --rater-model ",
              enum_name(o.rater_model), " needs --raters 1 or more (its label is the raters' majority)");
  claim_output_folder(dir, o);
  SynthSummary summary;
  if (o.rater_model != RaterModel::kThreshold) {
    write_surface_cases(dir, o, summary);
    return summary;
  }
  for (int i = 0; i < o.cases; ++i) {
    Rng rng(derive_seed(o.seed, {static_cast<uint64_t>(i)}));
    const CaseVolumes v = make_case(o, i, rng, summary);
    const Storage& storage = kStorages[static_cast<size_t>(i) % std::size(kStorages)];
    const Orientation& orient = kOrientations[static_cast<size_t>(i) % std::size(kOrientations)];
    // Canonical affine: spacing on the diagonal, origin somewhere in the scanner.
    const double sx = rng.uniform(0.6, 0.9), sz = rng.uniform(1.0, 3.0);
    const Affine canonical{sx, 0, 0, -100.0, 0, sx, 0, -120.0, 0, 0, sz, -300.0, 0, 0, 0, 1};
    const Affine affine = affine_in_orientation(orient, canonical, {v.hu.size(0), v.hu.size(1), v.hu.size(2)});
    const auto [image_path, label_path] = case_file_names(dir, o.layout, i);
    write_nifti(image_path, from_canonical(v.hu, orient), affine, storage.image_type, storage.slope, storage.inter);
    if (!label_path.empty()) write_nifti(label_path, from_canonical(v.label, orient), affine, storage.label_type);
    if (o.raters > 0) {
      std::vector<StructureName> names;
      for (const Structure& s : v.structures) names.push_back({s.kind, s.instance, s.host});
      write_rater_files(fs::path(image_path).parent_path().string(), o.layout, names, rater_masks(o, i, v.structures),
                        orient, affine);
    }
    ++summary.cases;
  }
  return summary;
}

}  // namespace kdseg::data
