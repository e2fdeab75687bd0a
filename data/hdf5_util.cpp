#include "data/hdf5_util.h"

#include "core/error.h"

namespace kdseg::data::h5 {
namespace {

// HDF5 closes every file still open when the process exits. A file whose close failed (its
// last flush hit a full disk) stays in HDF5's tables, and closing it again at exit crashes
// HDF5 1.10; kdseg closes its files itself, so the library's exit handler is not needed. This
// runs while the program loads, before any HDF5 call.
const bool kNoExitHandler = H5dont_atexit() >= 0;

}  // namespace

void Handle::reset() { close(); }

bool Handle::close() {
  if (id_ < 0) return true;
  const Lock lock(library_mutex());
  herr_t closed = 0;
  switch (H5Iget_type(id_)) {
    case H5I_FILE: closed = H5Fclose(id_); break;
    case H5I_GROUP: closed = H5Gclose(id_); break;
    case H5I_DATASET: closed = H5Dclose(id_); break;
    case H5I_DATASPACE: closed = H5Sclose(id_); break;
    case H5I_DATATYPE: closed = H5Tclose(id_); break;
    case H5I_ATTR: closed = H5Aclose(id_); break;
    case H5I_GENPROP_LST: closed = H5Pclose(id_); break;
    default: break;
  }
  id_ = -1;
  return closed >= 0;
}

std::recursive_mutex& library_mutex() {
  static std::recursive_mutex mutex;
  return mutex;
}

void quiet_errors() {
  const Lock lock(library_mutex());
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
}

namespace {
Handle string_type() {
  Handle type(KDSEG_CHECK_HDF5(H5Tcopy(H5T_C_S1)));
  KDSEG_CHECK_HDF5(H5Tset_size(type, H5T_VARIABLE));
  KDSEG_CHECK_HDF5(H5Tset_cset(type, H5T_CSET_UTF8));
  return type;
}
}  // namespace

void write_string_attribute(hid_t object, const std::string& name, const std::string& value) {
  const Handle type = string_type();
  const Handle space(KDSEG_CHECK_HDF5(H5Screate(H5S_SCALAR)));
  const Handle attr(KDSEG_CHECK_HDF5(H5Acreate2(object, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT)));
  const char* text = value.c_str();
  KDSEG_CHECK_HDF5(H5Awrite(attr, type, &text));
}

std::string read_string_attribute(hid_t object, const std::string& name) {
  KDSEG_CHECK(has_attribute(object, name), "attribute '", name, "' is missing");
  const Handle attr(KDSEG_CHECK_HDF5(H5Aopen(object, name.c_str(), H5P_DEFAULT)));
  const Handle type = string_type();
  char* text = nullptr;
  KDSEG_CHECK_HDF5(H5Aread(attr, type, &text));
  std::string value = text ? text : "";
  const Handle space(KDSEG_CHECK_HDF5(H5Aget_space(attr)));
  H5Dvlen_reclaim(type, space, H5P_DEFAULT, &text);
  return value;
}

Handle untimed_creation(hid_t property_class) {
  Handle properties(KDSEG_CHECK_HDF5(H5Pcreate(property_class)));
  KDSEG_CHECK_HDF5(H5Pset_obj_track_times(properties, false));
  return properties;
}

Handle create_file(const std::string& path) {
  return Handle(KDSEG_CHECK_HDF5(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT)));
}

Handle try_open_file(const std::string& path, bool writable) {
  const Lock lock(library_mutex());
  return Handle(H5Fopen(path.c_str(), writable ? H5F_ACC_RDWR : H5F_ACC_RDONLY, H5P_DEFAULT));
}

Handle create_group(hid_t parent, const std::string& name) {
  return Handle(
      KDSEG_CHECK_HDF5(H5Gcreate2(parent, name.c_str(), H5P_DEFAULT, untimed_creation(H5P_GROUP_CREATE), H5P_DEFAULT)));
}

Handle open_dataset(hid_t parent, const std::string& name) {
  return Handle(KDSEG_CHECK_HDF5(H5Dopen2(parent, name.c_str(), H5P_DEFAULT)));
}

bool exists(hid_t parent, const std::string& path) { return H5Lexists(parent, path.c_str(), H5P_DEFAULT) > 0; }

bool has_attribute(hid_t object, const std::string& name) { return H5Aexists(object, name.c_str()) > 0; }

Handle create_dataset(hid_t parent, const std::string& name, hid_t type, const std::vector<hsize_t>& dims,
                      hid_t properties, const std::vector<hsize_t>& max_dims) {
  const Handle space(KDSEG_CHECK_HDF5(
      H5Screate_simple(static_cast<int>(dims.size()), dims.data(), max_dims.empty() ? nullptr : max_dims.data())));
  return Handle(KDSEG_CHECK_HDF5(H5Dcreate2(parent, name.c_str(), type, space, H5P_DEFAULT, properties, H5P_DEFAULT)));
}

void set_shuffle_deflate_chunks(hid_t properties, const std::vector<hsize_t>& chunk, int level) {
  KDSEG_CHECK_HDF5(H5Pset_chunk(properties, static_cast<int>(chunk.size()), chunk.data()));
  if (level > 0) {
    KDSEG_CHECK_HDF5(H5Pset_shuffle(properties));
    KDSEG_CHECK_HDF5(H5Pset_deflate(properties, static_cast<unsigned>(level)));
  }
}

void write_slab(hid_t dataset, hid_t memory_type, const std::vector<hsize_t>& start, const std::vector<hsize_t>& count,
                const void* data) {
  const Handle file_space(KDSEG_CHECK_HDF5(H5Dget_space(dataset)));
  KDSEG_CHECK_HDF5(H5Sselect_hyperslab(file_space, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr));
  const Handle memory(KDSEG_CHECK_HDF5(H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr)));
  KDSEG_CHECK_HDF5(H5Dwrite(dataset, memory_type, memory, file_space, H5P_DEFAULT, data));
}

std::vector<uint8_t> read_raw_chunk(hid_t dataset, const std::vector<hsize_t>& offset) {
  hsize_t bytes = 0;
  KDSEG_CHECK_HDF5(H5Dget_chunk_storage_size(dataset, offset.data(), &bytes));
  std::vector<uint8_t> chunk(static_cast<size_t>(bytes));
  uint32_t filters = 0;
  KDSEG_CHECK_HDF5(H5Dread_chunk(dataset, H5P_DEFAULT, offset.data(), &filters, chunk.data()));
  KDSEG_CHECK(filters == 0, "a chunk stored without its dataset's filters (filter mask ", filters, ")");
  return chunk;
}

void write_strings(hid_t parent, const std::string& name, const std::vector<std::string>& values) {
  const Handle type = string_type();
  const hsize_t n = values.size();
  const Handle space(KDSEG_CHECK_HDF5(H5Screate_simple(1, &n, nullptr)));
  const Handle set(KDSEG_CHECK_HDF5(
      H5Dcreate2(parent, name.c_str(), type, space, H5P_DEFAULT, untimed_creation(H5P_DATASET_CREATE), H5P_DEFAULT)));
  std::vector<const char*> pointers;
  for (const auto& v : values) pointers.push_back(v.c_str());
  if (n > 0) KDSEG_CHECK_HDF5(H5Dwrite(set, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, pointers.data()));
}

std::vector<std::string> read_strings(hid_t parent, const std::string& name) {
  const Handle set(KDSEG_CHECK_HDF5(H5Dopen2(parent, name.c_str(), H5P_DEFAULT)));
  const Handle space(KDSEG_CHECK_HDF5(H5Dget_space(set)));
  const hssize_t n = H5Sget_simple_extent_npoints(space);
  std::vector<char*> pointers(static_cast<size_t>(n), nullptr);
  const Handle type = string_type();
  if (n > 0) KDSEG_CHECK_HDF5(H5Dread(set, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, pointers.data()));
  std::vector<std::string> out;
  for (char* p : pointers) out.emplace_back(p ? p : "");
  if (n > 0) H5Dvlen_reclaim(type, space, H5P_DEFAULT, pointers.data());
  return out;
}

void write_array(hid_t parent, const std::string& name, hid_t type, const std::vector<hsize_t>& dims,
                 const void* data) {
  const Handle space(KDSEG_CHECK_HDF5(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr)));
  const Handle set(KDSEG_CHECK_HDF5(
      H5Dcreate2(parent, name.c_str(), type, space, H5P_DEFAULT, untimed_creation(H5P_DATASET_CREATE), H5P_DEFAULT)));
  KDSEG_CHECK_HDF5(H5Dwrite(set, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data));
}

std::vector<hsize_t> dataset_dims(hid_t parent, const std::string& name) {
  const Handle set(KDSEG_CHECK_HDF5(H5Dopen2(parent, name.c_str(), H5P_DEFAULT)));
  const Handle space(KDSEG_CHECK_HDF5(H5Dget_space(set)));
  const int rank = KDSEG_CHECK_HDF5(H5Sget_simple_extent_ndims(space));
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  KDSEG_CHECK_HDF5(H5Sget_simple_extent_dims(space, dims.data(), nullptr));
  return dims;
}

void read_array(hid_t parent, const std::string& name, hid_t type, void* data) {
  const Handle set(KDSEG_CHECK_HDF5(H5Dopen2(parent, name.c_str(), H5P_DEFAULT)));
  KDSEG_CHECK_HDF5(H5Dread(set, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data));
}

void read_row(hid_t dataset, int64_t row, hid_t memory_type, void* data) {
  const Handle space(KDSEG_CHECK_HDF5(H5Dget_space(dataset)));
  const int rank = KDSEG_CHECK_HDF5(H5Sget_simple_extent_ndims(space));
  std::vector<hsize_t> start(static_cast<size_t>(rank), 0), count(static_cast<size_t>(rank));
  KDSEG_CHECK_HDF5(H5Sget_simple_extent_dims(space, count.data(), nullptr));
  start[0] = static_cast<hsize_t>(row);
  count[0] = 1;
  KDSEG_CHECK_HDF5(H5Sselect_hyperslab(space, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr));
  const Handle memory(KDSEG_CHECK_HDF5(H5Screate_simple(rank, count.data(), nullptr)));
  KDSEG_CHECK_HDF5(H5Dread(dataset, memory_type, memory, space, H5P_DEFAULT, data));
}

Handle native_type(hid_t dataset) {
  const Handle stored(KDSEG_CHECK_HDF5(H5Dget_type(dataset)));
  return Handle(KDSEG_CHECK_HDF5(H5Tget_native_type(stored, H5T_DIR_ASCEND)));
}

}  // namespace kdseg::data::h5
