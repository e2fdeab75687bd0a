#include "data/prepared_store.h"

#include <torch/torch.h>

#include <filesystem>

#include "core/error.h"
#include "data/hdf5_util.h"
#include "data/orientation.h"

namespace kdseg::data {
namespace {
namespace fs = std::filesystem;
using torch::Tensor;
}  // namespace

// --- reading ----------------------------------------------------------------------------------------

h5::Handle PreparedStore::open_file(const std::string& path) {
  h5::quiet_errors();
  std::error_code ec;
  KDSEG_CHECK(fs::is_regular_file(path, ec), path, ": no such prepared store");
  // Under the library lock: batch loaders of other stores may be reading in their workers.
  const h5::Lock lock(h5::library_mutex());
  h5::Handle file = h5::try_open_file(path);
  KDSEG_CHECK(file.get() >= 0, path, ": not an HDF5 file, or unreadable");
  KDSEG_CHECK(h5::has_attribute(file, store::kFormatAttribute) &&
                  h5::read_string_attribute(file, store::kFormatAttribute) == kPreparedStoreFormat,
              path, ": not a kdseg prepared store");
  return file;
}

PreparedStore::PreparedStore(const std::string& path)
    : path_(path), file_(std::make_unique<h5::Handle>(open_file(path))) {
  const hid_t file = *file_;
  try {
    const auto dims = h5::dataset_dims(file, store::kImage);
    KDSEG_CHECK(dims.size() == 3, path, ": /", store::kImage, " must be [N,H,W]");
    slices_ = static_cast<int64_t>(dims[0]);
    height_ = static_cast<int64_t>(dims[1]);
    width_ = static_cast<int64_t>(dims[2]);
    case_ids_ = h5::read_strings(file, store::kCaseId);
    // Every table must have the length the others imply before it is read whole.
    const auto length = [&](const char* name) { return static_cast<int64_t>(h5::dataset_dims(file, name).at(0)); };
    for (const char* name : {store::kLabel, store::kSliceCase, store::kSliceIndex}) {
      KDSEG_CHECK(length(name) == slices_, path, ": /", name, " has ", length(name), " rows but /", store::kImage, " ",
                  slices_);
    }
    KDSEG_CHECK(length(store::kFold) == static_cast<int64_t>(case_ids_.size()), path, ": /", store::kFold, " has ",
                length(store::kFold), " rows but /", store::kCaseId, " ", case_ids_.size());
    slice_case_.resize(static_cast<size_t>(slices_));
    slice_index_.resize(static_cast<size_t>(slices_));
    case_fold_.resize(case_ids_.size());
    h5::read_array(file, store::kSliceCase, H5T_NATIVE_INT32, slice_case_.data());
    h5::read_array(file, store::kSliceIndex, H5T_NATIVE_INT32, slice_index_.data());
    h5::read_array(file, store::kFold, H5T_NATIVE_INT32, case_fold_.data());
    read_case_geometry();
    read_rater_table();
    for (const int32_t case_row : slice_case_) {
      KDSEG_CHECK(case_row >= 0 && case_row < static_cast<int32_t>(case_ids_.size()), path, ": /", store::kSliceCase,
                  " holds ", case_row, ", outside the case table of ", case_ids_.size());
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
  case_image_files_ = h5::read_strings(file, store::kImageFile);
  KDSEG_CHECK(case_image_files_.size() == n && length(store::kShape) == n && length(store::kAffine) == n, path_,
              ": /cases/image_file, /cases/shape and /cases/affine must have a row per case");
  std::vector<int32_t> shapes(3 * n);
  std::vector<double> affines(16 * n);
  h5::read_array(file, store::kShape, H5T_NATIVE_INT32, shapes.data());
  h5::read_array(file, store::kAffine, H5T_NATIVE_DOUBLE, affines.data());
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
  if (!h5::exists(file, store::kRaters)) return;
  const auto dims = h5::dataset_dims(file, store::kRaters);
  KDSEG_CHECK(dims.size() == 4 && static_cast<int64_t>(dims[0]) == slices_ &&
                  static_cast<int64_t>(dims[2]) == height_ && static_cast<int64_t>(dims[3]) == width_,
              path_, ": /slices/raters must be [N,R,H,W] with /slices/image's N, H and W");
  raters_ = static_cast<int64_t>(dims[1]);
  const size_t n = case_ids_.size(), r = static_cast<size_t>(raters_);
  KDSEG_CHECK(h5::dataset_dims(file, store::kRaterAgreement) == std::vector<hsize_t>({n, r}), path_,
              ": /cases/rater_agreement must be [C,R]");
  std::vector<double> agreement(n * r);
  h5::read_array(file, store::kRaterAgreement, H5T_NATIVE_DOUBLE, agreement.data());
  for (size_t c = 0; c < n; ++c) {
    rater_agreement_.emplace_back(agreement.begin() + static_cast<std::ptrdiff_t>(c * r),
                                  agreement.begin() + static_cast<std::ptrdiff_t>((c + 1) * r));
  }
  if (!h5::exists(file, store::kRaterPairwiseDice)) return;  // written before it was kept
  const std::string names = h5::read_string_attribute(file, store::kRaterRegionsAttribute);
  for (size_t start = 0; start <= names.size();) {
    const size_t end = std::min(names.find(',', start), names.size());
    rater_regions_.push_back(names.substr(start, end - start));
    start = end + 1;
  }
  const size_t g = rater_regions_.size();
  KDSEG_CHECK(h5::dataset_dims(file, store::kRaterPairwiseDice) == std::vector<hsize_t>({n, g}), path_,
              ": /cases/rater_pairwise_dice must be [C,G] with the G regions of the rater_regions attribute (", names,
              ")");
  std::vector<double> pairwise(n * g);
  h5::read_array(file, store::kRaterPairwiseDice, H5T_NATIVE_DOUBLE, pairwise.data());
  for (size_t c = 0; c < n; ++c) {
    rater_pairwise_.emplace_back(pairwise.begin() + static_cast<std::ptrdiff_t>(c * g),
                                 pairwise.begin() + static_cast<std::ptrdiff_t>((c + 1) * g));
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
  const h5::Handle set = h5::open_dataset(*file_, dataset);
  Tensor out = torch::empty({height_, width_}, type);
  h5::read_row(set, row, type == at::kFloat ? H5T_NATIVE_FLOAT : H5T_NATIVE_UINT8, out.data_ptr());
  return out;
}

Tensor PreparedStore::image(int64_t row) const { return read_row(store::kImage, row, at::kFloat); }
Tensor PreparedStore::label(int64_t row) const { return read_row(store::kLabel, row, at::kByte); }

std::array<double, 3> PreparedStore::stored_spacing(size_t c) const {
  KDSEG_CHECK(c < case_shapes_.size(), path_, ": case ", c, " outside [0, ", case_shapes_.size(), ")");
  const std::array<double, 3> mm = voxel_spacing(case_affines_[c]);
  const auto& shape = case_shapes_[c];
  return {mm[2], mm[0] * static_cast<double>(shape[0]) / static_cast<double>(height_),
          mm[1] * static_cast<double>(shape[1]) / static_cast<double>(width_)};
}

}  // namespace kdseg::data
