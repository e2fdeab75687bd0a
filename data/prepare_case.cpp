#include "data/prepare_case.h"

#include "data/rater_agreement.h"

#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <future>

#include "core/error.h"
#include "core/parallel.h"
#include "data/nifti.h"

namespace kdseg::data::detail {
namespace {
namespace fs = std::filesystem;
using torch::Tensor;

// Label planes tested for the slice selection at a time (a few MB of mask).
constexpr int64_t kPlanesPerStep = 16;

std::string file_name(const std::string& path) { return fs::path(path).filename().string(); }

// Which byte values occur among `n` bytes, on `threads` threads.
std::array<bool, 256> values_present(const uint8_t* v, int64_t n, int threads) {
  std::vector<std::array<bool, 256>> seen(static_cast<size_t>(std::max(1, threads)));
  const auto parts = static_cast<int64_t>(seen.size());
  parallel_for(parts, threads, [&](int64_t t) {
    std::array<bool, 256>& mine = seen[static_cast<size_t>(t)];
    mine.fill(false);
    for (int64_t i = n * t / parts, last = n * (t + 1) / parts; i < last; ++i) mine[v[i]] = true;
  });
  std::array<bool, 256> all{};
  for (const auto& mine : seen) {
    for (size_t value = 0; value < 256; ++value) all[value] = all[value] || mine[value];
  }
  return all;
}

// The label values as uint8 [I,J,K], each checked against the layout's set; the error lists
// those that are not.
Tensor label_bytes(const Volume& label, Layout layout, const std::string& label_path, int threads) {
  const Tensor stored = label.voxels.permute({2, 1, 0});  // the file's [K,J,I] order, contiguous
  Tensor bytes;
  if (stored.scalar_type() == torch::kByte) {
    bytes = stored;
  } else if (stored.numel() > 0) {
    const bool whole = !stored.is_floating_point() || stored.eq(stored.round()).all().item<bool>();
    if (whole && stored.min().item<double>() >= 0 && stored.max().item<double>() <= 255)
      bytes = stored.to(torch::kByte);
  }
  const std::vector<int> allowed = label_values(layout);
  std::vector<std::string> bad;
  if (bytes.defined()) {
    const Tensor flat = bytes.contiguous();
    const std::array<bool, 256> seen = values_present(flat.data_ptr<uint8_t>(), flat.numel(), threads);
    for (int value = 0; value < 256; ++value) {
      if (seen[static_cast<size_t>(value)] && std::find(allowed.begin(), allowed.end(), value) == allowed.end())
        bad.push_back(std::to_string(static_cast<double>(value)));
    }
  } else {  // fractional, negative or large values: rare enough to list exactly
    const Tensor values = std::get<0>(at::_unique(stored.to(torch::kDouble)));
    for (int64_t i = 0; i < values.numel(); ++i) {
      const double v = values[i].item<double>();
      if (v != std::round(v) || std::find(allowed.begin(), allowed.end(), static_cast<int>(v)) == allowed.end())
        bad.push_back(std::to_string(v));
    }
  }
  if (!bad.empty()) {
    std::string list, set;
    for (const auto& value : bad) list += (list.empty() ? "" : ", ") + value;
    for (int value : allowed) set += (set.empty() ? "" : ",") + std::to_string(value);
    KDSEG_THROW(label_path, ": label values ", list, " outside the ", enum_name(layout), " set {", set, "}");
  }
  return bytes.permute({2, 1, 0});
}

// The label volume of a case: its label file, checked against the image and the layout's values;
// for QUBIQ, which has none, the raters' majority.
// `label` is the label file's volume, read beside the image; undefined for QUBIQ.
Tensor read_label(const CaseFiles& files, const Volume& image, const Volume& label, const Tensor& raters, Layout layout,
                  int threads) {
  if (layout == Layout::kQubiq) {
    KDSEG_CHECK(raters.defined(), files.image,
                ": a qubiq case is labelled by its raters alone; leave out --raters none");
    return majority_label(raters, 2);
  }
  check_same_grid(label, image);
  return label_bytes(label, layout, files.label, threads);
}

// The canonical axial slices to keep, from the label [I,J,K] uint8, a few planes at a time.
std::vector<int32_t> select_slices(const Tensor& label, const Reorientation& r, SliceSelection selection,
                                   Layout layout) {
  const int64_t axis = r.order[2], planes = r.shape[2];
  std::vector<uint8_t> hit(static_cast<size_t>(planes), selection == SliceSelection::kAll ? 1 : 0);
  const int64_t k_size = label.size(2);
  for (int64_t k0 = 0; selection != SliceSelection::kAll && k0 < k_size; k0 += kPlanesPerStep) {
    const int64_t n = std::min(kPlanesPerStep, k_size - k0);
    const Tensor part = label.narrow(2, k0, n);
    const Tensor mask = selection == SliceSelection::kTumour ? part == tumour_label(layout) : part > 0;
    std::vector<int64_t> others;
    for (int64_t d = 0; d < 3; ++d) {
      if (d != axis) others.push_back(d);
    }
    const Tensor any = mask.any(others[1]).any(others[0]).contiguous();  // along `axis`
    const bool* a = any.data_ptr<bool>();
    for (int64_t i = 0; i < any.numel(); ++i) {
      if (a[i]) hit[static_cast<size_t>(axis == 2 ? k0 + i : i)] = 1;
    }
  }
  std::vector<int32_t> kept;
  for (int64_t k = 0; k < planes; ++k) {
    if (hit[static_cast<size_t>(r.flip[2] ? planes - 1 - k : k)]) kept.push_back(static_cast<int32_t>(k));
  }
  return kept;
}

}  // namespace

CaseVolumes read_case(const CaseFiles& files, const RaterFiles& rater_files, const PrepareOptions& options,
                      Layout layout, int threads) {
  CaseVolumes c;
  // The label file inflates on another thread while the image does on this one.
  std::future<Volume> label;
  if (layout != Layout::kQubiq) {
    label = std::async(std::launch::async,
                       [&] { return read_nifti(files.label, /*require_finite=*/true, VoxelType::kAsStored); });
  }
  const Volume image = read_nifti(files.image, /*require_finite=*/true, VoxelType::kAsStored);
  const auto values = static_cast<int64_t>(label_values(layout).size());
  if (!rater_files.raters.empty()) {
    RaterMaps maps = read_rater_maps(rater_files, image, values);
    c.raters = std::move(maps.raters);
    if (keeps_majority(layout, c.raters.size(0))) c.majority = std::move(maps.majority);
  }
  c.label = read_label(files, image, label.valid() ? label.get() : Volume(), c.raters, layout, threads);
  c.image = image.voxels;
  const auto sizes = image.voxels.sizes();
  c.canonical = canonical_reorientation(image.affine, {sizes[0], sizes[1], sizes[2]});
  c.index = select_slices(c.label, c.canonical, options.slices, layout);
  // Against the majority the store keeps (KiTS's), else the flat vote that is QUBIQ's label.
  if (c.raters.defined()) {
    c.agreement =
        c.majority.defined() ? rater_agreement(c.raters, c.majority, values) : rater_agreement(c.raters, values);
    c.pairwise = pairwise_dice(c.raters, agreement_regions(layout));
  }
  return c;
}

std::string case_problem(const std::exception& e, const CaseFiles& files) {
  std::string problem = error_message(e);
  // Name the files when the reader did not (a failed allocation, a degenerate affine).
  const std::string image = file_name(files.image), label = file_name(files.label);
  if (problem.find(image) == std::string::npos && problem.find(label) == std::string::npos) {
    problem = image + " / " + label + ": " + problem;
  }
  return problem;
}

bool integral_values(const std::string& path) {
  try {
    const Geometry g = read_nifti_geometry(path);
    if (!g.scaled &&
        (g.datatype == NiftiType::kInt16 || g.datatype == NiftiType::kUint8 || g.datatype == NiftiType::kInt8))
      return true;
    const Tensor v = read_nifti(path, /*require_finite=*/false, VoxelType::kAsStored).voxels;
    if (v.numel() == 0) return true;
    if (v.is_floating_point() && !v.eq(v.round()).all().item<bool>()) return false;
    return v.min().item<double>() >= -32768 && v.max().item<double>() <= 32767;
  } catch (const Error&) {
    return true;
  }
}

bool resized(const std::string& path, int64_t size) {
  if (size <= 0) return false;
  try {
    const Geometry g = read_nifti_geometry(path);
    const Reorientation r = canonical_reorientation(g.affine, g.shape);
    return r.shape[0] != size || r.shape[1] != size;
  } catch (const Error&) {
    return false;
  }
}

}  // namespace kdseg::data::detail
