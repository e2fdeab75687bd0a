// Internal to the soft-label cache (data/cache_*.cpp): the HDF5 pieces its writer, reader and
// checks share. The files' schema is in data/soft_label_cache.h.
//
//   value_type/value_size  the stored element: IEEE binary16 little-endian (logits-f16; HDF5 1.10
//                          predefines no half type, h5py reads this one as float16) or uint8
//   crc_of                 CRC-32 (zlib) of a slice's stored bytes, as /checksum records it
//   provenance             "format_tag" plus every CacheProvenance field as a string attribute
//   read_shard_header      what a finished shard says about itself, checked against its name
//
// Callers hold h5::library_mutex() around these calls when other threads may use HDF5, except
// read_shard_header, which takes it.
#pragma once

#include <hdf5.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/hdf5_util.h"
#include "data/soft_label_cache.h"

namespace kdseg::data::detail {

h5::Handle value_type(CacheFormat format);
size_t value_size(CacheFormat format);
uint32_t crc_of(const void* data, size_t bytes);

void write_provenance(hid_t object, const CacheProvenance& provenance);
// Errors name `path` when the object is not a kdseg soft-label cache file.
CacheProvenance read_provenance(hid_t object, const std::string& path);

void write_int_attribute(hid_t object, const char* name, int64_t value);
int64_t read_int_attribute(hid_t object, const char* name, const std::string& path);

template <typename T>
std::vector<T> read_vector(hid_t file, const char* name, hid_t type, const std::string& path) {
  const auto dims = h5::dataset_dims(file, name);
  KDSEG_CHECK(dims.size() == 1, path, ": /", name, " must be one-dimensional");
  std::vector<T> out(static_cast<size_t>(dims[0]));
  if (!out.empty()) h5::read_array(file, name, type, out.data());
  return out;
}

struct ShardHeader {
  std::string path;
  CacheProvenance provenance;
  int64_t first_row = 0, rank = 0, world = 0;
  std::vector<int64_t> store_rows;
  std::vector<hsize_t> dims;  // of /soft_labels: n, C, H, W
};

// Opens rank `rank`'s finished shard of a pass of `world` ranks in `dir` and reads what the
// master needs from it; with `keep_open`, hands over the open file.
ShardHeader read_shard_header(const std::string& dir, int rank, int world, h5::Handle* keep_open = nullptr);

}  // namespace kdseg::data::detail
