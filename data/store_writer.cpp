#include "data/store_writer.h"

#include "data/rater_agreement.h"

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <ctime>

#include "core/build_config.h"
#include "core/error.h"
#include "core/file_util.h"
#include "data/store_check.h"

namespace kdseg::data::detail {
namespace {

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

}  // namespace

// --- RowWriter -------------------------------------------------------------------------------------

RowWriter::RowWriter(hid_t parent, const char* name, hid_t type, std::vector<hsize_t> row, int level)
    : type_(type), row_(std::move(row)) {
  std::vector<hsize_t> dims{0}, max{H5S_UNLIMITED}, chunk{row_.empty() ? hsize_t{4096} : hsize_t{1}};
  for (const hsize_t d : row_) {
    dims.push_back(d);
    max.push_back(d);
    chunk.push_back(d);
  }
  const h5::Handle props = h5::untimed_creation(H5P_DATASET_CREATE);
  h5::set_shuffle_deflate_chunks(props, chunk, level);
  set_ = h5::create_dataset(parent, name, type, dims, props, max);
}

void RowWriter::append(const void* data, int64_t rows) {
  if (rows == 0) return;
  const hsize_t start = rows_;
  extend(rows);
  std::vector<hsize_t> first{start}, count{static_cast<hsize_t>(rows)};
  for (const hsize_t d : row_) {
    first.push_back(0);
    count.push_back(d);
  }
  h5::write_slab(set_, type_, first, count, data);
}

void RowWriter::extend(int64_t rows) {
  std::vector<hsize_t> extent{rows_ + static_cast<hsize_t>(rows)};
  extent.insert(extent.end(), row_.begin(), row_.end());
  KDSEG_CHECK_HDF5(H5Dset_extent(set_, extent.data()));
  rows_ = extent[0];
}

void RowWriter::write_chunk(int64_t row, const std::vector<uint8_t>& chunk) {
  std::vector<hsize_t> offset(row_.size() + 1, 0);
  offset[0] = static_cast<hsize_t>(row);
  KDSEG_CHECK_HDF5(H5Dwrite_chunk(set_, H5P_DEFAULT, 0, offset.data(), chunk.size(), chunk.data()));
}

// --- StoreWriter -----------------------------------------------------------------------------------

StoreWriter::StoreWriter(const std::string& path, const PrepareOptions& options, Layout layout, bool integral,
                         int64_t raters)
    : options_(options),
      layout_(layout),
      integral_(integral),
      raters_(raters),
      file_(h5::create_file(path)),
      slices_(h5::create_group(file_, store::kSlices)),
      case_rows_(file_, store::kSliceCase, H5T_NATIVE_INT32, {}, 0),
      index_rows_(file_, store::kSliceIndex, H5T_NATIVE_INT32, {}, 0),
      histogram_(label_values(layout).size(), 0) {}

void StoreWriter::begin_case(CaseEntry entry, int64_t height, int64_t width) {
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
    if (majority_rows_) majority_rows_->extend(n);
  }
  entry_ = std::move(entry);
}

void StoreWriter::write(Rows which, int64_t j, EncodedRow& row) {
  const std::unique_ptr<RowWriter>* sets[] = {&image_rows_, &label_rows_, &rater_rows_, &majority_rows_};
  RowWriter& set = **sets[static_cast<size_t>(which)];
  set.write_chunk(first_row_ + j, row.chunk);
  hash_ = fnv1a(hash_, &row.digest, sizeof row.digest);
  digests_[static_cast<size_t>(which)].push_back(row.digest);
  for (size_t v = 0; v < row.counts.size() && v < histogram_.size(); ++v) histogram_[v] += row.counts[v];
  row = EncodedRow();
}

void StoreWriter::add_histogram(const std::vector<int64_t>& counts) {
  for (size_t v = 0; v < counts.size() && v < histogram_.size(); ++v) histogram_[v] += counts[v];
}

void StoreWriter::end_case() {
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
  pairwise_.push_back(entry_.pairwise);
}

void StoreWriter::finish(PrepareSummary& summary, bool require_slices) {
  KDSEG_CHECK(image_rows_ != nullptr || !require_slices, options_.input, ": no case has a slice to keep with --slices ",
              enum_name(options_.slices));
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
  if (raters_ > 0) summary.rater_agreement = describe_agreement(agreement_regions(layout_), pairwise_);
  const nlohmann::json recorded = {
      {"slices", enum_name(options_.slices)},
      {"size", options_.size == 0 ? nlohmann::json("native") : nlohmann::json(options_.size)},
      {"folds", options_.folds},
      {"compression", options_.compression},
      {"skip_bad_cases", options_.skip_bad_cases},
      {"raters",
       options_.rater_count > 0 ? nlohmann::json(options_.rater_count) : nlohmann::json(enum_name(options_.raters))},
      {"input", options_.input}};
  h5::write_string_attribute(file_, store::kFormatAttribute, kPreparedStoreFormat);
  h5::write_string_attribute(file_, store::kLayoutAttribute, enum_name(layout_));
  h5::write_string_attribute(file_, store::kOptionsAttribute, recorded.dump());
  h5::write_string_attribute(file_, store::kToolVersionAttribute, KDSEG_TOOL_VERSION);
  h5::write_string_attribute(file_, store::kCreatedAttribute, creation_time());
  h5::write_string_attribute(file_, store::kContentHashAttribute, summary.content_hash);
  h5::write_string_attribute(file_, store::kTableHashAttribute, case_table_hash(file_));
  KDSEG_CHECK_HDF5(H5Fflush(file_, H5F_SCOPE_GLOBAL));
}

void StoreWriter::create_slice_sets(int64_t height, int64_t width) {
  height_ = height;
  width_ = width;
  const hid_t image_type = integral_ ? H5T_NATIVE_INT16 : H5T_NATIVE_FLOAT;
  const std::vector<hsize_t> slice{static_cast<hsize_t>(height_), static_cast<hsize_t>(width_)};
  const int level = options_.compression;
  image_rows_ = std::make_unique<RowWriter>(file_, store::kImage, image_type, slice, level);
  label_rows_ = std::make_unique<RowWriter>(file_, store::kLabel, H5T_NATIVE_UINT8, slice, level);
  if (raters_ > 0) {
    const std::vector<hsize_t> rows{static_cast<hsize_t>(raters_), slice[0], slice[1]};
    rater_rows_ = std::make_unique<RowWriter>(file_, store::kRaters, H5T_NATIVE_UINT8, rows, level);
  }
  if (keeps_majority(layout_, raters_))
    majority_rows_ = std::make_unique<RowWriter>(file_, store::kMajority, H5T_NATIVE_UINT8, slice, level);
}

h5::Handle StoreWriter::write_case_table(const std::vector<int>& fold_of) {
  h5::Handle cases = h5::create_group(file_, store::kCases);
  const hsize_t n = ids_.size();
  h5::write_strings(file_, store::kCaseId, ids_);
  h5::write_strings(file_, store::kImageFile, image_files_);
  h5::write_strings(file_, store::kLabelFile, label_files_);
  h5::write_array(file_, store::kShape, H5T_NATIVE_INT32, {n, 3}, shapes_.data());
  h5::write_array(file_, store::kSpacing, H5T_NATIVE_DOUBLE, {n, 3}, spacings_.data());
  h5::write_array(file_, store::kAffine, H5T_NATIVE_DOUBLE, {n, 4, 4}, affines_.data());
  h5::write_array(file_, store::kSlicesKept, H5T_NATIVE_INT32, {n}, slices_kept_.data());
  const std::vector<int32_t> folds(fold_of.begin(), fold_of.end());
  h5::write_array(file_, store::kFold, H5T_NATIVE_INT32, {n}, folds.data());
  if (raters_ > 0) {
    const std::vector<int32_t> raters(n, static_cast<int32_t>(raters_));
    h5::write_array(file_, store::kCaseRaters, H5T_NATIVE_INT32, {n}, raters.data());
    h5::write_array(file_, store::kRaterAgreement, H5T_NATIVE_DOUBLE, {n, static_cast<hsize_t>(raters_)},
                    agreement_.data());
    const std::vector<AgreementRegion> regions = agreement_regions(layout_);
    std::vector<double> pairwise;
    for (const auto& row : pairwise_) {
      KDSEG_CHECK(row.size() == regions.size(), options_.output, ": a case's rater agreement has ", row.size(),
                  " regions, expected ", regions.size());
      pairwise.insert(pairwise.end(), row.begin(), row.end());
    }
    h5::write_array(file_, store::kRaterPairwiseDice, H5T_NATIVE_DOUBLE, {n, regions.size()}, pairwise.data());
    std::string names;
    for (const auto& region : regions) names += (names.empty() ? "" : ",") + region.name;
    h5::write_string_attribute(file_, store::kRaterRegionsAttribute, names);
  }
  return cases;
}

}  // namespace kdseg::data::detail
