// Row-at-a-time reading of a chunked dataset [N, ...] stored one row per chunk (the prepared
// store's slices, the soft-label cache's shards). HDF5 is not thread-safe, so only the read of
// the compressed chunk (H5Dread_chunk) runs under the process-wide HDF5 lock; decompression and
// unshuffling run in the calling thread without it. Other layouts and filters fall back to
// H5Dread under the lock.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

#include "data/hdf5_util.h"

namespace kdseg::data {

class ChunkedRows {
 public:
  // Opens dataset `name` of an open file; `path` names the file in errors.
  ChunkedRows(hid_t file, const std::string& path, const std::string& name);

  int64_t rows() const { return rows_; }
  // The shape of one row (the dataset's dims without the first).
  const std::vector<int64_t>& row_shape() const { return row_shape_; }
  size_t element_size() const { return element_; }
  bool is_float() const { return is_float_; }

  // Row `row`'s values as stored, in little-endian byte order: (product of row_shape()) * element_size() bytes.
  std::vector<unsigned char> read(int64_t row) const;

 private:
  std::string path_, name_;
  h5::Handle set_, memory_type_;
  int64_t rows_ = 0, row_values_ = 1;
  std::vector<int64_t> row_shape_;
  size_t element_ = 0;
  bool is_float_ = false;
  std::vector<H5Z_filter_t> filters_;  // pipeline order
  bool direct_ = true;                 // one row per chunk, filters we can decode ourselves
};

}  // namespace kdseg::data
