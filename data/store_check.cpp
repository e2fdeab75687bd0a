#include "data/store_check.h"

#include <chrono>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/hash.h"
#include "core/progress.h"
#include "data/hdf5_util.h"
#include "data/prepared_store.h"

namespace kdseg::data {
namespace {

// One dataset of per-slice rows ([N, ...]) read a row at a time in its stored element type, as
// prepare digested it.
class RowDigests {
 public:
  RowDigests(const std::string& path, hid_t file, const char* name)
      : path_(path), name_(name), set_(h5::open_dataset(file, name)), type_(h5::native_type(set_)) {
    const std::vector<hsize_t> dims = h5::dataset_dims(file, name);
    size_t row_bytes = H5Tget_size(type_);
    for (size_t d = 1; d < dims.size(); ++d) row_bytes *= dims[d];
    row_.resize(row_bytes);
  }

  uint64_t digest(int64_t row) {
    try {
      h5::read_row(set_, row, type_, row_.data());
    } catch (const Error& e) {
      KDSEG_THROW(path_, ": /", name_, " row ", row,
                  " cannot be read (a damaged chunk, whose compressed bytes fail their check, or a file cut short): ",
                  e.message());
    }
    return word_digest(row_.data(), row_.size());
  }

 private:
  std::string path_;
  const char* name_;
  h5::Handle set_;
  h5::Handle type_;
  std::vector<unsigned char> row_;
};

}  // namespace

std::string case_table_hash(hid_t file) {
  uint64_t hash = kFnvOffset;
  for (const char* name :
       {store::kCaseId, store::kImageFile, store::kLabelFile, store::kShape, store::kSpacing, store::kAffine,
        store::kSlicesKept, store::kFold, store::kCaseRaters, store::kRaterAgreement, store::kRaterPairwiseDice}) {
    if (!h5::exists(file, name)) continue;
    hash = fnv1a(hash, name, std::strlen(name));
    const h5::Handle set = h5::open_dataset(file, name);
    const h5::Handle stored(KDSEG_CHECK_HDF5(H5Dget_type(set)));
    if (H5Tget_class(stored) == H5T_STRING) {
      for (const std::string& value : h5::read_strings(file, name)) {
        const uint64_t length = value.size();
        hash = fnv1a(hash, &length, sizeof length);
        hash = fnv1a(hash, value.data(), value.size());
      }
      continue;
    }
    const h5::Handle type = h5::native_type(set);
    size_t bytes = H5Tget_size(type);
    for (const hsize_t d : h5::dataset_dims(file, name)) bytes *= d;
    std::vector<unsigned char> values(bytes);
    if (bytes > 0) h5::read_array(file, name, type, values.data());
    hash = fnv1a(hash, values.data(), values.size());
  }
  return hex64(hash);
}

StoreCheck check_store_content(const std::string& path, bool progress) {
  const auto start = std::chrono::steady_clock::now();
  const PreparedStore store(path);
  const h5::Handle file = PreparedStore::open_file(path);
  StoreCheck check;
  check.recorded = store.attribute(store::kContentHashAttribute);
  check.created = store.attribute(store::kCreatedAttribute);
  if (h5::has_attribute(file, store::kTableHashAttribute)) {
    check.table_recorded = h5::read_string_attribute(file, store::kTableHashAttribute);
    check.table_computed = case_table_hash(file);
  }
  check.slices = store.slices();
  check.cases = static_cast<int>(store.case_ids().size());

  // prepare's order: per case, its image rows, label rows, raters' rows, majority rows, then its
  // id and slice indices (data/store_writer.cpp).
  std::vector<RowDigests> sets;
  for (const char* name : {store::kImage, store::kLabel, store::kRaters, store::kMajority}) {
    if (h5::exists(file, name)) sets.emplace_back(path, file, name);
  }
  const std::vector<int32_t>& slice_case = store.slice_case();
  const std::vector<int32_t>& slice_index = store.slice_index();
  Progress bar(path + ": verify", store.slices(), progress);
  uint64_t hash = kFnvOffset;
  int64_t row = 0;
  for (int c = 0; c < check.cases; ++c) {
    const int64_t first = row;
    while (row < store.slices() && slice_case[static_cast<size_t>(row)] == c) ++row;
    for (RowDigests& set : sets) {
      for (int64_t r = first; r < row; ++r) {
        const uint64_t digest = set.digest(r);
        hash = fnv1a(hash, &digest, sizeof digest);
      }
    }
    const std::string& id = store.case_ids()[static_cast<size_t>(c)];
    hash = fnv1a(hash, id.data(), id.size());
    hash = fnv1a(hash, slice_index.data() + first, static_cast<size_t>(row - first) * sizeof(int32_t));
    bar.advance(row - first);
  }
  KDSEG_CHECK(row == store.slices(), path, ": /", store::kSliceCase,
              " does not list the cases' rows in case order (row ", row, " belongs to case ",
              row < store.slices() ? slice_case[static_cast<size_t>(row)] : -1, ")");
  bar.finish();
  check.computed = hex64(hash);
  check.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return check;
}

}  // namespace kdseg::data
