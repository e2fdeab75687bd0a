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
#include "data/raters.h"

namespace kdseg::data {
namespace {
// Slices are resized to at most this many pixels a side (CT is 512; 4096 leaves room).
constexpr int64_t kMinSize = 16, kMaxSize = 4096;
namespace fs = std::filesystem;
namespace F = torch::nn::functional;
using torch::Tensor;

constexpr int64_t kKeepInMemoryBytes = int64_t{2} << 30;
// The "format" attribute on / that every reader checks (PreparedStore::open_file).
constexpr const char* kFormat = "kdseg prepared store 1";

std::string file_name(const std::string& path) { return fs::path(path).filename().string(); }

// --- pass 1: one case read, checked, reoriented, selected and resized ----------------------------

struct Converted {
  std::string problem;
  Tensor image;                   // [n,H,W] float32 HU
  Tensor label;                   // [n,H,W] uint8
  Tensor raters;                  // [n,R,H,W] uint8 label maps of the case's raters, or undefined
  std::vector<double> agreement;  // each rater's Dice against the majority (data/raters.h)
  int64_t rater_count = 0;
  std::vector<int32_t> index;
  std::array<int32_t, 3> shape{};
  std::array<double, 3> spacing{};
  Affine affine{};
  bool integral = true;
  int64_t bytes() const {
    return image.defined() ? image.nbytes() + label.nbytes() + (raters.defined() ? raters.nbytes() : 0) : 0;
  }
};

// Every label value must be one the layout defines; the error lists those that are not.
void check_label_values(const Volume& label, Layout layout, const std::string& label_path) {
  const Tensor values = std::get<0>(at::_unique(label.voxels));
  const std::vector<int> allowed = label_values(layout);
  std::vector<std::string> bad;
  for (int64_t i = 0; i < values.numel(); ++i) {
    const double v = values[i].item<double>();
    if (v != std::round(v) || std::find(allowed.begin(), allowed.end(), static_cast<int>(v)) == allowed.end()) {
      bad.push_back(std::to_string(v));
    }
  }
  if (bad.empty()) return;
  std::string list, set;
  for (const auto& value : bad) list += (list.empty() ? "" : ", ") + value;
  for (int value : allowed) set += (set.empty() ? "" : ",") + std::to_string(value);
  KDSEG_THROW(label_path, ": label values ", list, " outside the ", layout_name(layout), " set {", set, "}");
}

// The axial indices k of the canonical label [X,Y,Z] to keep.
Tensor select_slices(const Tensor& canonical_label, SliceSelection selection, Layout layout) {
  const Tensor labels = canonical_label.to(torch::kLong);
  Tensor keep;
  switch (selection) {
    case SliceSelection::kTumour: keep = (labels == tumour_label(layout)).any(0).any(0); break;
    case SliceSelection::kOrgan: keep = (labels > 0).any(0).any(0); break;
    case SliceSelection::kAll: keep = torch::ones({labels.size(2)}, torch::kBool); break;
  }
  return keep.nonzero().view(-1);
}

// Resizes [n,H,W] slices to size x size (bilinear images, nearest labels and raters [n,R,H,W]) unless
// size is 0.
void resize_slices(Tensor& image, Tensor& label, Tensor& raters, int64_t size) {
  if (size <= 0 || image.numel() == 0 || (image.size(1) == size && image.size(2) == size)) return;
  const std::vector<int64_t> sizes{size, size};
  image = F::interpolate(image.unsqueeze(1),
                         F::InterpolateFuncOptions().size(sizes).mode(torch::kBilinear).align_corners(false))
              .squeeze(1);
  const auto nearest = F::InterpolateFuncOptions().size(sizes).mode(torch::kNearest);
  label = F::interpolate(label.unsqueeze(1), nearest).squeeze(1);
  if (raters.defined()) raters = F::interpolate(raters.to(torch::kFloat), nearest).round().to(torch::kByte);
}

// The label volume of a case: its label file, checked against the image and the layout's values;
// for QUBIQ, which has none, the raters' majority.
Volume read_label(const CaseFiles& files, const Volume& image, const Tensor& raters, Layout layout) {
  if (layout == Layout::kQubiq) {
    KDSEG_CHECK(raters.defined(), files.image,
                ": a qubiq case is labelled by its raters alone; leave out --raters none");
    return Volume{majority_label(raters, 2).to(torch::kFloat), image.affine, files.image, "uint8"};
  }
  Volume label = read_nifti(files.label, /*require_finite=*/true);
  check_same_grid(label, image);
  check_label_values(label, layout, files.label);
  return label;
}

Converted convert_volumes(const CaseFiles& files, const PrepareOptions& options, Layout layout) {
  const Volume image = read_nifti(files.image, /*require_finite=*/true);
  Tensor raters;  // [R,I,J,K] in the file's orientation
  if (options.raters == RaterSearch::kAuto) {
    const RaterFiles rater_files = find_rater_files(files, layout, options.qubiq_task);
    KDSEG_CHECK(rater_files.problem.empty(), rater_files.problem);
    if (!rater_files.raters.empty()) raters = read_raters(rater_files, image);
  }
  const Volume label = read_label(files, image, raters, layout);
  const Volume canonical_image = to_canonical(image);
  const Volume canonical_label = to_canonical(label);
  const Tensor kept = select_slices(canonical_label.voxels, options.slices, layout);
  Converted out;
  for (int64_t i = 0; i < kept.numel(); ++i) out.index.push_back(static_cast<int32_t>(kept[i].item<int64_t>()));
  Tensor image_slices = canonical_image.voxels.index_select(2, kept).permute({2, 0, 1}).contiguous();  // [n,X,Y]
  Tensor label_slices = canonical_label.voxels.index_select(2, kept).permute({2, 0, 1}).contiguous();
  Tensor rater_slices;  // [n,R,X,Y]
  if (raters.defined()) {
    std::vector<Tensor> canonical;
    for (int64_t j = 0; j < raters.size(0); ++j)
      canonical.push_back(to_canonical({raters[j], image.affine, image.path, "uint8"}).voxels);
    const Tensor all = torch::stack(canonical);  // [R,X,Y,Z]
    out.rater_count = all.size(0);
    out.agreement = rater_agreement(all, static_cast<int64_t>(label_values(layout).size()));
    rater_slices = all.index_select(3, kept).permute({3, 0, 1, 2}).contiguous();
  }
  resize_slices(image_slices, label_slices, rater_slices, options.size);
  out.image = image_slices.to(torch::kFloat).contiguous();
  out.label = label_slices.round().to(torch::kByte).contiguous();
  if (rater_slices.defined()) out.raters = rater_slices.contiguous();
  out.integral = image_slices.numel() == 0 ||
                 (image_slices.eq(image_slices.round()).all().item<bool>() &&
                  image_slices.min().item<double>() >= -32768 && image_slices.max().item<double>() <= 32767);
  for (int d = 0; d < 3; ++d) out.shape[static_cast<size_t>(d)] = static_cast<int32_t>(canonical_image.voxels.size(d));
  out.spacing = voxel_spacing(canonical_image.affine);
  out.affine = canonical_image.affine;
  return out;
}

// A case that cannot be converted comes back with `problem` set, naming its files.
Converted convert_case(const CaseFiles& files, const PrepareOptions& options, Layout layout) {
  Converted out;
  if (!files.problem.empty()) {
    out.problem = files.problem;
    return out;
  }
  try {
    out = convert_volumes(files, options, layout);
  } catch (const std::exception& e) {
    out = Converted();
    out.problem = error_message(e);
    // Name the files when the reader did not (a failed allocation, a degenerate affine).
    const std::string image = file_name(files.image), label = file_name(files.label);
    if (out.problem.find(image) == std::string::npos && out.problem.find(label) == std::string::npos) {
      out.problem = image + " / " + label + ": " + out.problem;
    }
  }
  return out;
}

// Every case of pass 1: whole while the results fit in memory, otherwise only what the checks
// need (the case is converted again in pass 2).
struct FirstPass {
  std::vector<Converted> results;
  std::vector<bool> kept_in_memory;
};

FirstPass convert_all(const std::vector<CaseFiles>& found, const PrepareOptions& options, Layout layout) {
  const size_t threads = static_cast<size_t>(options.threads > 0 ? options.threads : available_cores());
  FirstPass pass{std::vector<Converted>(found.size()), std::vector<bool>(found.size(), false)};
  int64_t held = 0;
  for (size_t begin = 0; begin < found.size(); begin += threads) {
    std::vector<std::future<Converted>> work;
    for (size_t i = begin; i < std::min(found.size(), begin + threads); ++i) {
      work.push_back(std::async(std::launch::async, [&, i] { return convert_case(found[i], options, layout); }));
    }
    for (size_t j = 0; j < work.size(); ++j) {
      Converted converted = work[j].get();
      const size_t i = begin + j;
      if (converted.problem.empty() && held + converted.bytes() <= kKeepInMemoryBytes) {
        held += converted.bytes();
        pass.kept_in_memory[i] = true;
        pass.results[i] = std::move(converted);
      } else {
        Converted light;
        light.problem = converted.problem;
        light.integral = converted.integral;
        light.index = converted.index;
        light.rater_count = converted.rater_count;
        pass.results[i] = std::move(light);
      }
    }
  }
  return pass;
}

// Every case of a store has as many raters as the case that has the most; a case with fewer (or
// none) becomes a bad case. Returns that number (0: no raters).
int64_t check_rater_counts(std::vector<Converted>& results, const std::vector<CaseFiles>& found) {
  int64_t raters = 0;
  for (const Converted& r : results) {
    if (r.problem.empty()) raters = std::max(raters, r.rater_count);
  }
  for (size_t i = 0; i < results.size(); ++i) {
    Converted& r = results[i];
    if (!r.problem.empty() || r.rater_count == raters) continue;
    r.problem = fs::path(found[i].image).parent_path().string() + ": " + std::to_string(r.rater_count) +
                " raters, where other cases have " + std::to_string(raters) +
                " (every case of a store needs the same raters)";
  }
  return raters;
}

// The usable cases' positions in `results`. Bad cases go to summary.skipped and stop everything
// unless skip_bad_cases.
std::vector<size_t> report_bad_cases(const std::vector<Converted>& results, const PrepareOptions& options,
                                     PrepareSummary& summary) {
  std::vector<size_t> good;
  std::string problems;
  for (size_t i = 0; i < results.size(); ++i) {
    if (results[i].problem.empty()) {
      good.push_back(i);
    } else {
      summary.skipped.push_back(results[i].problem);
      problems += "\n  " + results[i].problem;
    }
  }
  if (!problems.empty() && !options.skip_bad_cases) {
    KDSEG_THROW(summary.skipped.size(), " of ", results.size(),
                " cases are bad; nothing was written (pass "
                "--skip-bad-cases to leave them out):",
                problems);
  }
  for (const auto& problem : summary.skipped) log::warn("skipping bad case: {}", problem);
  KDSEG_CHECK(!good.empty(), options.input, ": no usable case");
  if (static_cast<size_t>(options.folds) > good.size()) {
    log::warn("{}: --folds {} with {} usable cases: {} of the folds hold no case", options.input, options.folds,
              good.size(), static_cast<size_t>(options.folds) - good.size());
  }
  return good;
}

// --- pass 2: writing the store ----------------------------------------------------------------------

// Appends rows of shape `row` ([] for scalars, [H,W] for slices, [R,H,W] for raters' slices) to an
// extendible dataset [n, row...], one row per chunk (4096 scalars per chunk).
class RowWriter {
 public:
  RowWriter(hid_t parent, const char* name, hid_t type, std::vector<hsize_t> row, int level)
      : type_(type), row_(std::move(row)) {
    std::vector<hsize_t> dims{0}, max{H5S_UNLIMITED}, chunk{row_.empty() ? hsize_t{4096} : hsize_t{1}};
    for (const hsize_t d : row_) {
      dims.push_back(d);
      max.push_back(d);
      chunk.push_back(d);
    }
    const int rank = static_cast<int>(dims.size());
    const h5::Handle space(KDSEG_CHECK_HDF5(H5Screate_simple(rank, dims.data(), max.data())));
    const h5::Handle props(KDSEG_CHECK_HDF5(H5Pcreate(H5P_DATASET_CREATE)));
    KDSEG_CHECK_HDF5(H5Pset_chunk(props, rank, chunk.data()));
    if (level > 0) {
      KDSEG_CHECK_HDF5(H5Pset_shuffle(props));
      KDSEG_CHECK_HDF5(H5Pset_deflate(props, static_cast<unsigned>(level)));
    }
    set_ = h5::Handle(KDSEG_CHECK_HDF5(H5Dcreate2(parent, name, type, space, H5P_DEFAULT, props, H5P_DEFAULT)));
  }
  void append(const void* data, int64_t rows) {
    if (rows == 0) return;
    std::vector<hsize_t> extent{rows_ + static_cast<hsize_t>(rows)}, start{rows_}, count{static_cast<hsize_t>(rows)};
    for (const hsize_t d : row_) {
      extent.push_back(d);
      start.push_back(0);
      count.push_back(d);
    }
    KDSEG_CHECK_HDF5(H5Dset_extent(set_, extent.data()));
    const h5::Handle file_space(KDSEG_CHECK_HDF5(H5Dget_space(set_)));
    KDSEG_CHECK_HDF5(H5Sselect_hyperslab(file_space, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr));
    const h5::Handle memory(KDSEG_CHECK_HDF5(H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr)));
    KDSEG_CHECK_HDF5(H5Dwrite(set_, type_, memory, file_space, H5P_DEFAULT, data));
    rows_ = extent[0];
  }

 private:
  h5::Handle set_;
  hid_t type_;
  std::vector<hsize_t> row_;
  hsize_t rows_ = 0;
};

std::string selection_name(SliceSelection s) {
  return s == SliceSelection::kTumour ? "tumor" : s == SliceSelection::kOrgan ? "organ" : "all";
}

// The /cases columns known before any slice is written, one row per usable case.
struct CaseTable {
  std::vector<std::string> ids, image_files, label_files;
  std::vector<int> folds;
};

CaseTable case_table(const std::vector<CaseFiles>& found, const std::vector<size_t>& good, int folds) {
  CaseTable table;
  for (size_t i : good) {
    table.ids.push_back(found[i].id);
    table.image_files.push_back(found[i].image);
    table.label_files.push_back(found[i].label);
  }
  table.folds = assign_folds(table.ids, folds);
  return table;
}

// Writes the store into `path` one case at a time (slices, their case and index, the content
// hash over them), then the case table and the attributes; fills the summary's counts.
class StoreWriter {
 public:
  StoreWriter(const std::string& path, const PrepareOptions& options, bool integral, int64_t raters,
              PrepareSummary& summary)
      : options_(options),
        integral_(integral),
        raters_(raters),
        summary_(summary),
        file_(KDSEG_CHECK_HDF5(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT))),
        slices_(KDSEG_CHECK_HDF5(H5Gcreate2(file_, "slices", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT))),
        case_rows_(slices_, "case", H5T_NATIVE_INT32, {}, 0),
        index_rows_(slices_, "index", H5T_NATIVE_INT32, {}, 0) {
    summary_.slices_per_fold.assign(static_cast<size_t>(options.folds), 0);
    summary_.cases_per_fold.assign(static_cast<size_t>(options.folds), 0);
    summary_.label_histogram.assign(label_values(summary.layout).size(), 0);
  }

  // Case `row` of the table, with the image file named in errors.
  void add_case(const Converted& converted, const CaseTable& table, size_t row) {
    const std::vector<int32_t>& index = converted.index;
    if (converted.image.numel() > 0) append_slices(converted, table.image_files[row]);
    const std::vector<int32_t> case_column(index.size(), static_cast<int32_t>(row));
    case_rows_.append(case_column.data(), static_cast<int64_t>(case_column.size()));
    index_rows_.append(index.data(), static_cast<int64_t>(index.size()));
    hash_ = fnv1a(hash_, table.ids[row].data(), table.ids[row].size());
    hash_ = fnv1a(hash_, index.data(), index.size() * sizeof(int32_t));
    slices_kept_.push_back(static_cast<int32_t>(index.size()));
    shapes_.insert(shapes_.end(), converted.shape.begin(), converted.shape.end());
    spacings_.insert(spacings_.end(), converted.spacing.begin(), converted.spacing.end());
    affines_.insert(affines_.end(), converted.affine.begin(), converted.affine.end());
    agreement_.insert(agreement_.end(), converted.agreement.begin(), converted.agreement.end());
    const auto fold = static_cast<size_t>(table.folds[row]);
    summary_.slices += static_cast<int64_t>(index.size());
    summary_.slices_per_fold[fold] += static_cast<int64_t>(index.size());
    summary_.cases_per_fold[fold] += 1;
  }

  void finish(const CaseTable& table) {
    KDSEG_CHECK(image_rows_ != nullptr, options_.input, ": no case has a slice to keep with --slices ",
                selection_name(options_.slices));
    // The group stays open until the file is flushed, as the attributes are written.
    const h5::Handle cases = write_case_table(table);
    summary_.content_hash = hex64(hash_);
    const nlohmann::json recorded = {
        {"slices", selection_name(options_.slices)},
        {"size", options_.size == 0 ? nlohmann::json("native") : nlohmann::json(options_.size)},
        {"folds", options_.folds},
        {"compression", options_.compression},
        {"skip_bad_cases", options_.skip_bad_cases},
        {"raters", options_.raters == RaterSearch::kAuto ? "auto" : "none"},
        {"input", options_.input}};
    h5::write_string_attribute(file_, "format", kFormat);
    h5::write_string_attribute(file_, "layout", layout_name(summary_.layout));
    h5::write_string_attribute(file_, "options", recorded.dump());
    h5::write_string_attribute(file_, "tool_version", KDSEG_TOOL_VERSION);
    h5::write_string_attribute(file_, "created", utc_now_iso8601());
    h5::write_string_attribute(file_, "content_hash", summary_.content_hash);
    KDSEG_CHECK_HDF5(H5Fflush(file_, H5F_SCOPE_GLOBAL));
  }

 private:
  // Every case's slices share the first non-empty case's in-plane size.
  void append_slices(const Converted& converted, const std::string& image_file) {
    if (height_ < 0) {
      height_ = converted.image.size(1);
      width_ = converted.image.size(2);
    }
    KDSEG_CHECK(converted.image.size(1) == height_ && converted.image.size(2) == width_, image_file,
                ": canonical in-plane size ", converted.image.size(1), "x", converted.image.size(2),
                " differs from the first case's ", height_, "x", width_,
                "; --size native needs equal sizes (use --size N)");
    if (!image_rows_) {
      const hid_t image_type = integral_ ? H5T_NATIVE_INT16 : H5T_NATIVE_FLOAT;
      const std::vector<hsize_t> slice{static_cast<hsize_t>(height_), static_cast<hsize_t>(width_)};
      image_rows_ = std::make_unique<RowWriter>(slices_, "image", image_type, slice, options_.compression);
      label_rows_ = std::make_unique<RowWriter>(slices_, "label", H5T_NATIVE_UINT8, slice, options_.compression);
      if (raters_ > 0) {
        const std::vector<hsize_t> rows{static_cast<hsize_t>(raters_), slice[0], slice[1]};
        rater_rows_ = std::make_unique<RowWriter>(slices_, "raters", H5T_NATIVE_UINT8, rows, options_.compression);
      }
    }
    const Tensor stored = integral_ ? converted.image.to(torch::kShort).contiguous() : converted.image;
    image_rows_->append(stored.data_ptr(), stored.size(0));
    label_rows_->append(converted.label.data_ptr(), converted.label.size(0));
    hash_ = fnv1a(hash_, stored.data_ptr(), stored.nbytes());
    hash_ = fnv1a(hash_, converted.label.data_ptr(), converted.label.nbytes());
    if (rater_rows_) {
      rater_rows_->append(converted.raters.data_ptr(), converted.raters.size(0));
      hash_ = fnv1a(hash_, converted.raters.data_ptr(), converted.raters.nbytes());
    }
    std::vector<int64_t>& histogram = summary_.label_histogram;
    const Tensor counts =
        torch::bincount(converted.label.view(-1).to(torch::kLong), {}, static_cast<int64_t>(histogram.size()));
    for (size_t v = 0; v < histogram.size(); ++v) histogram[v] += counts[static_cast<int64_t>(v)].item<int64_t>();
  }

  h5::Handle write_case_table(const CaseTable& table) {
    h5::Handle cases(KDSEG_CHECK_HDF5(H5Gcreate2(file_, "cases", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)));
    const hsize_t n = table.ids.size();
    h5::write_strings(cases, "id", table.ids);
    h5::write_strings(cases, "image_file", table.image_files);
    h5::write_strings(cases, "label_file", table.label_files);
    h5::write_array(cases, "shape", H5T_NATIVE_INT32, {n, 3}, shapes_.data());
    h5::write_array(cases, "spacing", H5T_NATIVE_DOUBLE, {n, 3}, spacings_.data());
    h5::write_array(cases, "affine", H5T_NATIVE_DOUBLE, {n, 4, 4}, affines_.data());
    h5::write_array(cases, "slices_kept", H5T_NATIVE_INT32, {n}, slices_kept_.data());
    const std::vector<int32_t> folds(table.folds.begin(), table.folds.end());
    h5::write_array(cases, "fold", H5T_NATIVE_INT32, {n}, folds.data());
    if (raters_ > 0) {
      const std::vector<int32_t> raters(n, static_cast<int32_t>(raters_));
      h5::write_array(cases, "raters", H5T_NATIVE_INT32, {n}, raters.data());
      h5::write_array(cases, "rater_agreement", H5T_NATIVE_DOUBLE, {n, static_cast<hsize_t>(raters_)},
                      agreement_.data());
    }
    return cases;
  }

  const PrepareOptions& options_;
  const bool integral_;
  const int64_t raters_;  // per case; 0: the store keeps no raters
  PrepareSummary& summary_;
  // Declared in creation order, so that they close in the reverse.
  h5::Handle file_, slices_;
  std::unique_ptr<RowWriter> image_rows_, label_rows_, rater_rows_;
  RowWriter case_rows_, index_rows_;
  int64_t height_ = -1, width_ = -1;
  uint64_t hash_ = kFnvOffset;
  std::vector<int32_t> slices_kept_, shapes_;
  std::vector<double> spacings_, affines_, agreement_;
};

void check_options(const PrepareOptions& options) {
  KDSEG_CHECK(options.size >= 0 && options.size <= kMaxSize, "--size must be ", kMinSize, "-", kMaxSize,
              " or 'native', got ", options.size);
  KDSEG_CHECK(options.size == 0 || options.size >= kMinSize, "--size ", options.size, " is below ", kMinSize,
              " pixels, the smallest slice kdseg's networks are built for; use --size ", kMinSize,
              " or more, or native");
  KDSEG_CHECK(options.folds >= 1, "--folds must be >= 1, got ", options.folds);
  KDSEG_CHECK(options.compression >= 0 && options.compression <= 9, "--compression must be 0-9, got ",
              options.compression);
  std::error_code ec;
  KDSEG_CHECK(options.force || !fs::exists(options.output, ec), options.output, ": exists; pass --force to replace it");
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

// Pass 1 reads and checks every case before anything is written; pass 2 writes the usable ones.
PrepareSummary prepare_store(const PrepareOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  check_options(options);
  PrepareSummary summary;
  summary.layout = options.detect_layout ? detect_layout(options.input) : options.layout;
  const std::vector<CaseFiles> found = find_cases(options.input, summary.layout);
  FirstPass first = convert_all(found, options, summary.layout);
  summary.raters = check_rater_counts(first.results, found);
  const std::vector<size_t> good = report_bad_cases(first.results, options, summary);
  const bool integral = std::all_of(good.begin(), good.end(), [&](size_t i) { return first.results[i].integral; });
  summary.image_dtype = integral ? "int16" : "float32";
  const CaseTable table = case_table(found, good, options.folds);

  h5::quiet_errors();
  AtomicFile output(options.output);
  // A failed write (a full disk, a file size limit) is reported once, naming the store and the
  // free space; the temporary file goes with `output`, and a previous store stays as it was.
  const auto writing = [&](const auto& step) {
    try {
      step();
    } catch (const IoError& e) {
      throw_write_failure(options.output, "the prepared store", e.message());
    }
  };
  {
    std::unique_ptr<StoreWriter> writer;
    writing([&] {
      writer = std::make_unique<StoreWriter>(output.temp_path(), options, integral, summary.raters, summary);
    });
    for (size_t row = 0; row < good.size(); ++row) {
      const size_t i = good[row];
      Converted converted =
          first.kept_in_memory[i] ? std::move(first.results[i]) : convert_case(found[i], options, summary.layout);
      KDSEG_CHECK(converted.problem.empty(), converted.problem);
      writing([&] { writer->add_case(converted, table, row); });
      first.results[i] = Converted();
    }
    writing([&] { writer->finish(table); });
    writing([&] { writer.reset(); });
  }
  output.commit();
  summary.cases = static_cast<int>(good.size());
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

// --- reading ----------------------------------------------------------------------------------------

h5::Handle PreparedStore::open_file(const std::string& path) {
  h5::quiet_errors();
  std::error_code ec;
  KDSEG_CHECK(fs::is_regular_file(path, ec), path, ": no such prepared store");
  // Under the library lock: batch loaders of other stores may be reading in their workers.
  const h5::Lock lock(h5::library_mutex());
  h5::Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  KDSEG_CHECK(file.get() >= 0, path, ": not an HDF5 file, or unreadable");
  KDSEG_CHECK(H5Aexists(file, "format") > 0 && h5::read_string_attribute(file, "format") == kFormat, path,
              ": not a kdseg prepared store");
  return file;
}

PreparedStore::PreparedStore(const std::string& path)
    : path_(path), file_(std::make_unique<h5::Handle>(open_file(path))) {
  const hid_t file = *file_;
  try {
    const auto dims = h5::dataset_dims(file, "slices/image");
    KDSEG_CHECK(dims.size() == 3, path, ": /slices/image must be [N,H,W]");
    slices_ = static_cast<int64_t>(dims[0]);
    height_ = static_cast<int64_t>(dims[1]);
    width_ = static_cast<int64_t>(dims[2]);
    case_ids_ = h5::read_strings(file, "cases/id");
    // Every table must have the length the others imply before it is read whole.
    const auto length = [&](const char* name) { return static_cast<int64_t>(h5::dataset_dims(file, name).at(0)); };
    for (const char* name : {"slices/label", "slices/case", "slices/index"}) {
      KDSEG_CHECK(length(name) == slices_, path, ": /", name, " has ", length(name), " rows but /slices/image ",
                  slices_);
    }
    KDSEG_CHECK(length("cases/fold") == static_cast<int64_t>(case_ids_.size()), path, ": /cases/fold has ",
                length("cases/fold"), " rows but /cases/id ", case_ids_.size());
    slice_case_.resize(static_cast<size_t>(slices_));
    slice_index_.resize(static_cast<size_t>(slices_));
    case_fold_.resize(case_ids_.size());
    h5::read_array(file, "slices/case", H5T_NATIVE_INT32, slice_case_.data());
    h5::read_array(file, "slices/index", H5T_NATIVE_INT32, slice_index_.data());
    h5::read_array(file, "cases/fold", H5T_NATIVE_INT32, case_fold_.data());
    read_case_geometry();
    read_rater_table();
    for (const int32_t case_row : slice_case_) {
      KDSEG_CHECK(case_row >= 0 && case_row < static_cast<int32_t>(case_ids_.size()), path, ": /slices/case holds ",
                  case_row, ", outside the case table of ", case_ids_.size());
    }
  } catch (const Error& e) {
    KDSEG_THROW(path, ": ", e.message());
  }
}

PreparedStore::~PreparedStore() = default;

void PreparedStore::read_case_geometry() {
  const hid_t file = *file_;
  const size_t n = case_ids_.size();
  const auto length = [&](const char* name) { return h5::dataset_dims(file, name).at(0); };
  case_image_files_ = h5::read_strings(file, "cases/image_file");
  KDSEG_CHECK(case_image_files_.size() == n && length("cases/shape") == n && length("cases/affine") == n, path_,
              ": /cases/image_file, /cases/shape and /cases/affine must have a row per case");
  std::vector<int32_t> shapes(3 * n);
  std::vector<double> affines(16 * n);
  h5::read_array(file, "cases/shape", H5T_NATIVE_INT32, shapes.data());
  h5::read_array(file, "cases/affine", H5T_NATIVE_DOUBLE, affines.data());
  for (size_t c = 0; c < n; ++c) {
    case_shapes_.push_back({shapes[3 * c], shapes[3 * c + 1], shapes[3 * c + 2]});
    Affine affine{};
    const auto first = affines.begin() + static_cast<std::ptrdiff_t>(16 * c);
    std::copy(first, first + 16, affine.begin());
    case_affines_.push_back(affine);
  }
}

void PreparedStore::read_rater_table() {
  const hid_t file = *file_;
  if (H5Lexists(file, "slices/raters", H5P_DEFAULT) <= 0) return;
  const auto dims = h5::dataset_dims(file, "slices/raters");
  KDSEG_CHECK(dims.size() == 4 && static_cast<int64_t>(dims[0]) == slices_ &&
                  static_cast<int64_t>(dims[2]) == height_ && static_cast<int64_t>(dims[3]) == width_,
              path_, ": /slices/raters must be [N,R,H,W] with /slices/image's N, H and W");
  raters_ = static_cast<int64_t>(dims[1]);
  const size_t n = case_ids_.size(), r = static_cast<size_t>(raters_);
  KDSEG_CHECK(h5::dataset_dims(file, "cases/rater_agreement") == std::vector<hsize_t>({n, r}), path_,
              ": /cases/rater_agreement must be [C,R]");
  std::vector<double> agreement(n * r);
  h5::read_array(file, "cases/rater_agreement", H5T_NATIVE_DOUBLE, agreement.data());
  for (size_t c = 0; c < n; ++c) {
    rater_agreement_.emplace_back(agreement.begin() + static_cast<std::ptrdiff_t>(c * r),
                                  agreement.begin() + static_cast<std::ptrdiff_t>((c + 1) * r));
  }
}

std::string PreparedStore::attribute(const std::string& name) const {
  const h5::Lock lock(h5::library_mutex());
  return h5::read_string_attribute(*file_, name);
}

int PreparedStore::folds() const {
  return case_fold_.empty() ? 0 : *std::max_element(case_fold_.begin(), case_fold_.end()) + 1;
}

std::vector<int64_t> PreparedStore::rows_in_folds(const std::vector<int>& wanted) const {
  for (int fold : wanted) {
    KDSEG_CHECK(fold >= 0 && fold < folds(), path_, ": fold ", fold, " does not exist; the store has ", folds(),
                " folds (0-", folds() - 1, ")");
  }
  std::vector<int64_t> rows;
  for (int64_t row = 0; row < slices_; ++row) {
    const int fold = case_fold_[static_cast<size_t>(slice_case_[static_cast<size_t>(row)])];
    if (wanted.empty() || std::find(wanted.begin(), wanted.end(), fold) != wanted.end()) rows.push_back(row);
  }
  return rows;
}

Tensor PreparedStore::read_row(const char* dataset, int64_t row, at::ScalarType type) const {
  KDSEG_CHECK(row >= 0 && row < slices_, path_, ": slice ", row, " outside [0, ", slices_, ")");
  const h5::Lock lock(h5::library_mutex());
  const h5::Handle set(KDSEG_CHECK_HDF5(H5Dopen2(*file_, dataset, H5P_DEFAULT)));
  Tensor out = torch::empty({height_, width_}, type);
  h5::read_row(set, row, height_, width_, type == at::kFloat ? H5T_NATIVE_FLOAT : H5T_NATIVE_UINT8, out.data_ptr());
  return out;
}

Tensor PreparedStore::image(int64_t row) const { return read_row("slices/image", row, at::kFloat); }
Tensor PreparedStore::label(int64_t row) const { return read_row("slices/label", row, at::kByte); }

}  // namespace kdseg::data
