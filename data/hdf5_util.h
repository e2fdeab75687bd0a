// Small RAII and I/O helpers over the HDF5 C API, shared by the prepared store and the
// soft-label cache. Every call is checked (KDSEG_CHECK_HDF5) and errors name the file.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "data/check_hdf5.h"

namespace kdseg::data::h5 {

// Owns an HDF5 identifier and closes it with the matching H5*close.
class Handle {
 public:
  Handle() = default;
  explicit Handle(hid_t id) : id_(id) {}
  ~Handle() { reset(); }
  Handle(Handle&& other) noexcept : id_(other.id_) { other.id_ = -1; }
  Handle& operator=(Handle&& other) noexcept {
    if (this != &other) {
      reset();
      id_ = other.id_;
      other.id_ = -1;
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  hid_t get() const { return id_; }
  operator hid_t() const { return id_; }
  void reset();
  // Closes the identifier now; false when HDF5 reports the close failed (a file whose last
  // flush hit a full disk). Closed either way.
  bool close();

 private:
  hid_t id_ = -1;
};

// The lock around every HDF5 call made while other threads may make one (this HDF5 is not built
// thread-safe): the batch loader's workers read the store and the soft-label cache while the main
// thread opens files or writes the cache's shards. Recursive, so that a locked section may call
// helpers that lock; Handle closes its identifier under it.
std::recursive_mutex& library_mutex();
using Lock = std::lock_guard<std::recursive_mutex>;

// Silences HDF5's own error printing for the process (errors are reported as kdseg::Error).
void quiet_errors();

// Creation properties of `property_class` (H5P_DATASET_CREATE, H5P_GROUP_CREATE) that record no
// modification times: files written from the same data then hold the same bytes. Every dataset
// the helpers below create uses them.
Handle untimed_creation(hid_t property_class);

// Files, groups and datasets. A file is created (truncated) with default properties; groups and
// datasets with untimed_creation's unless `properties` are given. `name` may be a path below
// `parent` whose groups exist ("slices/image").
Handle create_file(const std::string& path);
// The file at `path`, read-only unless `writable`; an invalid Handle (get() < 0) when HDF5
// cannot open it, for the caller to say what that means.
Handle try_open_file(const std::string& path, bool writable = false);
Handle create_group(hid_t parent, const std::string& name);
Handle open_dataset(hid_t parent, const std::string& name);
// Whether a link (a group or dataset) `path` exists below `parent`; an attribute `name` of `object`.
bool exists(hid_t parent, const std::string& path);
bool has_attribute(hid_t object, const std::string& name);

// A dataset `name` of `type` and extent `dims` (up to `max_dims`, H5S_UNLIMITED for no limit;
// empty: `dims`), created with the creation properties `properties`.
Handle create_dataset(hid_t parent, const std::string& name, hid_t type, const std::vector<hsize_t>& dims,
                      hid_t properties, const std::vector<hsize_t>& max_dims = {});

// Adds chunks of `chunk` to the dataset creation properties `properties`, through HDF5's
// shuffle and deflate filters at `level` (neither at 0): the layout of the prepared store's
// slices and the soft-label cache's shards, whose chunks data/deflate.h and data/chunked_rows.h
// encode and decode outside HDF5.
void set_shuffle_deflate_chunks(hid_t properties, const std::vector<hsize_t>& chunk, int level);

// The block at `start` of size `count` (one entry per dimension) of `dataset`, from `data`
// (values of `memory_type`, `count` in C order).
void write_slab(hid_t dataset, hid_t memory_type, const std::vector<hsize_t>& start, const std::vector<hsize_t>& count,
                const void* data);

// Variable-length UTF-8 strings.
void write_string_attribute(hid_t object, const std::string& name, const std::string& value);
std::string read_string_attribute(hid_t object, const std::string& name);
void write_strings(hid_t parent, const std::string& name, const std::vector<std::string>& values);
std::vector<std::string> read_strings(hid_t parent, const std::string& name);

// A whole dataset of fixed-size elements: `dims` and a buffer of `type` (H5T_NATIVE_*).
void write_array(hid_t parent, const std::string& name, hid_t type, const std::vector<hsize_t>& dims, const void* data);
std::vector<hsize_t> dataset_dims(hid_t parent, const std::string& name);
void read_array(hid_t parent, const std::string& name, hid_t type, void* data);

// The stored (filtered) bytes of the chunk at `offset` of a chunked dataset, as H5Dread_chunk
// gives them; the chunk must exist.
std::vector<uint8_t> read_raw_chunk(hid_t dataset, const std::vector<hsize_t>& offset);

// Row `row` of an [N, ...] dataset into `data` (the row's values, e.g. H*W of an [N,H,W] dataset,
// as `memory_type`), converted by HDF5.
void read_row(hid_t dataset, int64_t row, hid_t memory_type, void* data);
// The memory type of `dataset`'s stored element type (a stored int16 as H5T_NATIVE_SHORT).
Handle native_type(hid_t dataset);

}  // namespace kdseg::data::h5
