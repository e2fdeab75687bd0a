#include "data/prepared_store.h"

#include <torch/torch.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <future>
#include <nlohmann/json.hpp>

#include "core/build_config.h"
#include "core/cpu_cores.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/hash.h"
#include "core/log.h"
#include "core/random.h"
#include "data/hdf5_util.h"

namespace kdseg::data {
namespace {
// Slices are resized to at most this many pixels a side (CT is 512; 4096 leaves room).
constexpr int64_t kMaxSize = 4096;
namespace fs = std::filesystem;
namespace F = torch::nn::functional;
using torch::Tensor;

constexpr int64_t kKeepInMemoryBytes = int64_t{2} << 30;

std::string dims_str(const Tensor& t) {
  std::string s;
  for (int64_t d = 0; d < t.dim(); ++d) s += (d ? "x" : "") + std::to_string(t.size(d));
  return s;
}

// One case, read, checked, reoriented, selected and resized.
struct Converted {
  std::string problem;
  Tensor image;  // [n,H,W] float32 HU
  Tensor label;  // [n,H,W] uint8
  std::vector<int32_t> index;
  std::array<int32_t, 3> shape{};
  std::array<double, 3> spacing{};
  Affine affine{};
  bool integral = true;
  int64_t bytes() const { return image.defined() ? image.nbytes() + label.nbytes() : 0; }
};

Converted convert_case(const CaseFiles& c, const PrepareOptions& o, Layout layout) {
  Converted out;
  if (!c.problem.empty()) {
    out.problem = c.problem;
    return out;
  }
  try {
    const Volume image = read_nifti(c.image, /*require_finite=*/true);
    const Volume label = read_nifti(c.label, /*require_finite=*/true);
    KDSEG_CHECK(image.voxels.sizes() == label.voxels.sizes(), fs::path(c.label).filename().string(), ": shape ",
                dims_str(label.voxels), " differs from ", fs::path(c.image).filename().string(), " ",
                dims_str(image.voxels));
    for (size_t i = 0; i < 16; ++i) {
      const double a = image.affine[i], b = label.affine[i];
      KDSEG_CHECK(std::abs(a - b) <= 1e-3 * std::max({1.0, std::abs(a), std::abs(b)}),
                  fs::path(c.label).filename().string(), ": affine differs from ", fs::path(c.image).filename().string(),
                  " (element ", i / 4, ",", i % 4, ": ", b, " vs ", a, ")");
    }
    const Tensor values = std::get<0>(at::_unique(label.voxels));
    const std::vector<int> allowed = label_values(layout);
    std::vector<std::string> bad;
    for (int64_t i = 0; i < values.numel(); ++i) {
      const double v = values[i].item<double>();
      if (v != std::round(v) || std::find(allowed.begin(), allowed.end(), static_cast<int>(v)) == allowed.end()) {
        bad.push_back(std::to_string(v));
      }
    }
    if (!bad.empty()) {
      std::string list, set;
      for (const auto& b : bad) list += (list.empty() ? "" : ", ") + b;
      for (int a : allowed) set += (set.empty() ? "" : ",") + std::to_string(a);
      KDSEG_THROW(c.label, ": label values ", list, " outside the ", layout_name(layout), " set {", set, "}");
    }
    const Volume ci = to_canonical(image);
    const Volume cl = to_canonical(label);
    const Tensor lab = cl.voxels.to(torch::kLong);  // [X,Y,Z]
    Tensor keep;
    switch (o.slices) {
      case SliceSelection::kTumour: keep = (lab == tumour_label(layout)).any(0).any(0); break;
      case SliceSelection::kOrgan: keep = (lab > 0).any(0).any(0); break;
      case SliceSelection::kAll: keep = torch::ones({lab.size(2)}, torch::kBool); break;
    }
    const Tensor ks = keep.nonzero().view(-1);
    for (int64_t i = 0; i < ks.numel(); ++i) out.index.push_back(static_cast<int32_t>(ks[i].item<int64_t>()));
    Tensor img = ci.voxels.index_select(2, ks).permute({2, 0, 1}).contiguous();  // [n,X,Y]
    Tensor lbl = cl.voxels.index_select(2, ks).permute({2, 0, 1}).contiguous();
    if (o.size > 0 && img.numel() > 0 && (img.size(1) != o.size || img.size(2) != o.size)) {
      const std::vector<int64_t> size{o.size, o.size};
      img = F::interpolate(img.unsqueeze(1), F::InterpolateFuncOptions().size(size).mode(torch::kBilinear).align_corners(false))
                .squeeze(1);
      lbl = F::interpolate(lbl.unsqueeze(1), F::InterpolateFuncOptions().size(size).mode(torch::kNearest)).squeeze(1);
    }
    out.image = img.to(torch::kFloat).contiguous();
    out.label = lbl.round().to(torch::kByte).contiguous();
    out.integral = img.numel() == 0 || (img.eq(img.round()).all().item<bool>() && img.min().item<double>() >= -32768 &&
                                        img.max().item<double>() <= 32767);
    for (int d = 0; d < 3; ++d) out.shape[static_cast<size_t>(d)] = static_cast<int32_t>(ci.voxels.size(d));
    out.spacing = voxel_spacing(ci.affine);
    out.affine = ci.affine;
  } catch (const std::exception& e) {
    out = Converted();
    out.problem = error_message(e);
    // Name the files when the reader did not (a failed allocation, a degenerate affine).
    const std::string image = fs::path(c.image).filename().string(), label = fs::path(c.label).filename().string();
    if (out.problem.find(image) == std::string::npos && out.problem.find(label) == std::string::npos) {
      out.problem = image + " / " + label + ": " + out.problem;
    }
  }
  return out;
}

// Appends [n,H,W] rows to an extendible dataset.
class RowWriter {
 public:
  RowWriter(hid_t parent, const char* name, hid_t type, int64_t h, int64_t w, int level) : type_(type), h_(h), w_(w) {
    const int rank = h > 0 ? 3 : 1;
    const hsize_t dims[3] = {0, static_cast<hsize_t>(h), static_cast<hsize_t>(w)};
    const hsize_t max[3] = {H5S_UNLIMITED, static_cast<hsize_t>(h), static_cast<hsize_t>(w)};
    const h5::Handle space(KDSEG_CHECK_HDF5(H5Screate_simple(rank, dims, max)));
    const h5::Handle props(KDSEG_CHECK_HDF5(H5Pcreate(H5P_DATASET_CREATE)));
    const hsize_t chunk[3] = {h > 0 ? hsize_t{1} : hsize_t{4096}, dims[1], dims[2]};  // one slice per chunk
    KDSEG_CHECK_HDF5(H5Pset_chunk(props, rank, chunk));
    if (level > 0) {
      KDSEG_CHECK_HDF5(H5Pset_shuffle(props));
      KDSEG_CHECK_HDF5(H5Pset_deflate(props, static_cast<unsigned>(level)));
    }
    set_ = h5::Handle(KDSEG_CHECK_HDF5(H5Dcreate2(parent, name, type, space, H5P_DEFAULT, props, H5P_DEFAULT)));
  }
  void append(const void* data, int64_t rows) {
    if (rows == 0) return;
    const hsize_t new_rows = rows_ + static_cast<hsize_t>(rows);
    const hsize_t extent[3] = {new_rows, static_cast<hsize_t>(h_), static_cast<hsize_t>(w_)};
    KDSEG_CHECK_HDF5(H5Dset_extent(set_, extent));
    const h5::Handle file_space(KDSEG_CHECK_HDF5(H5Dget_space(set_)));
    const hsize_t start[3] = {rows_, 0, 0};
    const hsize_t count[3] = {static_cast<hsize_t>(rows), static_cast<hsize_t>(h_), static_cast<hsize_t>(w_)};
    const int rank = h_ > 0 ? 3 : 1;
    KDSEG_CHECK_HDF5(H5Sselect_hyperslab(file_space, H5S_SELECT_SET, start, nullptr, count, nullptr));
    const h5::Handle memory(KDSEG_CHECK_HDF5(H5Screate_simple(rank, count, nullptr)));
    KDSEG_CHECK_HDF5(H5Dwrite(set_, type_, memory, file_space, H5P_DEFAULT, data));
    rows_ = new_rows;
  }

 private:
  h5::Handle set_;
  hid_t type_;
  int64_t h_, w_;
  hsize_t rows_ = 0;
};

std::string selection_name(SliceSelection s) {
  return s == SliceSelection::kTumour ? "tumor" : s == SliceSelection::kOrgan ? "organ" : "all";
}

}  // namespace

SliceSelection parse_slice_selection(const std::string& name) {
  if (name == "tumor" || name == "tumour") return SliceSelection::kTumour;
  if (name == "organ") return SliceSelection::kOrgan;
  if (name == "all") return SliceSelection::kAll;
  KDSEG_THROW("unknown --slices '", name, "': use tumor, organ or all");
}

std::vector<int> assign_folds(const std::vector<std::string>& ids, int folds) {
  KDSEG_CHECK(folds >= 1, "--folds must be >= 1, got ", folds);
  std::vector<std::pair<uint64_t, size_t>> order;
  for (size_t i = 0; i < ids.size(); ++i) order.emplace_back(mix64(fnv1a(kFnvOffset, ids[i].data(), ids[i].size())), i);
  std::sort(order.begin(), order.end());
  std::vector<int> fold(ids.size());
  for (size_t r = 0; r < order.size(); ++r) fold[order[r].second] = static_cast<int>(r % static_cast<size_t>(folds));
  return fold;
}

PrepareSummary prepare_store(const PrepareOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  KDSEG_CHECK(o.size >= 0 && o.size <= kMaxSize, "--size must be 1-", kMaxSize, " or 'native', got ", o.size);
  KDSEG_CHECK(o.folds >= 1, "--folds must be >= 1, got ", o.folds);
  KDSEG_CHECK(o.compression >= 0 && o.compression <= 9, "--compression must be 0-9, got ", o.compression);
  std::error_code ec;
  KDSEG_CHECK(o.force || !fs::exists(o.output, ec), o.output, ": exists; pass --force to replace it");
  PrepareSummary summary;
  summary.layout = o.detect_layout ? detect_layout(o.input) : o.layout;
  const std::vector<CaseFiles> found = find_cases(o.input, summary.layout);
  const int threads = o.threads > 0 ? o.threads : available_cores();

  // Pass 1: every case is read and checked before anything is written; results are kept while
  // they fit in memory, and converted again in pass 2 otherwise.
  std::vector<Converted> results(found.size());
  std::vector<bool> kept_in_memory(found.size(), false);
  int64_t held = 0;
  for (size_t begin = 0; begin < found.size(); begin += static_cast<size_t>(threads)) {
    std::vector<std::future<Converted>> work;
    for (size_t i = begin; i < std::min(found.size(), begin + static_cast<size_t>(threads)); ++i) {
      work.push_back(std::async(std::launch::async, [&, i] { return convert_case(found[i], o, summary.layout); }));
    }
    for (size_t j = 0; j < work.size(); ++j) {
      Converted r = work[j].get();
      const size_t i = begin + j;
      if (r.problem.empty() && held + r.bytes() <= kKeepInMemoryBytes) {
        held += r.bytes();
        kept_in_memory[i] = true;
        results[i] = std::move(r);
      } else {
        Converted light;
        light.problem = r.problem;
        light.integral = r.integral;
        light.index = r.index;
        results[i] = std::move(light);
      }
    }
  }
  std::vector<size_t> good;
  std::string problems;
  for (size_t i = 0; i < found.size(); ++i) {
    if (results[i].problem.empty()) {
      good.push_back(i);
    } else {
      summary.skipped.push_back(results[i].problem);
      problems += "\n  " + results[i].problem;
    }
  }
  if (!problems.empty() && !o.skip_bad_cases) {
    KDSEG_THROW(summary.skipped.size(), " of ", found.size(), " cases are bad; nothing was written (pass --skip-bad-cases to "
                "leave them out):", problems);
  }
  for (const auto& p : summary.skipped) log::warn("skipping bad case: {}", p);
  KDSEG_CHECK(!good.empty(), o.input, ": no usable case");
  if (static_cast<size_t>(o.folds) > good.size()) {
    log::warn("{}: --folds {} with {} usable cases: {} of the folds hold no case", o.input, o.folds, good.size(),
              static_cast<size_t>(o.folds) - good.size());
  }
  const bool integral = std::all_of(good.begin(), good.end(), [&](size_t i) { return results[i].integral; });
  summary.image_dtype = integral ? "int16" : "float32";

  std::vector<std::string> ids, image_files, label_files;
  for (size_t i : good) {
    ids.push_back(found[i].id);
    image_files.push_back(found[i].image);
    label_files.push_back(found[i].label);
  }
  const std::vector<int> folds = assign_folds(ids, o.folds);

  h5::quiet_errors();
  AtomicFile output(o.output);
  {
    const h5::Handle file(KDSEG_CHECK_HDF5(H5Fcreate(output.temp_path().c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT)));
    const h5::Handle slices(KDSEG_CHECK_HDF5(H5Gcreate2(file, "slices", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)));
    std::unique_ptr<RowWriter> image_rows, label_rows;
    RowWriter case_rows(slices, "case", H5T_NATIVE_INT32, 0, 0, 0);
    RowWriter index_rows(slices, "index", H5T_NATIVE_INT32, 0, 0, 0);
    int64_t height = -1, width = -1;
    uint64_t hash = kFnvOffset;
    std::vector<int32_t> slices_kept, shapes;
    std::vector<double> spacings, affines;
    summary.slices_per_fold.assign(static_cast<size_t>(o.folds), 0);
    summary.cases_per_fold.assign(static_cast<size_t>(o.folds), 0);
    summary.label_histogram.assign(label_values(summary.layout).size(), 0);
    for (size_t row = 0; row < good.size(); ++row) {
      const size_t i = good[row];
      Converted c = kept_in_memory[i] ? std::move(results[i]) : convert_case(found[i], o, summary.layout);
      KDSEG_CHECK(c.problem.empty(), c.problem);
      if (height < 0 && c.image.numel() > 0) {
        height = c.image.size(1);
        width = c.image.size(2);
      }
      if (c.image.numel() > 0) {
        KDSEG_CHECK(c.image.size(1) == height && c.image.size(2) == width, found[i].image, ": canonical in-plane size ",
                    c.image.size(1), "x", c.image.size(2), " differs from the first case's ", height, "x", width,
                    "; --size native needs equal sizes (use --size N)");
        if (!image_rows) {
          image_rows = std::make_unique<RowWriter>(slices, "image", integral ? H5T_NATIVE_INT16 : H5T_NATIVE_FLOAT, height,
                                                   width, o.compression);
          label_rows = std::make_unique<RowWriter>(slices, "label", H5T_NATIVE_UINT8, height, width, o.compression);
        }
        const Tensor stored = integral ? c.image.to(torch::kShort).contiguous() : c.image;
        image_rows->append(stored.data_ptr(), stored.size(0));
        label_rows->append(c.label.data_ptr(), c.label.size(0));
        hash = fnv1a(hash, stored.data_ptr(), stored.nbytes());
        hash = fnv1a(hash, c.label.data_ptr(), c.label.nbytes());
        const Tensor counts = torch::bincount(c.label.view(-1).to(torch::kLong), {},
                                              static_cast<int64_t>(summary.label_histogram.size()));
        for (size_t v = 0; v < summary.label_histogram.size(); ++v) summary.label_histogram[v] += counts[static_cast<int64_t>(v)].item<int64_t>();
      }
      const std::vector<int32_t> case_column(c.index.size(), static_cast<int32_t>(row));
      case_rows.append(case_column.data(), static_cast<int64_t>(case_column.size()));
      index_rows.append(c.index.data(), static_cast<int64_t>(c.index.size()));
      hash = fnv1a(hash, ids[row].data(), ids[row].size());
      hash = fnv1a(hash, c.index.data(), c.index.size() * sizeof(int32_t));
      slices_kept.push_back(static_cast<int32_t>(c.index.size()));
      shapes.insert(shapes.end(), c.shape.begin(), c.shape.end());
      spacings.insert(spacings.end(), c.spacing.begin(), c.spacing.end());
      affines.insert(affines.end(), c.affine.begin(), c.affine.end());
      summary.slices += static_cast<int64_t>(c.index.size());
      summary.slices_per_fold[static_cast<size_t>(folds[row])] += static_cast<int64_t>(c.index.size());
      summary.cases_per_fold[static_cast<size_t>(folds[row])] += 1;
      results[i] = Converted();
    }
    KDSEG_CHECK(image_rows != nullptr, o.input, ": no case has a slice to keep with --slices ", selection_name(o.slices));
    const h5::Handle cases(KDSEG_CHECK_HDF5(H5Gcreate2(file, "cases", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)));
    const hsize_t n = good.size();
    h5::write_strings(cases, "id", ids);
    h5::write_strings(cases, "image_file", image_files);
    h5::write_strings(cases, "label_file", label_files);
    h5::write_array(cases, "shape", H5T_NATIVE_INT32, {n, 3}, shapes.data());
    h5::write_array(cases, "spacing", H5T_NATIVE_DOUBLE, {n, 3}, spacings.data());
    h5::write_array(cases, "affine", H5T_NATIVE_DOUBLE, {n, 4, 4}, affines.data());
    h5::write_array(cases, "slices_kept", H5T_NATIVE_INT32, {n}, slices_kept.data());
    std::vector<int32_t> fold32(folds.begin(), folds.end());
    h5::write_array(cases, "fold", H5T_NATIVE_INT32, {n}, fold32.data());
    summary.content_hash = hex64(hash);
    const nlohmann::json options = {{"slices", selection_name(o.slices)}, {"size", o.size == 0 ? nlohmann::json("native") : nlohmann::json(o.size)},
                                    {"folds", o.folds}, {"compression", o.compression}, {"skip_bad_cases", o.skip_bad_cases},
                                    {"input", o.input}};
    h5::write_string_attribute(file, "format", "kdseg prepared store 1");
    h5::write_string_attribute(file, "layout", layout_name(summary.layout));
    h5::write_string_attribute(file, "options", options.dump());
    h5::write_string_attribute(file, "tool_version", KDSEG_TOOL_VERSION);
    h5::write_string_attribute(file, "created", utc_now_iso8601());
    h5::write_string_attribute(file, "content_hash", summary.content_hash);
    KDSEG_CHECK_HDF5(H5Fflush(file, H5F_SCOPE_GLOBAL));
  }
  output.commit();
  summary.cases = static_cast<int>(good.size());
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

PreparedStore::PreparedStore(const std::string& path) : path_(path) {
  h5::quiet_errors();
  std::error_code ec;
  KDSEG_CHECK(fs::is_regular_file(path, ec), path, ": no such prepared store");
  file_ = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  KDSEG_CHECK(file_ >= 0, path, ": not an HDF5 file, or unreadable");
  try {
    KDSEG_CHECK(h5::read_string_attribute(file_, "format") == "kdseg prepared store 1", path, ": not a kdseg prepared store");
    const auto dims = h5::dataset_dims(file_, "slices/image");
    KDSEG_CHECK(dims.size() == 3, path, ": /slices/image must be [N,H,W]");
    slices_ = static_cast<int64_t>(dims[0]);
    height_ = static_cast<int64_t>(dims[1]);
    width_ = static_cast<int64_t>(dims[2]);
    case_ids_ = h5::read_strings(file_, "cases/id");
    // Every table must have the length the others imply before it is read whole.
    const auto length = [&](const char* name) { return static_cast<int64_t>(h5::dataset_dims(file_, name).at(0)); };
    for (const char* name : {"slices/label", "slices/case", "slices/index"}) {
      KDSEG_CHECK(length(name) == slices_, path, ": /", name, " has ", length(name), " rows but /slices/image ", slices_);
    }
    KDSEG_CHECK(length("cases/fold") == static_cast<int64_t>(case_ids_.size()), path, ": /cases/fold has ",
                length("cases/fold"), " rows but /cases/id ", case_ids_.size());
    slice_case_.resize(static_cast<size_t>(slices_));
    slice_index_.resize(static_cast<size_t>(slices_));
    case_fold_.resize(case_ids_.size());
    h5::read_array(file_, "slices/case", H5T_NATIVE_INT32, slice_case_.data());
    h5::read_array(file_, "slices/index", H5T_NATIVE_INT32, slice_index_.data());
    h5::read_array(file_, "cases/fold", H5T_NATIVE_INT32, case_fold_.data());
    const size_t n = case_ids_.size();
    case_image_files_ = h5::read_strings(file_, "cases/image_file");
    KDSEG_CHECK(case_image_files_.size() == n && length("cases/shape") == static_cast<int64_t>(n) &&
                    length("cases/affine") == static_cast<int64_t>(n),
                path, ": /cases/image_file, /cases/shape and /cases/affine must have a row per case");
    std::vector<int32_t> shapes(3 * n);
    std::vector<double> affines(16 * n);
    h5::read_array(file_, "cases/shape", H5T_NATIVE_INT32, shapes.data());
    h5::read_array(file_, "cases/affine", H5T_NATIVE_DOUBLE, affines.data());
    for (size_t c = 0; c < n; ++c) {
      case_shapes_.push_back({shapes[3 * c], shapes[3 * c + 1], shapes[3 * c + 2]});
      Affine a{};
      std::copy(affines.begin() + static_cast<std::ptrdiff_t>(16 * c), affines.begin() + static_cast<std::ptrdiff_t>(16 * (c + 1)), a.begin());
      case_affines_.push_back(a);
    }
    for (const int32_t c : slice_case_) {
      KDSEG_CHECK(c >= 0 && c < static_cast<int32_t>(case_ids_.size()), path, ": /slices/case holds ", c,
                  ", outside the case table of ", case_ids_.size());
    }
  } catch (const Error& e) {
    H5Fclose(file_);
    KDSEG_THROW(path, ": ", e.message());
  } catch (...) {
    H5Fclose(file_);
    throw;
  }
}

PreparedStore::~PreparedStore() {
  if (file_ >= 0) H5Fclose(file_);
}

std::string PreparedStore::attribute(const std::string& name) const {
  const h5::Lock lock(h5::library_mutex());
  return h5::read_string_attribute(file_, name);
}

int PreparedStore::folds() const {
  return case_fold_.empty() ? 0 : *std::max_element(case_fold_.begin(), case_fold_.end()) + 1;
}

std::vector<int64_t> PreparedStore::rows_in_folds(const std::vector<int>& wanted) const {
  for (int f : wanted) {
    KDSEG_CHECK(f >= 0 && f < folds(), path_, ": fold ", f, " does not exist; the store has ", folds(), " folds (0-",
                folds() - 1, ")");
  }
  std::vector<int64_t> rows;
  for (int64_t r = 0; r < slices_; ++r) {
    const int fold = case_fold_[static_cast<size_t>(slice_case_[static_cast<size_t>(r)])];
    if (wanted.empty() || std::find(wanted.begin(), wanted.end(), fold) != wanted.end()) rows.push_back(r);
  }
  return rows;
}

Tensor PreparedStore::read_row(const char* dataset, int64_t row, at::ScalarType type) const {
  KDSEG_CHECK(row >= 0 && row < slices_, path_, ": slice ", row, " outside [0, ", slices_, ")");
  const h5::Lock lock(h5::library_mutex());
  const h5::Handle set(KDSEG_CHECK_HDF5(H5Dopen2(file_, dataset, H5P_DEFAULT)));
  Tensor out = torch::empty({height_, width_}, type);
  h5::read_row(set, row, height_, width_, type == at::kFloat ? H5T_NATIVE_FLOAT : H5T_NATIVE_UINT8, out.data_ptr());
  return out;
}

Tensor PreparedStore::image(int64_t row) const { return read_row("slices/image", row, at::kFloat); }
Tensor PreparedStore::label(int64_t row) const { return read_row("slices/label", row, at::kByte); }

}  // namespace kdseg::data
