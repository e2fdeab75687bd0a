#include "data/chunked_rows.h"

#include <zlib.h>

#include <mutex>

#include "core/error.h"

namespace kdseg::data {

ChunkedRows::ChunkedRows(hid_t file, const std::string& path, const std::string& name) : path_(path), name_(name) {
  const h5::Lock lock(h5::library_mutex());
  set_ = h5::Handle(H5Dopen2(file, name.c_str(), H5P_DEFAULT));
  KDSEG_CHECK(set_.get() >= 0, path_, ": no dataset /", name_);
  const h5::Handle space(KDSEG_CHECK_HDF5(H5Dget_space(set_)));
  const int rank = H5Sget_simple_extent_ndims(space);
  KDSEG_CHECK(rank >= 2 && rank <= 8, path_, ": /", name_, " must have 2 to 8 dimensions, has ", rank);
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  H5Sget_simple_extent_dims(space, dims.data(), nullptr);
  rows_ = static_cast<int64_t>(dims[0]);
  for (int d = 1; d < rank; ++d) {
    row_shape_.push_back(static_cast<int64_t>(dims[static_cast<size_t>(d)]));
    row_values_ *= row_shape_.back();
  }
  const h5::Handle type(KDSEG_CHECK_HDF5(H5Dget_type(set_)));
  const H5T_class_t type_class = H5Tget_class(type);
  KDSEG_CHECK(type_class == H5T_FLOAT || type_class == H5T_INTEGER, path_, ": /", name_, " must hold numbers");
  element_ = H5Tget_size(type);
  is_float_ = type_class == H5T_FLOAT;
  // Values come back as stored but little-endian (HDF5 converts big-endian files in the fallback).
  memory_type_ = h5::Handle(KDSEG_CHECK_HDF5(H5Tcopy(type)));
  KDSEG_CHECK_HDF5(H5Tset_order(memory_type_, H5T_ORDER_LE));

  const h5::Handle plist(KDSEG_CHECK_HDF5(H5Dget_create_plist(set_)));
  std::vector<hsize_t> chunk(static_cast<size_t>(rank));
  direct_ = H5Tget_order(type) == H5T_ORDER_LE && H5Pget_layout(plist) == H5D_CHUNKED &&
            H5Pget_chunk(plist, rank, chunk.data()) == rank && chunk[0] == 1;
  for (int d = 1; direct_ && d < rank; ++d) direct_ = chunk[static_cast<size_t>(d)] == dims[static_cast<size_t>(d)];
  const int filters = H5Pget_nfilters(plist);
  for (int f = 0; f < filters; ++f) {
    unsigned flags = 0;
    size_t n = 0;
    const H5Z_filter_t id = H5Pget_filter2(plist, static_cast<unsigned>(f), &flags, &n, nullptr, 0, nullptr, nullptr);
    filters_.push_back(id);
    if (id != H5Z_FILTER_SHUFFLE && id != H5Z_FILTER_DEFLATE) direct_ = false;
  }
}

std::vector<unsigned char> ChunkedRows::read(int64_t row) const {
  KDSEG_CHECK(row >= 0 && row < rows_, path_, ": /", name_, ": row ", row, " outside [0, ", rows_, ")");
  const size_t bytes = static_cast<size_t>(row_values_) * element_;
  std::vector<unsigned char> raw;
  uint32_t mask = 0;
  {
    const h5::Lock lock(h5::library_mutex());
    if (!direct_) {
      std::vector<unsigned char> out(bytes);
      const h5::Handle space(KDSEG_CHECK_HDF5(H5Dget_space(set_)));
      std::vector<hsize_t> start(row_shape_.size() + 1, 0), count(row_shape_.size() + 1, 1);
      start[0] = static_cast<hsize_t>(row);
      for (size_t d = 0; d < row_shape_.size(); ++d) count[d + 1] = static_cast<hsize_t>(row_shape_[d]);
      KDSEG_CHECK_HDF5(H5Sselect_hyperslab(space, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr));
      const int rank = static_cast<int>(count.size());
      const h5::Handle memory(KDSEG_CHECK_HDF5(H5Screate_simple(rank, count.data(), nullptr)));
      KDSEG_CHECK(H5Dread(set_, memory_type_, memory, space, H5P_DEFAULT, out.data()) >= 0, path_, ": /", name_,
                  ": cannot read row ", row);
      return out;
    }
    std::vector<hsize_t> offset(row_shape_.size() + 1, 0);
    offset[0] = static_cast<hsize_t>(row);
    hsize_t stored = 0;
    KDSEG_CHECK(H5Dget_chunk_storage_size(set_, offset.data(), &stored) >= 0 && stored > 0, path_, ": /", name_,
                ": row ", row, " was never written");
    raw.resize(static_cast<size_t>(stored));
    KDSEG_CHECK(H5Dread_chunk(set_, H5P_DEFAULT, offset.data(), &mask, raw.data()) >= 0, path_, ": /", name_,
                ": cannot read the chunk of row ", row);
  }
  // Undo the filters in reverse pipeline order; a set mask bit means the filter was skipped.
  for (size_t f = filters_.size(); f-- > 0;) {
    if (mask & (1u << f)) continue;
    if (filters_[f] == H5Z_FILTER_DEFLATE) {
      std::vector<unsigned char> out(bytes);
      uLongf size = static_cast<uLongf>(bytes);
      KDSEG_CHECK(uncompress(out.data(), &size, raw.data(), static_cast<uLong>(raw.size())) == Z_OK && size == bytes,
                  path_, ": /", name_, ": row ", row, ": corrupt compressed chunk");
      raw.swap(out);
    } else if (filters_[f] == H5Z_FILTER_SHUFFLE && element_ > 1) {
      std::vector<unsigned char> out(raw.size());
      const size_t n = raw.size() / element_;
      for (size_t b = 0; b < element_; ++b) {
        for (size_t i = 0; i < n; ++i) out[i * element_ + b] = raw[b * n + i];
      }
      raw.swap(out);
    }
  }
  KDSEG_CHECK(raw.size() == bytes, path_, ": /", name_, ": row ", row, ": chunk of ", raw.size(), " bytes, expected ",
              bytes);
  return raw;
}

}  // namespace kdseg::data
