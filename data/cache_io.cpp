#include "data/cache_io.h"

#include <zlib.h>

#include <filesystem>

namespace kdseg::data::detail {
namespace fs = std::filesystem;

namespace {

constexpr const char* kFormatTag = "kdseg soft-label cache 1";

h5::Handle half_type() {
  h5::Handle type(KDSEG_CHECK_HDF5(H5Tcopy(H5T_IEEE_F32LE)));
  KDSEG_CHECK_HDF5(H5Tset_fields(type, 15, 10, 5, 0, 10));
  KDSEG_CHECK_HDF5(H5Tset_size(type, 2));
  KDSEG_CHECK_HDF5(H5Tset_ebias(type, 15));
  return type;
}

}  // namespace

h5::Handle value_type(CacheFormat format) {
  return format == CacheFormat::kLogitsF16 ? half_type() : h5::Handle(KDSEG_CHECK_HDF5(H5Tcopy(H5T_STD_U8LE)));
}

size_t value_size(CacheFormat format) { return format == CacheFormat::kLogitsF16 ? 2 : 1; }

uint32_t crc_of(const void* data, size_t bytes) {
  return static_cast<uint32_t>(crc32(0L, static_cast<const Bytef*>(data), static_cast<uInt>(bytes)));
}

void write_provenance(hid_t object, const CacheProvenance& p) {
  h5::write_string_attribute(object, "format_tag", kFormatTag);
  for (const auto& field : CacheProvenance::fields()) h5::write_string_attribute(object, field, p.get(field));
}

CacheProvenance read_provenance(hid_t object, const std::string& path) {
  KDSEG_CHECK(h5::has_attribute(object, "format_tag") && h5::read_string_attribute(object, "format_tag") == kFormatTag,
              path, ": not a kdseg soft-label cache file");
  CacheProvenance p;
  for (const auto& field : CacheProvenance::fields()) {
    // Caches written before calibration existed hold the teacher as it was.
    if (field == "calibration" && !h5::has_attribute(object, "calibration")) {
      p.set(field, "none");
      continue;
    }
    p.set(field, h5::read_string_attribute(object, field));
  }
  return p;
}

void write_int_attribute(hid_t object, const char* name, int64_t value) {
  const h5::Handle space(KDSEG_CHECK_HDF5(H5Screate(H5S_SCALAR)));
  const h5::Handle attr(KDSEG_CHECK_HDF5(H5Acreate2(object, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT)));
  KDSEG_CHECK_HDF5(H5Awrite(attr, H5T_NATIVE_INT64, &value));
}

int64_t read_int_attribute(hid_t object, const char* name, const std::string& path) {
  KDSEG_CHECK(h5::has_attribute(object, name), path, ": attribute '", name, "' is missing");
  const h5::Handle attr(KDSEG_CHECK_HDF5(H5Aopen(object, name, H5P_DEFAULT)));
  int64_t value = 0;
  KDSEG_CHECK_HDF5(H5Aread(attr, H5T_NATIVE_INT64, &value));
  return value;
}

ShardHeader read_shard_header(const std::string& dir, int rank, int world, h5::Handle* keep_open) {
  const h5::Lock lock(h5::library_mutex());
  ShardHeader h;
  h.path = CacheFolder(dir).shard_path(rank, world);
  KDSEG_CHECK(fs::exists(h.path), h.path, ": missing (the pass of ", world,
              " ranks did not finish; run it again to resume)");
  h5::Handle file = h5::try_open_file(h.path);
  KDSEG_CHECK(file.get() >= 0, h.path, ": not a readable HDF5 file");
  h.provenance = read_provenance(file, h.path);
  h.first_row = read_int_attribute(file, "first_row", h.path);
  h.rank = read_int_attribute(file, "shard", h.path);
  h.world = read_int_attribute(file, "shards", h.path);
  KDSEG_CHECK(h.rank == rank && h.world == world, h.path, ": records shard ", h.rank, " of ", h.world);
  h.store_rows = read_vector<int64_t>(file, "slice", H5T_NATIVE_INT64, h.path);
  h.dims = h5::dataset_dims(file, "soft_labels");
  KDSEG_CHECK(h.dims.size() == 4 && h.dims[0] == h.store_rows.size(), h.path,
              ": /soft_labels must be [n,C,H,W] with n = |/slice|");
  if (keep_open) *keep_open = std::move(file);
  return h;
}

}  // namespace kdseg::data::detail
