// `kdseg prepare`: NIfTI cases into a prepared store (data/prepared_store.h) in bounded memory.
//
// One case is in memory at a time, in the dtype its file stores (a CT's int16 image and uint8
// label: 1.5 bytes a voxel); its canonical slices are cut out one at a time, compressed on every
// thread (shuffle + deflate through libdeflate, the bytes HDF5's own filters would read back) and
// written in order with H5Dwrite_chunk. Under mpirun each rank converts every N-th case into a
// part file beside the output; rank 0 then copies the compressed chunks into the store in case
// order through the same writer, so that the store holds the same bytes whatever N and --threads.
#include <torch/torch.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <thread>

#include "core/build_config.h"
#include "core/cpu_cores.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/hash.h"
#include "core/log.h"
#include "core/parallel.h"
#include "core/random.h"
#include "data/deflate.h"
#include "data/hdf5_util.h"
#include "data/prepared_store.h"
#include "data/raters.h"

namespace kdseg::data {
namespace {
namespace fs = std::filesystem;
namespace F = torch::nn::functional;
using torch::Tensor;

// Slices are resized to at most this many pixels a side (CT is 512; 4096 leaves room).
constexpr int64_t kMinSize = 16, kMaxSize = 4096;
// Label planes tested for the slice selection at a time (a few MB of mask).
constexpr int64_t kPlanesPerStep = 16;
// Slices made ahead of the one being written, per thread.
constexpr int64_t kRowsPerThread = 4;

std::string file_name(const std::string& path) { return fs::path(path).filename().string(); }

std::string selection_name(SliceSelection s) {
  return s == SliceSelection::kTumour ? "tumor" : s == SliceSelection::kOrgan ? "organ" : "all";
}

// The store's "created" time: now, or SOURCE_DATE_EPOCH (seconds since 1970) where it is set, so
// that two runs over the same input write identical files (the reproducible-builds convention).
std::string creation_time() {
  const char* epoch = std::getenv("SOURCE_DATE_EPOCH");
  if (epoch == nullptr || *epoch == '\0') return utc_now_iso8601();
  char* end = nullptr;
  const std::time_t seconds = static_cast<std::time_t>(std::strtoll(epoch, &end, 10));
  KDSEG_CHECK(*end == '\0', "SOURCE_DATE_EPOCH must be a number of seconds, got '", epoch, "'");
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

// --- reading and checking one case ---------------------------------------------------------------

// A case in memory, checked, in the dtypes its files store; nothing is reoriented yet.
struct CaseVolumes {
  Tensor image;                   // [I,J,K] the file's values (a view of its [K,J,I] order)
  Tensor label;                   // [I,J,K] uint8 label values
  Tensor raters;                  // [R,I,J,K] uint8 label maps of the raters, or undefined
  Reorientation canonical;        // of the image's voxel axes
  std::vector<int32_t> index;     // the canonical axial slices kept, ascending
  std::vector<double> agreement;  // each rater's Dice against the majority (data/raters.h)
};

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
    KDSEG_THROW(label_path, ": label values ", list, " outside the ", layout_name(layout), " set {", set, "}");
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
  if (!rater_files.raters.empty()) c.raters = read_raters(rater_files, image);
  c.label = read_label(files, image, label.valid() ? label.get() : Volume(), c.raters, layout, threads);
  c.image = image.voxels;
  const auto sizes = image.voxels.sizes();
  c.canonical = canonical_reorientation(image.affine, {sizes[0], sizes[1], sizes[2]});
  c.index = select_slices(c.label, c.canonical, options.slices, layout);
  if (c.raters.defined()) c.agreement = rater_agreement(c.raters, static_cast<int64_t>(label_values(layout).size()));
  return c;
}

// A case that cannot be used: the problem, naming its files.
std::string case_problem(const std::exception& e, const CaseFiles& files) {
  std::string problem = error_message(e);
  // Name the files when the reader did not (a failed allocation, a degenerate affine).
  const std::string image = file_name(files.image), label = file_name(files.label);
  if (problem.find(image) == std::string::npos && problem.find(label) == std::string::npos) {
    problem = image + " / " + label + ": " + problem;
  }
  return problem;
}

// Whether `path`'s values are exact integers in int16's range (the store then keeps int16).
// A file that cannot be read counts as integral: its case is reported when it is converted.
bool integral_values(const std::string& path) {
  try {
    const Geometry g = read_nifti_geometry(path);
    if (!g.scaled && (g.datatype == "int16" || g.datatype == "uint8" || g.datatype == "int8")) return true;
    const Tensor v = read_nifti(path, /*require_finite=*/false, VoxelType::kAsStored).voxels;
    if (v.numel() == 0) return true;
    if (v.is_floating_point() && !v.eq(v.round()).all().item<bool>()) return false;
    return v.min().item<double>() >= -32768 && v.max().item<double>() <= 32767;
  } catch (const Error&) {
    return true;
  }
}

// Whether slices of `path` are resized (the store then keeps float32: bilinear HU are fractional).
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

// --- encoding rows on every thread ---------------------------------------------------------------

// One row of a dataset: its chunk as stored, the word_digest of its values (chained into the
// content hash) and, for labels, how many pixels hold each value.
struct EncodedRow {
  std::vector<uint8_t> chunk;
  uint64_t digest = 0;
  std::vector<int64_t> counts;
};

// Rows [0, n) made by `make` on `threads` threads and handed to `write` in order on this thread,
// which writes row j while the threads make the rows after it; at most kRowsPerThread * threads
// rows wait to be written.
void encode_in_order(int64_t n, int threads, const std::function<EncodedRow(int64_t)>& make,
                     const std::function<void(int64_t, EncodedRow&)>& write) {
  const auto window = static_cast<int64_t>(std::max(2, static_cast<int>(kRowsPerThread) * threads));
  std::vector<EncodedRow> ring(static_cast<size_t>(window));
  std::vector<uint8_t> ready(static_cast<size_t>(window), 0);
  std::mutex mutex;
  std::condition_variable changed;
  int64_t next = 0, written = 0;
  std::exception_ptr failure;
  const auto work = [&] {
    std::unique_lock<std::mutex> lock(mutex);
    while (true) {
      changed.wait(lock, [&] { return failure || next >= n || next < written + window; });
      if (failure || next >= n) return;
      const int64_t i = next++;
      lock.unlock();
      EncodedRow row;
      std::exception_ptr error;
      try {
        row = make(i);
      } catch (...) {
        error = std::current_exception();
      }
      lock.lock();
      if (error && !failure) failure = error;
      ring[static_cast<size_t>(i % window)] = std::move(row);
      ready[static_cast<size_t>(i % window)] = 1;
      changed.notify_all();
    }
  };
  std::vector<std::thread> workers;
  start_threads(workers, std::max(1, std::min<int>(threads, static_cast<int>(n))), work);
  std::exception_ptr write_failure;
  for (int64_t j = 0; j < n && !write_failure; ++j) {
    EncodedRow row;
    {
      std::unique_lock<std::mutex> lock(mutex);
      const auto slot = static_cast<size_t>(j % window);
      changed.wait(lock, [&] { return failure || ready[slot]; });
      if (failure) break;
      row = std::move(ring[slot]);
      ready[slot] = 0;
      written = j + 1;
      changed.notify_all();
    }
    try {
      write(j, row);
    } catch (...) {
      write_failure = std::current_exception();
    }
  }
  {
    const std::lock_guard<std::mutex> lock(mutex);
    if (write_failure && !failure) failure = write_failure;
    next = std::max(next, n);  // nothing more to make
    changed.notify_all();
  }
  for (auto& w : workers) w.join();
  if (failure) std::rethrow_exception(failure);
}

// --- the writer ----------------------------------------------------------------------------------

// Appends rows of shape `row` ([] for scalars) to an extendible dataset [n, row...], one row per
// chunk (4096 scalars per chunk). Slices are written as chunks made by encode_chunk.
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
    const h5::Handle props = h5::untimed_creation(H5P_DATASET_CREATE);
    KDSEG_CHECK_HDF5(H5Pset_chunk(props, rank, chunk.data()));
    if (level > 0) {
      KDSEG_CHECK_HDF5(H5Pset_shuffle(props));
      KDSEG_CHECK_HDF5(H5Pset_deflate(props, static_cast<unsigned>(level)));
    }
    set_ = h5::Handle(KDSEG_CHECK_HDF5(H5Dcreate2(parent, name, type, space, H5P_DEFAULT, props, H5P_DEFAULT)));
  }
  void append(const void* data, int64_t rows) {
    if (rows == 0) return;
    const hsize_t start = rows_;
    extend(rows);
    std::vector<hsize_t> first{start}, count{static_cast<hsize_t>(rows)};
    for (const hsize_t d : row_) {
      first.push_back(0);
      count.push_back(d);
    }
    const h5::Handle file_space(KDSEG_CHECK_HDF5(H5Dget_space(set_)));
    KDSEG_CHECK_HDF5(H5Sselect_hyperslab(file_space, H5S_SELECT_SET, first.data(), nullptr, count.data(), nullptr));
    const h5::Handle memory(KDSEG_CHECK_HDF5(H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr)));
    KDSEG_CHECK_HDF5(H5Dwrite(set_, type_, memory, file_space, H5P_DEFAULT, data));
  }
  // Room for `rows` more rows, written with write_chunk.
  void extend(int64_t rows) {
    std::vector<hsize_t> extent{rows_ + static_cast<hsize_t>(rows)};
    extent.insert(extent.end(), row_.begin(), row_.end());
    KDSEG_CHECK_HDF5(H5Dset_extent(set_, extent.data()));
    rows_ = extent[0];
  }
  void write_chunk(int64_t row, const std::vector<uint8_t>& chunk) {
    std::vector<hsize_t> offset(row_.size() + 1, 0);
    offset[0] = static_cast<hsize_t>(row);
    KDSEG_CHECK_HDF5(H5Dwrite_chunk(set_, H5P_DEFAULT, 0, offset.data(), chunk.size(), chunk.data()));
  }
  hsize_t rows() const { return rows_; }

 private:
  h5::Handle set_;
  hid_t type_;
  std::vector<hsize_t> row_;
  hsize_t rows_ = 0;
};

// What the store records of a case besides its slices.
struct CaseEntry {
  std::string id, image_file, label_file;
  std::vector<int32_t> index;
  std::array<int32_t, 3> shape{};
  std::array<double, 3> spacing{};
  Affine affine{};
  std::vector<double> agreement;
};

enum class Rows { kImage, kLabel, kRaters };

// Writes a store (or a rank's part of one) into `path` a case at a time: begin_case, its image
// rows, label rows and rater rows in order, end_case; finish writes the case table and the
// attributes. The same calls in the same order write the same bytes.
class StoreWriter {
 public:
  StoreWriter(const std::string& path, const PrepareOptions& options, Layout layout, bool integral, int64_t raters)
      : options_(options),
        layout_(layout),
        integral_(integral),
        raters_(raters),
        file_(KDSEG_CHECK_HDF5(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT))),
        slices_(KDSEG_CHECK_HDF5(
            H5Gcreate2(file_, "slices", H5P_DEFAULT, h5::untimed_creation(H5P_GROUP_CREATE), H5P_DEFAULT))),
        case_rows_(slices_, "case", H5T_NATIVE_INT32, {}, 0),
        index_rows_(slices_, "index", H5T_NATIVE_INT32, {}, 0),
        histogram_(label_values(layout).size(), 0) {}

  hid_t file() const { return file_; }
  size_t image_element() const { return integral_ ? 2 : 4; }

  // Every case's slices share the first case's in-plane size (`height` x `width`).
  void begin_case(CaseEntry entry, int64_t height, int64_t width) {
    const auto n = static_cast<int64_t>(entry.index.size());
    if (n > 0) {
      if (height_ < 0) create_slice_sets(height, width);
      KDSEG_CHECK(height == height_ && width == width_, entry.image_file, ": canonical in-plane size ", height, "x",
                  width, " differs from the first case's ", height_, "x", width_,
                  "; --size native needs equal sizes (use --size N)");
      first_row_ = static_cast<int64_t>(image_rows_->rows());
      image_rows_->extend(n);
      label_rows_->extend(n);
      if (rater_rows_) rater_rows_->extend(n);
    }
    entry_ = std::move(entry);
  }

  // Row j of the case in dataset `which`; rows of a dataset come in order.
  void write(Rows which, int64_t j, EncodedRow& row) {
    RowWriter& set = which == Rows::kImage ? *image_rows_ : which == Rows::kLabel ? *label_rows_ : *rater_rows_;
    set.write_chunk(first_row_ + j, row.chunk);
    hash_ = fnv1a(hash_, &row.digest, sizeof row.digest);
    digests_[static_cast<size_t>(which)].push_back(row.digest);
    for (size_t v = 0; v < row.counts.size() && v < histogram_.size(); ++v) histogram_[v] += row.counts[v];
    row = EncodedRow();
  }

  // Counts of label values of rows written without them (a part's, joined into the store).
  void add_histogram(const std::vector<int64_t>& counts) {
    for (size_t v = 0; v < counts.size() && v < histogram_.size(); ++v) histogram_[v] += counts[v];
  }

  // A part's own tables: each row's digest per dataset and the label histogram.
  void write_part_digests(hid_t part) const {
    const char* names[3] = {"image_digest", "label_digest", "rater_digest"};
    for (size_t d = 0; d < 3; ++d)
      h5::write_array(part, names[d], H5T_NATIVE_UINT64, {digests_[d].size()}, digests_[d].data());
    h5::write_array(part, "histogram", H5T_NATIVE_INT64, {histogram_.size()}, histogram_.data());
  }

  void end_case() {
    const std::vector<int32_t>& index = entry_.index;
    const std::vector<int32_t> case_column(index.size(), static_cast<int32_t>(ids_.size()));
    case_rows_.append(case_column.data(), static_cast<int64_t>(case_column.size()));
    index_rows_.append(index.data(), static_cast<int64_t>(index.size()));
    hash_ = fnv1a(hash_, entry_.id.data(), entry_.id.size());
    hash_ = fnv1a(hash_, index.data(), index.size() * sizeof(int32_t));
    ids_.push_back(entry_.id);
    image_files_.push_back(entry_.image_file);
    label_files_.push_back(entry_.label_file);
    slices_kept_.push_back(static_cast<int32_t>(index.size()));
    shapes_.insert(shapes_.end(), entry_.shape.begin(), entry_.shape.end());
    spacings_.insert(spacings_.end(), entry_.spacing.begin(), entry_.spacing.end());
    affines_.insert(affines_.end(), entry_.affine.begin(), entry_.affine.end());
    agreement_.insert(agreement_.end(), entry_.agreement.begin(), entry_.agreement.end());
  }

  // The case table, the attributes and the summary's counts. A store needs a slice; a rank's
  // part (`require_slices` false) may hold none.
  void finish(PrepareSummary& summary, bool require_slices = true) {
    KDSEG_CHECK(image_rows_ != nullptr || !require_slices, options_.input,
                ": no case has a slice to keep with --slices ", selection_name(options_.slices));
    const std::vector<int> folds = assign_folds(ids_, options_.folds);
    // The group stays open until the file is flushed, as the attributes are written.
    const h5::Handle cases = write_case_table(folds);
    summary.slices_per_fold.assign(static_cast<size_t>(options_.folds), 0);
    summary.cases_per_fold.assign(static_cast<size_t>(options_.folds), 0);
    for (size_t c = 0; c < ids_.size(); ++c) {
      summary.slices_per_fold[static_cast<size_t>(folds[c])] += slices_kept_[c];
      summary.cases_per_fold[static_cast<size_t>(folds[c])] += 1;
      summary.slices += slices_kept_[c];
    }
    summary.cases = static_cast<int>(ids_.size());
    summary.label_histogram = histogram_;
    summary.content_hash = hex64(hash_);
    const nlohmann::json recorded = {
        {"slices", selection_name(options_.slices)},
        {"size", options_.size == 0 ? nlohmann::json("native") : nlohmann::json(options_.size)},
        {"folds", options_.folds},
        {"compression", options_.compression},
        {"skip_bad_cases", options_.skip_bad_cases},
        {"raters", options_.raters == RaterSearch::kAuto ? "auto" : "none"},
        {"input", options_.input}};
    h5::write_string_attribute(file_, "format", kPreparedStoreFormat);
    h5::write_string_attribute(file_, "layout", layout_name(layout_));
    h5::write_string_attribute(file_, "options", recorded.dump());
    h5::write_string_attribute(file_, "tool_version", KDSEG_TOOL_VERSION);
    h5::write_string_attribute(file_, "created", creation_time());
    h5::write_string_attribute(file_, "content_hash", summary.content_hash);
    KDSEG_CHECK_HDF5(H5Fflush(file_, H5F_SCOPE_GLOBAL));
  }

 private:
  void create_slice_sets(int64_t height, int64_t width) {
    height_ = height;
    width_ = width;
    const hid_t image_type = integral_ ? H5T_NATIVE_INT16 : H5T_NATIVE_FLOAT;
    const std::vector<hsize_t> slice{static_cast<hsize_t>(height_), static_cast<hsize_t>(width_)};
    image_rows_ = std::make_unique<RowWriter>(slices_, "image", image_type, slice, options_.compression);
    label_rows_ = std::make_unique<RowWriter>(slices_, "label", H5T_NATIVE_UINT8, slice, options_.compression);
    if (raters_ > 0) {
      const std::vector<hsize_t> rows{static_cast<hsize_t>(raters_), slice[0], slice[1]};
      rater_rows_ = std::make_unique<RowWriter>(slices_, "raters", H5T_NATIVE_UINT8, rows, options_.compression);
    }
  }

  h5::Handle write_case_table(const std::vector<int>& fold_of) {
    h5::Handle cases(
        KDSEG_CHECK_HDF5(H5Gcreate2(file_, "cases", H5P_DEFAULT, h5::untimed_creation(H5P_GROUP_CREATE), H5P_DEFAULT)));
    const hsize_t n = ids_.size();
    h5::write_strings(cases, "id", ids_);
    h5::write_strings(cases, "image_file", image_files_);
    h5::write_strings(cases, "label_file", label_files_);
    h5::write_array(cases, "shape", H5T_NATIVE_INT32, {n, 3}, shapes_.data());
    h5::write_array(cases, "spacing", H5T_NATIVE_DOUBLE, {n, 3}, spacings_.data());
    h5::write_array(cases, "affine", H5T_NATIVE_DOUBLE, {n, 4, 4}, affines_.data());
    h5::write_array(cases, "slices_kept", H5T_NATIVE_INT32, {n}, slices_kept_.data());
    const std::vector<int32_t> folds(fold_of.begin(), fold_of.end());
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
  const Layout layout_;
  const bool integral_;
  const int64_t raters_;  // per case; 0: the store keeps no raters
  // Declared in creation order, so that they close in the reverse.
  h5::Handle file_, slices_;
  std::unique_ptr<RowWriter> image_rows_, label_rows_, rater_rows_;
  RowWriter case_rows_, index_rows_;
  int64_t height_ = -1, width_ = -1, first_row_ = 0;
  uint64_t hash_ = kFnvOffset;
  CaseEntry entry_;
  std::vector<std::string> ids_, image_files_, label_files_;
  std::vector<int32_t> slices_kept_, shapes_;
  std::vector<double> spacings_, affines_, agreement_;
  std::vector<int64_t> histogram_;
  std::vector<uint64_t> digests_[3];  // per Rows value, every row written
};

// --- converting a case's slices -------------------------------------------------------------------

// The case's canonical slices, resized to the store's size, through `writer` on `threads` threads.
void write_case(StoreWriter& writer, const CaseVolumes& c, const CaseFiles& files, const PrepareOptions& options,
                int threads) {
  const Reorientation& r = c.canonical;
  const int64_t height = options.size > 0 ? options.size : r.shape[0];
  const int64_t width = options.size > 0 ? options.size : r.shape[1];
  const bool resize = height != r.shape[0] || width != r.shape[1];
  const std::vector<int64_t> size{height, width};
  const auto bilinear = F::InterpolateFuncOptions().size(size).mode(torch::kBilinear).align_corners(false);
  const auto nearest = F::InterpolateFuncOptions().size(size).mode(torch::kNearest);
  const int level = options.compression;

  CaseEntry entry;
  entry.id = files.id;
  entry.image_file = files.image;
  entry.label_file = files.label;
  entry.index = c.index;
  for (size_t d = 0; d < 3; ++d) entry.shape[d] = static_cast<int32_t>(r.shape[d]);
  entry.spacing = voxel_spacing(r.affine);
  entry.affine = r.affine;
  entry.agreement = c.agreement;
  writer.begin_case(std::move(entry), height, width);

  const auto n = static_cast<int64_t>(c.index.size());
  const auto k = [&](int64_t j) { return static_cast<int64_t>(c.index[static_cast<size_t>(j)]); };
  // Label maps [m,X,Y] -> [m,H,W] uint8, nearest.
  const auto resize_labels = [&](const Tensor& maps) {
    return resize ? F::interpolate(maps.unsqueeze(0).to(torch::kFloat), nearest).squeeze(0).round().to(torch::kByte)
                  : maps;
  };
  const auto encoded = [&](Tensor values, bool count) {
    values = values.contiguous();
    EncodedRow row;
    row.chunk = encode_chunk(values.data_ptr(), values.nbytes(), values.element_size(), level);
    row.digest = word_digest(values.data_ptr(), values.nbytes());
    if (count) {
      row.counts.assign(256, 0);
      const uint8_t* v = values.data_ptr<uint8_t>();
      for (int64_t i = 0; i < values.numel(); ++i) ++row.counts[v[i]];
    }
    return row;
  };
  const auto write = [&](Rows which) {
    return [&writer, which](int64_t j, EncodedRow& row) { writer.write(which, j, row); };
  };
  encode_in_order(
      n, threads,
      [&](int64_t j) {
        Tensor slice = canonical_slice(c.image, r, k(j));
        if (writer.image_element() == 2) return encoded(slice.to(torch::kShort), false);
        slice = slice.to(torch::kFloat);
        if (resize) slice = F::interpolate(slice.unsqueeze(0).unsqueeze(0), bilinear).squeeze(0).squeeze(0);
        return encoded(slice, false);
      },
      write(Rows::kImage));
  encode_in_order(
      n, threads,
      [&](int64_t j) {
        return encoded(resize_labels(canonical_slice(c.label, r, k(j)).unsqueeze(0)).squeeze(0), true);
      },
      write(Rows::kLabel));
  if (c.raters.defined()) {
    encode_in_order(
        n, threads,
        [&](int64_t j) {
          std::vector<Tensor> maps;
          for (int64_t q = 0; q < c.raters.size(0); ++q) maps.push_back(canonical_slice(c.raters[q], r, k(j)));
          return encoded(resize_labels(torch::stack(maps)), false);
        },
        write(Rows::kRaters));
  }
  writer.end_case();
}

// --- the cases of a run --------------------------------------------------------------------------

// What is known of each case before any is read: its rater files, and a problem that makes it
// unusable (a missing partner or rater file, fewer raters than the other cases).
struct CasePlan {
  RaterFiles raters;
  std::string problem;
};

std::vector<CasePlan> plan_cases(const std::vector<CaseFiles>& found, const PrepareOptions& options, Layout layout,
                                 int64_t& raters) {
  std::vector<CasePlan> plans(found.size());
  raters = 0;
  for (size_t i = 0; i < found.size(); ++i) {
    CasePlan& plan = plans[i];
    plan.problem = found[i].problem;
    if (!plan.problem.empty() || options.raters != RaterSearch::kAuto) continue;
    plan.raters = find_rater_files(found[i], layout, options.qubiq_task);
    plan.problem = plan.raters.problem;
    if (plan.problem.empty()) raters = std::max(raters, static_cast<int64_t>(plan.raters.raters.size()));
  }
  // Every case of a store has as many raters as the case that has the most.
  for (size_t i = 0; i < found.size(); ++i) {
    CasePlan& plan = plans[i];
    const auto count = static_cast<int64_t>(plan.raters.raters.size());
    if (!plan.problem.empty() || count == raters) continue;
    plan.problem = fs::path(found[i].image).parent_path().string() + ": " + std::to_string(count) +
                   " raters, where other cases have " + std::to_string(raters) +
                   " (every case of a store needs the same raters)";
  }
  return plans;
}

// What convert_cases did: the cases written and the problems of those that could not be used,
// by position in the run's case list.
struct Converted {
  std::vector<size_t> written;
  std::map<size_t, std::string> problems;
};

// Converts the cases `mine` (positions in `found`, ascending) into `writer`. Once a case is bad
// and bad cases are not skipped, the rest are only read and checked, so that every problem is
// reported.
Converted convert_cases(StoreWriter& writer, const std::vector<CaseFiles>& found, const std::vector<CasePlan>& plans,
                        const std::vector<size_t>& mine, const PrepareOptions& options, Layout layout, int threads,
                        const std::function<void()>& on_case) {
  Converted out;
  std::map<size_t, std::string>& problems = out.problems;
  for (const size_t i : mine) {
    std::string problem = plans[i].problem;
    std::optional<CaseVolumes> volumes;
    const auto start = std::chrono::steady_clock::now();
    const auto seconds = [&] {
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    };
    if (problem.empty()) {
      try {
        volumes = read_case(found[i], plans[i].raters, options, layout, threads);
        log::debug("prepare: {} read and checked in {:.2f} s", found[i].id, seconds());
      } catch (const std::exception& e) {
        problem = case_problem(e, found[i]);
      }
    }
    if (!problem.empty()) {
      problems[i] = problem;
    } else if (problems.empty() || options.skip_bad_cases) {
      write_case(writer, *volumes, found[i], options, threads);
      out.written.push_back(i);
      log::debug("prepare: {} written, {} slices, after {:.2f} s", found[i].id, volumes->index.size(), seconds());
    }
    on_case();
  }
  return out;
}

// Bad cases go to summary.skipped and stop everything unless skip_bad_cases.
void report_bad_cases(const std::map<size_t, std::string>& problems, size_t cases, const PrepareOptions& options,
                      PrepareSummary& summary) {
  std::string list;
  for (const auto& [i, problem] : problems) {
    summary.skipped.push_back(problem);
    list += "\n  " + problem;
  }
  if (!list.empty() && !options.skip_bad_cases) {
    KDSEG_THROW(problems.size(), " of ", cases,
                " cases are bad; nothing was written (pass --skip-bad-cases to leave them out):", list);
  }
  for (const auto& problem : summary.skipped) log::warn("skipping bad case: {}", problem);
  KDSEG_CHECK(problems.size() < cases, options.input, ": no usable case");
  const size_t usable = cases - problems.size();
  if (static_cast<size_t>(options.folds) > usable) {
    log::warn("{}: --folds {} with {} usable cases: {} of the folds hold no case", options.input, options.folds, usable,
              static_cast<size_t>(options.folds) - usable);
  }
}

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

// --- parts of a store, one per rank ----------------------------------------------------------------

// A rank's part is the temporary file of an AtomicFile that is never committed: it goes when the
// rank is done, and a killed rank's is removed by the next run on that host with as many ranks.
// Its attribute "run" holds the run's token, which tells it from a concurrent run's parts.
std::string part_name(const std::string& output, int rank, int ranks) {
  return (fs::path(output).parent_path() /
          (fs::path(output).filename().string() + ".part-" + std::to_string(rank) + "-of-" + std::to_string(ranks)))
      .string();
}

// The token of a run (rank 0's), the same on every rank.
int64_t run_token(const PrepareRanks& ranks) {
  std::vector<int64_t> token{0};
  if (ranks.rank == 0) {
    std::random_device random;
    const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
    token[0] = static_cast<int64_t>(
        (static_cast<uint64_t>(random()) << 32 ^ static_cast<uint64_t>(now) ^ static_cast<uint64_t>(::getpid())) >> 1);
  }
  ranks.sum(token);
  return token[0];
}

// The part file of rank `rank` of the run `token`: a temporary of part_name's in its folder.
std::string find_part(const std::string& output, int rank, int ranks, int64_t token) {
  const fs::path name = fs::path(part_name(output, rank, ranks)).filename();
  const fs::path folder = fs::path(output).parent_path().empty() ? fs::path(".") : fs::path(output).parent_path();
  std::error_code ec;
  for (fs::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string file = it->path().filename().string(), suffix = "-" + name.string();
    if (file.rfind(".kdseg-tmp-", 0) != 0 || file.size() <= suffix.size() ||
        file.compare(file.size() - suffix.size(), suffix.size(), suffix) != 0) {
      continue;
    }
    if (!is_own_regular_file(it->path().string())) continue;  // not made by this user: never a part
    try {
      const h5::Handle part = PreparedStore::open_file(it->path().string());
      if (H5Aexists(part, "run") > 0 && h5::read_string_attribute(part, "run") == std::to_string(token))
        return it->path().string();
    } catch (const Error&) {
      // another run's part being written, or not a part: not ours
    }
  }
  KDSEG_THROW(output, ": the part of rank ", rank, " (", name.string(), ") is missing from ", folder.string());
}

// A rank's part: the store's datasets for its cases, plus /part/case (each case's position in the
// run's case list) and /part/bad_case, /part/bad_problem.
void write_part_tables(const StoreWriter& writer, const std::vector<size_t>& written,
                       const std::map<size_t, std::string>& problems) {
  const h5::Handle part(KDSEG_CHECK_HDF5(
      H5Gcreate2(writer.file(), "part", H5P_DEFAULT, h5::untimed_creation(H5P_GROUP_CREATE), H5P_DEFAULT)));
  writer.write_part_digests(part);
  const std::vector<int64_t> cases(written.begin(), written.end());
  h5::write_array(part, "case", H5T_NATIVE_INT64, {cases.size()}, cases.data());
  std::vector<int64_t> bad;
  std::vector<std::string> messages;
  for (const auto& [i, problem] : problems) {
    bad.push_back(static_cast<int64_t>(i));
    messages.push_back(problem);
  }
  h5::write_array(part, "bad_case", H5T_NATIVE_INT64, {bad.size()}, bad.data());
  h5::write_strings(part, "bad_problem", messages);
}

// Copies case `row` of an open part into `writer`: its chunks and their digests as they are.
class PartReader {
 public:
  explicit PartReader(const std::string& path) : path_(path), file_(PreparedStore::open_file(path)) {
    const char* names[3] = {"part/image_digest", "part/label_digest", "part/rater_digest"};
    for (size_t d = 0; d < 3; ++d) {
      digests_[d].resize(h5::dataset_dims(file_, names[d]).at(0));
      if (!digests_[d].empty()) h5::read_array(file_, names[d], H5T_NATIVE_UINT64, digests_[d].data());
    }
    histogram_.resize(h5::dataset_dims(file_, "part/histogram").at(0));
    if (!histogram_.empty()) h5::read_array(file_, "part/histogram", H5T_NATIVE_INT64, histogram_.data());
    const auto cases = h5::dataset_dims(file_, "part/case").at(0);
    case_of_row_.resize(cases);
    if (cases > 0) h5::read_array(file_, "part/case", H5T_NATIVE_INT64, case_of_row_.data());
    const auto bad = h5::dataset_dims(file_, "part/bad_case").at(0);
    std::vector<int64_t> bad_cases(bad);
    if (bad > 0) h5::read_array(file_, "part/bad_case", H5T_NATIVE_INT64, bad_cases.data());
    const std::vector<std::string> messages = h5::read_strings(file_, "part/bad_problem");
    for (size_t j = 0; j < bad_cases.size(); ++j) problems_[static_cast<size_t>(bad_cases[j])] = messages.at(j);
    if (cases == 0) return;
    ids_ = h5::read_strings(file_, "cases/id");
    slices_kept_.resize(cases);
    shapes_.resize(3 * cases);
    spacings_.resize(3 * cases);
    affines_.resize(16 * cases);
    h5::read_array(file_, "cases/slices_kept", H5T_NATIVE_INT32, slices_kept_.data());
    h5::read_array(file_, "cases/shape", H5T_NATIVE_INT32, shapes_.data());
    h5::read_array(file_, "cases/spacing", H5T_NATIVE_DOUBLE, spacings_.data());
    h5::read_array(file_, "cases/affine", H5T_NATIVE_DOUBLE, affines_.data());
    if (H5Lexists(file_, "cases/rater_agreement", H5P_DEFAULT) > 0) {
      raters_ = static_cast<int64_t>(h5::dataset_dims(file_, "cases/rater_agreement").at(1));
      agreement_.resize(cases * static_cast<size_t>(raters_));
      h5::read_array(file_, "cases/rater_agreement", H5T_NATIVE_DOUBLE, agreement_.data());
    }
    index_.resize(static_cast<size_t>(h5::dataset_dims(file_, "slices/index").at(0)));
    if (!index_.empty()) {
      h5::read_array(file_, "slices/index", H5T_NATIVE_INT32, index_.data());
      const auto dims = h5::dataset_dims(file_, "slices/image");
      height_ = static_cast<int64_t>(dims[1]);
      width_ = static_cast<int64_t>(dims[2]);
    }
  }
  const std::vector<int64_t>& cases() const { return case_of_row_; }
  const std::map<size_t, std::string>& problems() const { return problems_; }
  const std::vector<int64_t>& histogram() const { return histogram_; }

  void copy_case(size_t row, const CaseFiles& files, StoreWriter& writer) {
    CaseEntry entry;
    entry.id = ids_.at(row);
    entry.image_file = files.image;
    entry.label_file = files.label;
    const auto n = static_cast<int64_t>(slices_kept_[row]);
    entry.index.assign(index_.begin() + first_, index_.begin() + first_ + n);
    std::copy_n(shapes_.begin() + static_cast<std::ptrdiff_t>(3 * row), 3, entry.shape.begin());
    std::copy_n(spacings_.begin() + static_cast<std::ptrdiff_t>(3 * row), 3, entry.spacing.begin());
    std::copy_n(affines_.begin() + static_cast<std::ptrdiff_t>(16 * row), 16, entry.affine.begin());
    const auto r = static_cast<size_t>(raters_);
    entry.agreement.assign(agreement_.begin() + static_cast<std::ptrdiff_t>(row * r),
                           agreement_.begin() + static_cast<std::ptrdiff_t>((row + 1) * r));
    writer.begin_case(std::move(entry), height_, width_);
    if (n > 0) {
      copy_rows(writer, Rows::kImage, "slices/image", n, 2);
      copy_rows(writer, Rows::kLabel, "slices/label", n, 2);
      if (raters_ > 0) copy_rows(writer, Rows::kRaters, "slices/raters", n, 3);
    }
    writer.end_case();
    first_ += n;
  }

 private:
  void copy_rows(StoreWriter& writer, Rows which, const char* name, int64_t n, size_t row_rank) {
    const h5::Handle set(KDSEG_CHECK_HDF5(H5Dopen2(file_, name, H5P_DEFAULT)));
    const std::vector<uint64_t>& digests = digests_[static_cast<size_t>(which)];
    KDSEG_CHECK(static_cast<size_t>(first_ + n) <= digests.size(), path_, ": fewer digests than rows in ", name);
    for (int64_t j = 0; j < n; ++j) {
      std::vector<hsize_t> offset(row_rank + 1, 0);
      offset[0] = static_cast<hsize_t>(first_ + j);
      EncodedRow copy{h5::read_raw_chunk(set, offset), digests[static_cast<size_t>(first_ + j)], {}};
      writer.write(which, j, copy);
    }
  }

  std::string path_;
  h5::Handle file_;
  std::vector<uint64_t> digests_[3];
  std::vector<int64_t> histogram_;
  std::vector<int64_t> case_of_row_;
  std::map<size_t, std::string> problems_;
  std::vector<std::string> ids_;
  std::vector<int32_t> slices_kept_, shapes_, index_;
  std::vector<double> spacings_, affines_, agreement_;
  int64_t raters_ = 0, height_ = 0, width_ = 0, first_ = 0;
};

}  // namespace

std::vector<int> assign_folds(const std::vector<std::string>& ids, int folds) {
  KDSEG_CHECK(folds >= 1, "--folds must be >= 1, got ", folds);
  std::vector<std::pair<uint64_t, size_t>> order;
  for (size_t i = 0; i < ids.size(); ++i) order.emplace_back(mix64(fnv1a(kFnvOffset, ids[i].data(), ids[i].size())), i);
  std::sort(order.begin(), order.end());
  std::vector<int> fold(ids.size());
  for (size_t r = 0; r < order.size(); ++r) fold[order[r].second] = static_cast<int>(r % static_cast<size_t>(folds));
  return fold;
}

PrepareSummary prepare_store(const PrepareOptions& options, const PrepareRanks& ranks) {
  const auto start = std::chrono::steady_clock::now();
  check_options(options);
  KDSEG_CHECK(ranks.size == 1 || (ranks.sum && ranks.wait_for_all), "prepare: ranks need their collectives");
  PrepareSummary summary;
  summary.layout = options.detect_layout ? detect_layout(options.input) : options.layout;
  const std::vector<CaseFiles> found = find_cases(options.input, summary.layout);
  const std::vector<CasePlan> plans = plan_cases(found, options, summary.layout, summary.raters);
  std::vector<size_t> mine;  // every ranks-th case from this rank's own
  for (size_t i = static_cast<size_t>(ranks.rank); i < found.size(); i += static_cast<size_t>(ranks.size)) {
    mine.push_back(i);
  }

  // The image dtype is one for the store: int16 unless a usable case's values are not exact
  // int16 integers (read here only for files whose type does not settle it) or are resized.
  std::vector<int64_t> fractional{0};
  for (const size_t i : mine) {
    if (plans[i].problem.empty() && (resized(found[i].image, options.size) || !integral_values(found[i].image))) {
      ++fractional[0];
    }
  }
  if (ranks.size > 1) {
    ranks.wait_for_all();  // a rank with many float files reads them all first: no timeout for it
    ranks.sum(fractional);
  }
  const bool integral = fractional[0] == 0;
  summary.image_dtype = integral ? "int16" : "float32";
  const int threads = options.threads > 0 ? options.threads : std::max(1, available_cores() / ranks.size);

  h5::quiet_errors();
  // A failed write (a full disk, a file size limit) is reported once, naming the store and the
  // free space; the temporary file goes with `output`, and a previous store stays as it was.
  const auto writing = [&](const auto& step) {
    try {
      step();
    } catch (const IoError& e) {
      throw_write_failure(options.output, "the prepared store", e.message());
    }
  };
  const auto progress = [&, done = size_t{0}]() mutable {
    ++done;
    log::debug("prepare: {} of {} cases on rank {}", done, found.size(), ranks.rank);
  };

  if (ranks.size == 1) {
    AtomicFile output(options.output);
    std::unique_ptr<StoreWriter> writer;
    writing([&] {
      writer = std::make_unique<StoreWriter>(output.temp_path(), options, summary.layout, integral, summary.raters);
    });
    Converted converted;
    writing(
        [&] { converted = convert_cases(*writer, found, plans, mine, options, summary.layout, threads, progress); });
    report_bad_cases(converted.problems, found.size(), options, summary);
    writing([&] { writer->finish(summary); });
    writing([&] { writer.reset(); });
    output.commit();
  } else {
    // Each rank writes its part; rank 0 joins them once every part is complete.
    const int64_t token = run_token(ranks);
    AtomicFile part(part_name(options.output, ranks.rank, ranks.size));
    writing([&] {
      StoreWriter writer(part.temp_path(), options, summary.layout, integral, summary.raters);
      h5::write_string_attribute(writer.file(), "run", std::to_string(token));
      const Converted converted = convert_cases(writer, found, plans, mine, options, summary.layout, threads, progress);
      write_part_tables(writer, converted.written, converted.problems);
      PrepareSummary part_summary;
      writer.finish(part_summary, /*require_slices=*/false);
    });
    ranks.wait_for_all();
    std::exception_ptr failure;
    if (ranks.rank == 0) {
      try {
        std::vector<std::unique_ptr<PartReader>> parts;
        std::map<size_t, std::string> problems;
        std::vector<std::pair<size_t, size_t>> where(found.size(), {SIZE_MAX, 0});  // part, row
        for (int r = 0; r < ranks.size; ++r) {
          parts.push_back(std::make_unique<PartReader>(find_part(options.output, r, ranks.size, token)));
          problems.insert(parts.back()->problems().begin(), parts.back()->problems().end());
          for (size_t row = 0; row < parts.back()->cases().size(); ++row)
            where[static_cast<size_t>(parts.back()->cases()[row])] = {static_cast<size_t>(r), row};
        }
        report_bad_cases(problems, found.size(), options, summary);
        AtomicFile output(options.output);
        writing([&] {
          StoreWriter writer(output.temp_path(), options, summary.layout, integral, summary.raters);
          for (size_t i = 0; i < found.size(); ++i) {
            if (where[i].first != SIZE_MAX) parts[where[i].first]->copy_case(where[i].second, found[i], writer);
          }
          for (const auto& part : parts) writer.add_histogram(part->histogram());
          writer.finish(summary);
        });
        output.commit();
      } catch (...) {
        failure = std::current_exception();
      }
    }
    std::vector<int64_t> failed{failure ? 1 : 0};
    ranks.wait_for_all();
    ranks.sum(failed);
    if (failure) std::rethrow_exception(failure);
    KDSEG_CHECK(failed[0] == 0, options.output, ": rank 0 could not join the parts (its error is logged)");
  }
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

}  // namespace kdseg::data
