#include "data/soft_label_cache.h"

#include <hdf5.h>
#include <torch/torch.h>
#include <zlib.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <mutex>
#include <sstream>

#include "core/error.h"
#include "core/file_util.h"
#include "core/hash.h"
#include "core/log.h"
#include "data/chunked_rows.h"
#include "data/hdf5_util.h"

namespace kdseg::data {
namespace fs = std::filesystem;
using torch::Tensor;

namespace {

constexpr const char* kMasterName = "soft_labels.h5";
constexpr const char* kFormatTag = "kdseg soft-label cache 1";

// IEEE 754 binary16, little-endian (HDF5 1.10 predefines no half type; h5py reads this as float16).
h5::Handle half_type() {
  h5::Handle type(KDSEG_CHECK_HDF5(H5Tcopy(H5T_IEEE_F32LE)));
  KDSEG_CHECK_HDF5(H5Tset_fields(type, 15, 10, 5, 0, 10));
  KDSEG_CHECK_HDF5(H5Tset_size(type, 2));
  KDSEG_CHECK_HDF5(H5Tset_ebias(type, 15));
  return type;
}

h5::Handle value_type(CacheFormat format) {
  return format == CacheFormat::kLogitsF16 ? half_type() : h5::Handle(KDSEG_CHECK_HDF5(H5Tcopy(H5T_STD_U8LE)));
}

size_t value_size(CacheFormat format) { return format == CacheFormat::kLogitsF16 ? 2 : 1; }

uint32_t crc_of(const void* data, size_t bytes) {
  return static_cast<uint32_t>(crc32(0L, static_cast<const Bytef*>(data), static_cast<uInt>(bytes)));
}

void write_provenance(hid_t object, const CacheProvenance& p) {
  h5::write_string_attribute(object, "format_tag", kFormatTag);
  for (const auto& field : CacheProvenance::identity_fields()) h5::write_string_attribute(object, field, p.get(field));
  h5::write_string_attribute(object, "teacher_file", p.teacher_file);
  h5::write_string_attribute(object, "store_file", p.store_file);
  h5::write_string_attribute(object, "tool_version", p.tool_version);
  h5::write_string_attribute(object, "created", p.created);
}

CacheProvenance read_provenance(hid_t object, const std::string& path) {
  KDSEG_CHECK(H5Aexists(object, "format_tag") > 0 && h5::read_string_attribute(object, "format_tag") == kFormatTag, path,
              ": not a kdseg soft-label cache file");
  CacheProvenance p;
  for (const auto& field : CacheProvenance::identity_fields()) p.set(field, h5::read_string_attribute(object, field));
  for (const char* field : {"teacher_file", "store_file", "tool_version", "created"}) {
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
  KDSEG_CHECK(H5Aexists(object, name) > 0, path, ": attribute '", name, "' is missing");
  const h5::Handle attr(KDSEG_CHECK_HDF5(H5Aopen(object, name, H5P_DEFAULT)));
  int64_t value = 0;
  KDSEG_CHECK_HDF5(H5Aread(attr, H5T_NATIVE_INT64, &value));
  return value;
}

template <typename T>
std::vector<T> read_vector(hid_t file, const char* name, hid_t type, const std::string& path) {
  const auto dims = h5::dataset_dims(file, name);
  KDSEG_CHECK(dims.size() == 1, path, ": /", name, " must be one-dimensional");
  std::vector<T> out(static_cast<size_t>(dims[0]));
  if (!out.empty()) h5::read_array(file, name, type, out.data());
  return out;
}

// Writes `count` rows of a 1-d dataset starting at `first`.
void write_rows(hid_t file, const char* name, hid_t type, int64_t first, int64_t count, const void* data) {
  const h5::Handle set(KDSEG_CHECK_HDF5(H5Dopen2(file, name, H5P_DEFAULT)));
  const h5::Handle space(KDSEG_CHECK_HDF5(H5Dget_space(set)));
  const hsize_t start = static_cast<hsize_t>(first), n = static_cast<hsize_t>(count);
  KDSEG_CHECK_HDF5(H5Sselect_hyperslab(space, H5S_SELECT_SET, &start, nullptr, &n, nullptr));
  const h5::Handle memory(KDSEG_CHECK_HDF5(H5Screate_simple(1, &n, nullptr)));
  KDSEG_CHECK_HDF5(H5Dwrite(set, type, memory, space, H5P_DEFAULT, data));
}

Tensor decode(const std::vector<unsigned char>& bytes, CacheFormat format, const std::vector<int64_t>& shape) {
  return torch::from_blob(const_cast<unsigned char*>(bytes.data()), shape,
                          format == CacheFormat::kLogitsF16 ? torch::kHalf : torch::kByte)
      .clone();
}

}  // namespace

// --- formats and provenance ------------------------------------------------------------------------

CacheFormat parse_cache_format(const std::string& name) {
  if (name == "logits-f16") return CacheFormat::kLogitsF16;
  if (name == "probs-u8") return CacheFormat::kProbsU8;
  KDSEG_THROW("unknown cache format '", name, "': use logits-f16 or probs-u8");
}

const char* cache_format_name(CacheFormat format) {
  return format == CacheFormat::kLogitsF16 ? "logits-f16" : "probs-u8";
}

const std::vector<std::string>& CacheProvenance::identity_fields() {
  static const std::vector<std::string> fields = {"format", "temperature", "teacher_hash", "store_hash", "folds",
                                                  "classes"};
  return fields;
}

std::string CacheProvenance::get(const std::string& field) const {
  if (field == "format") return format;
  if (field == "temperature") return temperature;
  if (field == "teacher_file") return teacher_file;
  if (field == "teacher_hash") return teacher_hash;
  if (field == "store_file") return store_file;
  if (field == "store_hash") return store_hash;
  if (field == "folds") return folds;
  if (field == "classes") return classes;
  if (field == "tool_version") return tool_version;
  if (field == "created") return created;
  KDSEG_THROW("no provenance field '", field, "'");
}

void CacheProvenance::set(const std::string& field, const std::string& value) {
  std::string* slot = field == "format"         ? &format
                      : field == "temperature"  ? &temperature
                      : field == "teacher_file" ? &teacher_file
                      : field == "teacher_hash" ? &teacher_hash
                      : field == "store_file"   ? &store_file
                      : field == "store_hash"   ? &store_hash
                      : field == "folds"        ? &folds
                      : field == "classes"      ? &classes
                      : field == "tool_version" ? &tool_version
                      : field == "created"      ? &created
                                                : nullptr;
  KDSEG_CHECK(slot != nullptr, "no provenance field '", field, "'");
  *slot = value;
}

std::vector<std::string> provenance_differences(const CacheProvenance& cache, const std::string& store_path,
                                                const std::string& teacher_path) {
  std::vector<std::string> out;
  if (!store_path.empty()) {
    std::string hash;
    {
      const h5::Lock lock(h5::library_mutex());
      h5::quiet_errors();
      const h5::Handle file(H5Fopen(store_path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
      KDSEG_CHECK(file.get() >= 0, store_path, ": cannot open the prepared store");
      hash = h5::read_string_attribute(file, "content_hash");
    }
    if (hash != cache.store_hash) {
      out.push_back("prepared store: the cache was made from " + cache.store_file + " (content hash " + cache.store_hash +
                    "), " + store_path + " has content hash " + hash);
    }
  }
  if (!teacher_path.empty()) {
    const std::string hash = hash_file(teacher_path);
    if (hash != cache.teacher_hash) {
      out.push_back("teacher: the cache was made by " + cache.teacher_file + " (file hash " + cache.teacher_hash + "), " +
                    teacher_path + " has file hash " + hash);
    }
  }
  return out;
}

// --- quantisation ------------------------------------------------------------------------------------

Tensor quantise_probabilities(const Tensor& probs) {
  KDSEG_CHECK(probs.dim() >= 3, "quantise_probabilities: expected [..., C, H, W], got ", probs.dim(), " dims");
  const int64_t class_dim = probs.dim() - 3;
  const Tensor scaled = probs.to(torch::kFloat).clamp(0, 1) * 255.0f;
  const Tensor whole = scaled.floor();
  const Tensor remainder = scaled - whole;
  // Units still to hand out per voxel (0 .. C-1): to the largest remainders, lower class first on ties.
  const Tensor deficit = (255.0f - whole.sum(class_dim, /*keepdim=*/true)).round().clamp_min(0);
  const Tensor order = std::get<1>(torch::sort(remainder, /*stable=*/true, class_dim, /*descending=*/true));
  const Tensor rank = torch::argsort(order, class_dim);
  return (whole + (rank < deficit).to(torch::kFloat)).clamp(0, 255).to(torch::kByte);
}

Tensor dequantise_probabilities(const Tensor& quantised) {
  return quantised.to(torch::kFloat) * (1.0f / 255.0f);
}

std::string shard_file_name(int rank, int world) {
  char name[64];
  std::snprintf(name, sizeof name, "shard-%05d-of-%05d.h5", rank, world);
  return name;
}

// --- the shard writer --------------------------------------------------------------------------------

CacheShardWriter::CacheShardWriter(const std::string& dir, Geometry geometry, CacheProvenance provenance)
    : dir_(dir), g_(std::move(geometry)), provenance_(std::move(provenance)) {
  h5::quiet_errors();
  const h5::Lock lock(h5::library_mutex());
  final_path_ = (fs::path(dir_) / shard_file_name(g_.rank, g_.world)).string();
  partial_path_ = final_path_ + ".partial";
  done_.assign(g_.store_rows.size(), 0);
  if (fs::exists(final_path_) && open_existing(final_path_, /*final_file=*/true)) {
    finished_ = true;
    return;
  }
  if (fs::exists(partial_path_) && open_existing(partial_path_, /*final_file=*/false)) return;
  create();
}

CacheShardWriter::~CacheShardWriter() {
  const h5::Lock lock(h5::library_mutex());
  if (file_ >= 0) H5Fclose(file_);
}

int64_t CacheShardWriter::done_count() const {
  return static_cast<int64_t>(std::count(done_.begin(), done_.end(), uint8_t{1}));
}

// Reuses a shard left by an earlier run of the same pass: the same provenance and rows, and
// every slice marked done still matching its checksum. Anything else is started over.
bool CacheShardWriter::open_existing(const std::string& path, bool final_file) {
  const auto reject = [&](const std::string& why) {
    log::warn("{}: {}; writing this shard again", path, why);
    if (file_ >= 0) H5Fclose(file_);
    file_ = -1;
    std::fill(done_.begin(), done_.end(), uint8_t{0});
    return false;
  };
  file_ = H5Fopen(path.c_str(), final_file ? H5F_ACC_RDONLY : H5F_ACC_RDWR, H5P_DEFAULT);
  if (file_ < 0) return reject("unreadable (left by a killed run)");
  try {
    const CacheProvenance found = read_provenance(file_, path);
    for (const auto& field : CacheProvenance::identity_fields()) {
      if (found.get(field) != provenance_.get(field)) return reject("made with another " + field);
    }
    const auto rows = read_vector<int64_t>(file_, "slice", H5T_NATIVE_INT64, path);
    if (rows != g_.store_rows || read_int_attribute(file_, "first_row", path) != g_.first_row) {
      return reject("covers other slices");
    }
    const auto dims = h5::dataset_dims(file_, "soft_labels");
    if (dims != std::vector<hsize_t>{done_.size(), static_cast<hsize_t>(g_.classes), static_cast<hsize_t>(g_.height),
                                     static_cast<hsize_t>(g_.width)}) {
      return reject("has another shape");
    }
    const auto done = read_vector<uint8_t>(file_, "done", H5T_NATIVE_UINT8, path);
    const auto checksum = read_vector<uint32_t>(file_, "checksum", H5T_NATIVE_UINT32, path);
    if (done.size() != done_.size() || checksum.size() != done_.size()) return reject("has tables of other lengths");
    const ChunkedRows values(file_, path, "soft_labels");
    int64_t kept = 0;
    for (size_t i = 0; i < done_.size(); ++i) {
      if (done[i] == 0) continue;
      try {
        const auto bytes = values.read(static_cast<int64_t>(i));
        done_[i] = crc_of(bytes.data(), bytes.size()) == checksum[i] ? 1 : 0;
      } catch (const Error&) {
        done_[i] = 0;  // a chunk torn by the kill: computed again
      }
      kept += done_[i];
    }
    if (final_file && kept != static_cast<int64_t>(done_.size())) return reject("is incomplete or corrupt");
    if (!final_file) log::info("{}: resuming, {} of {} slices already done", path, kept, done_.size());
    return true;
  } catch (const Error& e) {
    return reject(e.message());
  }
}

void CacheShardWriter::create() {
  std::error_code ec;
  fs::remove(partial_path_, ec);
  file_ = H5Fcreate(partial_path_.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  KDSEG_CHECK(file_ >= 0, partial_path_, ": cannot create the shard file (is ", dir_, " writable, and is there space?)");
  const hsize_t n = done_.size();
  const hsize_t dims[4] = {n, static_cast<hsize_t>(g_.classes), static_cast<hsize_t>(g_.height),
                           static_cast<hsize_t>(g_.width)};
  const h5::Handle space(KDSEG_CHECK_HDF5(H5Screate_simple(4, dims, nullptr)));
  const h5::Handle dcpl(KDSEG_CHECK_HDF5(H5Pcreate(H5P_DATASET_CREATE)));
  const hsize_t chunk[4] = {1, dims[1], dims[2], dims[3]};
  if (n > 0) {
    KDSEG_CHECK_HDF5(H5Pset_chunk(dcpl, 4, chunk));
    if (g_.compression > 0) {
      KDSEG_CHECK_HDF5(H5Pset_shuffle(dcpl));
      KDSEG_CHECK_HDF5(H5Pset_deflate(dcpl, static_cast<unsigned>(g_.compression)));
    }
    KDSEG_CHECK_HDF5(H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER));
  }
  const h5::Handle type = value_type(g_.format);
  h5::Handle(KDSEG_CHECK_HDF5(H5Dcreate2(file_, "soft_labels", type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT)));
  h5::write_array(file_, "slice", H5T_NATIVE_INT64, {n}, g_.store_rows.data());
  h5::write_array(file_, "done", H5T_NATIVE_UINT8, {n}, done_.data());
  const std::vector<uint32_t> zeros(n, 0);
  h5::write_array(file_, "checksum", H5T_NATIVE_UINT32, {n}, zeros.data());
  write_provenance(file_, provenance_);
  write_int_attribute(file_, "shard", g_.rank);
  write_int_attribute(file_, "shards", g_.world);
  write_int_attribute(file_, "first_row", g_.first_row);
  KDSEG_CHECK(H5Fflush(file_, H5F_SCOPE_LOCAL) >= 0, partial_path_, ": cannot write (is the disk full?)");
}

void CacheShardWriter::write(int64_t local_first, const Tensor& values) {
  KDSEG_CHECK(!finished_, final_path_, ": the shard is already complete");
  const int64_t count = values.size(0);
  KDSEG_CHECK(local_first >= 0 && local_first + count <= rows(), partial_path_, ": rows [", local_first, ", ",
              local_first + count, ") outside the shard's ", rows());
  const auto expected = g_.format == CacheFormat::kLogitsF16 ? torch::kHalf : torch::kByte;
  KDSEG_CHECK(values.scalar_type() == expected && values.dim() == 4 && values.size(1) == g_.classes &&
                  values.size(2) == g_.height && values.size(3) == g_.width,
              partial_path_, ": values must be [B,", g_.classes, ",", g_.height, ",", g_.width, "] ",
              cache_format_name(g_.format));
  const Tensor host = values.to(torch::kCPU).contiguous();
  const size_t row_bytes = static_cast<size_t>(g_.classes * g_.height * g_.width) * value_size(g_.format);
  std::vector<uint32_t> checksums(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    checksums[static_cast<size_t>(i)] = crc_of(static_cast<const unsigned char*>(host.data_ptr()) + static_cast<size_t>(i) * row_bytes, row_bytes);
  }
  const std::vector<uint8_t> ones(static_cast<size_t>(count), 1);
  try {
    const h5::Lock lock(h5::library_mutex());
    const h5::Handle set(KDSEG_CHECK_HDF5(H5Dopen2(file_, "soft_labels", H5P_DEFAULT)));
    const h5::Handle space(KDSEG_CHECK_HDF5(H5Dget_space(set)));
    const hsize_t start[4] = {static_cast<hsize_t>(local_first), 0, 0, 0};
    const hsize_t n[4] = {static_cast<hsize_t>(count), static_cast<hsize_t>(g_.classes), static_cast<hsize_t>(g_.height),
                          static_cast<hsize_t>(g_.width)};
    KDSEG_CHECK_HDF5(H5Sselect_hyperslab(space, H5S_SELECT_SET, start, nullptr, n, nullptr));
    const h5::Handle memory(KDSEG_CHECK_HDF5(H5Screate_simple(4, n, nullptr)));
    const h5::Handle type = value_type(g_.format);
    KDSEG_CHECK_HDF5(H5Dwrite(set, type, memory, space, H5P_DEFAULT, host.data_ptr()));
    write_rows(file_, "checksum", H5T_NATIVE_UINT32, local_first, count, checksums.data());
    // The data reaches the file before the flags that say it is there.
    KDSEG_CHECK_HDF5(H5Fflush(file_, H5F_SCOPE_LOCAL));
    write_rows(file_, "done", H5T_NATIVE_UINT8, local_first, count, ones.data());
    KDSEG_CHECK_HDF5(H5Fflush(file_, H5F_SCOPE_LOCAL));
  } catch (const Error& e) {
    KDSEG_THROW(partial_path_, ": cannot write slices ", local_first, "-", local_first + count - 1,
                " (is the disk full?): ", e.message());
  }
  std::fill(done_.begin() + local_first, done_.begin() + local_first + count, uint8_t{1});
}

void CacheShardWriter::finish() {
  if (finished_) return;
  KDSEG_CHECK(done_count() == rows(), partial_path_, ": ", rows() - done_count(), " slice(s) not written yet");
  {
    const h5::Lock lock(h5::library_mutex());
    const herr_t closed = H5Fclose(file_);
    file_ = -1;
    KDSEG_CHECK(closed >= 0, partial_path_, ": cannot close (is the disk full?)");
  }
  fsync_path(partial_path_);
  std::error_code ec;
  fs::rename(partial_path_, final_path_, ec);
  KDSEG_CHECK(!ec, partial_path_, ": cannot rename to ", final_path_, ": ", ec.message());
  fsync_path(dir_);
  finished_ = true;
}

// --- the master file ---------------------------------------------------------------------------------

namespace {

struct ShardHeader {
  std::string path;
  CacheProvenance provenance;
  int64_t first_row = 0, rank = 0, world = 0;
  std::vector<int64_t> store_rows;
  std::vector<hsize_t> dims;
};

// Opens a finished shard's file and reads what the master needs from it.
ShardHeader read_shard_header(const std::string& dir, int rank, int world, h5::Handle* keep_open = nullptr) {
  const h5::Lock lock(h5::library_mutex());
  ShardHeader h;
  h.path = (fs::path(dir) / shard_file_name(rank, world)).string();
  KDSEG_CHECK(fs::exists(h.path), h.path, ": missing (the pass of ", world, " ranks did not finish; run it again to resume)");
  h5::Handle file(H5Fopen(h.path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  KDSEG_CHECK(file.get() >= 0, h.path, ": not a readable HDF5 file");
  h.provenance = read_provenance(file, h.path);
  h.first_row = read_int_attribute(file, "first_row", h.path);
  h.rank = read_int_attribute(file, "shard", h.path);
  h.world = read_int_attribute(file, "shards", h.path);
  KDSEG_CHECK(h.rank == rank && h.world == world, h.path, ": records shard ", h.rank, " of ", h.world);
  h.store_rows = read_vector<int64_t>(file, "slice", H5T_NATIVE_INT64, h.path);
  h.dims = h5::dataset_dims(file, "soft_labels");
  KDSEG_CHECK(h.dims.size() == 4 && h.dims[0] == h.store_rows.size(), h.path, ": /soft_labels must be [n,C,H,W] with n = |/slice|");
  if (keep_open) *keep_open = std::move(file);
  return h;
}

}  // namespace

void write_cache_master(const std::string& dir, int world) {
  h5::quiet_errors();
  std::vector<ShardHeader> shards;
  std::vector<int64_t> store_rows;
  for (int r = 0; r < world; ++r) {
    shards.push_back(read_shard_header(dir, r, world));
    const ShardHeader& s = shards.back();
    KDSEG_CHECK(s.first_row == static_cast<int64_t>(store_rows.size()), s.path, ": starts at cache row ", s.first_row,
                ", expected ", store_rows.size());
    for (const auto& field : CacheProvenance::identity_fields()) {
      KDSEG_CHECK(s.provenance.get(field) == shards.front().provenance.get(field), s.path, ": its ", field, " '",
                  s.provenance.get(field), "' differs from shard 0's '", shards.front().provenance.get(field), "'");
    }
    KDSEG_CHECK(std::equal(s.dims.begin() + 1, s.dims.end(), shards.front().dims.begin() + 1), s.path,
                ": slice shape differs from shard 0's");
    store_rows.insert(store_rows.end(), s.store_rows.begin(), s.store_rows.end());
  }
  const CacheProvenance& provenance = shards.front().provenance;
  const hsize_t dims[4] = {store_rows.size(), shards.front().dims[1], shards.front().dims[2], shards.front().dims[3]};
  const CacheFormat format = parse_cache_format(provenance.format);

  AtomicFile master((fs::path(dir) / kMasterName).string());
  {
    const h5::Handle file(H5Fcreate(master.temp_path().c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
    KDSEG_CHECK(file.get() >= 0, master.temp_path(), ": cannot create the master file");
    const h5::Handle space(KDSEG_CHECK_HDF5(H5Screate_simple(4, dims, nullptr)));
    const h5::Handle dcpl(KDSEG_CHECK_HDF5(H5Pcreate(H5P_DATASET_CREATE)));
    for (const ShardHeader& s : shards) {
      if (s.dims[0] == 0) continue;
      const h5::Handle source(KDSEG_CHECK_HDF5(H5Screate_simple(4, s.dims.data(), nullptr)));
      const h5::Handle target(KDSEG_CHECK_HDF5(H5Scopy(space)));
      const hsize_t start[4] = {static_cast<hsize_t>(s.first_row), 0, 0, 0};
      KDSEG_CHECK_HDF5(H5Sselect_hyperslab(target, H5S_SELECT_SET, start, nullptr, s.dims.data(), nullptr));
      // Relative: resolved against the master's folder, so the cache folder can move.
      KDSEG_CHECK_HDF5(H5Pset_virtual(dcpl, target, fs::path(s.path).filename().c_str(), "/soft_labels", source));
    }
    const h5::Handle type = value_type(format);
    h5::Handle(KDSEG_CHECK_HDF5(H5Dcreate2(file, "soft_labels", type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT)));
    h5::write_array(file, "slice", H5T_NATIVE_INT64, {store_rows.size()}, store_rows.data());
    write_provenance(file, provenance);
    write_int_attribute(file, "shards", world);
    KDSEG_CHECK(H5Fflush(file, H5F_SCOPE_LOCAL) >= 0, master.temp_path(), ": cannot write (is the disk full?)");
  }
  master.commit();
}

// --- the reader ----------------------------------------------------------------------------------------

struct SoftLabelCache::ShardInfo {
  h5::Handle file;
  std::string path;
  std::unique_ptr<ChunkedRows> values;
  std::vector<uint32_t> checksum;  // CRC-32 of each slice's stored bytes, as the pass wrote them
};

SoftLabelCache::SoftLabelCache(const std::string& dir) : dir_(dir) {
  h5::quiet_errors();
  const h5::Lock lock(h5::library_mutex());
  const std::string master_path = (fs::path(dir) / kMasterName).string();
  KDSEG_CHECK(fs::is_directory(dir), dir, ": no such cache folder");
  KDSEG_CHECK(fs::exists(master_path), master_path, ": missing; is ", dir,
              " a finished cache (kdseg precompute writes it last)?");
  const h5::Handle master(H5Fopen(master_path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  KDSEG_CHECK(master.get() >= 0, master_path, ": not a readable HDF5 file");
  provenance_ = read_provenance(master, master_path);
  format_ = parse_cache_format(provenance_.format);
  if (format_ == CacheFormat::kProbsU8) {
    try {
      temperature_ = std::stod(provenance_.temperature);
    } catch (const std::exception&) {
      temperature_ = 0;
    }
    KDSEG_CHECK(temperature_ > 0, master_path, ": temperature attribute '", provenance_.temperature, "' is not a number > 0");
  }
  const int world = static_cast<int>(read_int_attribute(master, "shards", master_path));
  store_rows_ = read_vector<int64_t>(master, "slice", H5T_NATIVE_INT64, master_path);
  const auto dims = h5::dataset_dims(master, "soft_labels");
  KDSEG_CHECK(dims.size() == 4 && dims[0] == store_rows_.size(), master_path, ": /soft_labels must be [N,C,H,W] with N = |/slice|");
  classes_ = static_cast<int64_t>(dims[1]);
  height_ = static_cast<int64_t>(dims[2]);
  width_ = static_cast<int64_t>(dims[3]);
  for (int r = 0; r < world; ++r) {
    auto info = std::make_unique<ShardInfo>();
    const ShardHeader h = read_shard_header(dir, r, world, &info->file);
    KDSEG_CHECK(h.provenance.teacher_hash == provenance_.teacher_hash && h.provenance.store_hash == provenance_.store_hash &&
                    h.provenance.format == provenance_.format,
                h.path, ": was made by another pass than ", master_path);
    KDSEG_CHECK(h.first_row == static_cast<int64_t>(location_.size()), h.path, ": starts at cache row ", h.first_row,
                " but the shards before it end at ", location_.size());
    KDSEG_CHECK(std::equal(h.dims.begin() + 1, h.dims.end(), dims.begin() + 1), h.path,
                ": its slices are not [C,H,W] = [", classes_, ",", height_, ",", width_, "] as in ", master_path);
    for (size_t i = 0; i < h.store_rows.size(); ++i) {
      const size_t row = static_cast<size_t>(h.first_row) + i;
      KDSEG_CHECK(row < store_rows_.size() && store_rows_[row] == h.store_rows[i], h.path, ": slice ", i,
                  " disagrees with the master's /slice");
      location_.emplace_back(r, static_cast<int64_t>(i));
    }
    info->values = std::make_unique<ChunkedRows>(info->file.get(), h.path, "soft_labels");
    info->path = h.path;
    info->checksum = read_vector<uint32_t>(info->file.get(), "checksum", H5T_NATIVE_UINT32, h.path);
    KDSEG_CHECK(info->checksum.size() == h.store_rows.size(), h.path, ": /checksum has ", info->checksum.size(),
                " entries for ", h.store_rows.size(), " slices");
    shards_.push_back(std::move(info));
  }
  KDSEG_CHECK(location_.size() == store_rows_.size(), master_path, ": the shards hold ", location_.size(),
              " slices but the master lists ", store_rows_.size());
  for (size_t i = 0; i < store_rows_.size(); ++i) {
    const int64_t s = store_rows_[i];
    KDSEG_CHECK(s >= 0, master_path, ": negative store row ", s, " in /slice");
    if (static_cast<size_t>(s) >= row_of_store_.size()) row_of_store_.resize(static_cast<size_t>(s) + 1, -1);
    KDSEG_CHECK(row_of_store_[static_cast<size_t>(s)] < 0, master_path, ": store row ", s, " appears twice in /slice");
    row_of_store_[static_cast<size_t>(s)] = static_cast<int64_t>(i);
  }
}

SoftLabelCache::~SoftLabelCache() {
  const h5::Lock lock(h5::library_mutex());
  shards_.clear();
}

int64_t SoftLabelCache::cache_row(int64_t store_row) const {
  if (store_row < 0 || static_cast<size_t>(store_row) >= row_of_store_.size()) return -1;
  return row_of_store_[static_cast<size_t>(store_row)];
}

std::vector<int64_t> SoftLabelCache::missing(const std::vector<int64_t>& wanted) const {
  std::vector<int64_t> out;
  for (int64_t r : wanted) {
    if (cache_row(r) < 0) out.push_back(r);
  }
  return out;
}

Tensor SoftLabelCache::stored(int64_t row) const {
  KDSEG_CHECK(row >= 0 && row < rows(), dir_, ": cache row ", row, " outside [0, ", rows(), ")");
  const auto [shard, local] = location_[static_cast<size_t>(row)];
  const ShardInfo& info = *shards_[static_cast<size_t>(shard)];
  const std::vector<unsigned char> bytes = info.values->read(local);
  // Every read is checked: a corrupt slice would otherwise train the student on garbage.
  KDSEG_CHECK(crc_of(bytes.data(), bytes.size()) == info.checksum[static_cast<size_t>(local)], info.path, ": slice ",
              local, " (prepared-store row ", store_rows_[static_cast<size_t>(row)],
              ") does not match its checksum: the file is corrupt (kdseg cache verify lists every such slice; run "
              "kdseg precompute --force to write the cache again)");
  return decode(bytes, format_, info.values->row_shape());
}

Tensor SoftLabelCache::probabilities(int64_t store_row, double temperature) const {
  const int64_t row = cache_row(store_row);
  KDSEG_CHECK(row >= 0, dir_, ": no soft labels for prepared-store slice ", store_row);
  const Tensor values = stored(row);
  if (format_ == CacheFormat::kProbsU8) {
    KDSEG_CHECK(temperature <= 0 || std::abs(temperature - temperature_) < 1e-12 * temperature_, dir_,
                ": probs-u8 caches fix the temperature at the pass (T = ", provenance_.temperature, "); --temperature ",
                temperature, " needs a logits-f16 cache");
    return dequantise_probabilities(values);
  }
  const double t = temperature > 0 ? temperature : 1.0;
  return torch::softmax(values.to(torch::kFloat) / t, 0);
}

void SoftLabelCache::check_provenance(const std::string& store_path, const std::string& teacher_path) const {
  const auto differences = provenance_differences(provenance_, store_path, teacher_path);
  if (differences.empty()) return;
  std::string text;
  for (const auto& d : differences) text += "\n  " + d;
  KDSEG_THROW(dir_, ": the soft-label cache does not match the files given:", text,
              "\n(run kdseg precompute again for these files)");
}

// --- inspect and verify -------------------------------------------------------------------------------

double CacheInspection::bytes_per_voxel_per_class() const {
  const int64_t values = shape.empty() ? 0 : shape[0] * shape[1] * shape[2] * shape[3];
  return values > 0 ? static_cast<double>(stored_bytes) / static_cast<double>(values) : 0.0;
}

double CacheInspection::compression_ratio() const {
  return stored_bytes > 0 ? static_cast<double>(raw_bytes) / static_cast<double>(stored_bytes) : 0.0;
}

CacheInspection inspect_cache(const std::string& dir) {
  const SoftLabelCache cache(dir);
  CacheInspection out;
  out.shape = {cache.rows(), cache.classes(), cache.height(), cache.width()};
  out.provenance = cache.provenance();
  out.shards = cache.shards();
  out.raw_bytes = cache.rows() * cache.classes() * cache.height() * cache.width() *
                  static_cast<int64_t>(value_size(cache.format()));
  const h5::Lock lock(h5::library_mutex());
  for (int r = 0; r < cache.shards(); ++r) {
    const std::string path = (fs::path(dir) / shard_file_name(r, cache.shards())).string();
    const h5::Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
    KDSEG_CHECK(file.get() >= 0, path, ": not readable");
    const h5::Handle set(KDSEG_CHECK_HDF5(H5Dopen2(file, "soft_labels", H5P_DEFAULT)));
    out.stored_bytes += static_cast<int64_t>(H5Dget_storage_size(set));
  }
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.is_regular_file()) out.file_bytes += static_cast<int64_t>(entry.file_size());
  }
  return out;
}

namespace {

void verify_shard(const SoftLabelCache& cache, const std::string& dir, int r, std::vector<std::string>& problems) {
  const std::string path = (fs::path(dir) / shard_file_name(r, cache.shards())).string();
  const ShardHeader header = read_shard_header(dir, r, cache.shards());
  std::vector<uint8_t> done;
  std::vector<uint32_t> checksum;
  {
    const h5::Lock lock(h5::library_mutex());
    const h5::Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
    KDSEG_CHECK(file.get() >= 0, path, ": not a readable HDF5 file");
    done = read_vector<uint8_t>(file, "done", H5T_NATIVE_UINT8, path);
    checksum = read_vector<uint32_t>(file, "checksum", H5T_NATIVE_UINT32, path);
  }
  KDSEG_CHECK(done.size() == header.store_rows.size() && checksum.size() == header.store_rows.size(), path, ": /done (",
              done.size(), ") and /checksum (", checksum.size(), ") must have a row per slice (", header.store_rows.size(), ")");
  for (size_t i = 0; i < done.size(); ++i) {
    const int64_t row = header.first_row + static_cast<int64_t>(i);
    const std::string where = path + ": slice " + std::to_string(i) + " (prepared-store row " +
                              std::to_string(header.store_rows[i]) + ")";
    if (done[i] == 0) {
      problems.push_back(where + ": not written");
      continue;
    }
    Tensor values;
    try {
      values = cache.stored(row);
    } catch (const Error& e) {
      problems.push_back(where + ": unreadable: " + e.message());
      continue;
    }
    if (crc_of(values.data_ptr(), values.nbytes()) != checksum[i]) {
      problems.push_back(where + ": checksum mismatch (the file is corrupt)");
    } else if (cache.format() == CacheFormat::kLogitsF16 && !torch::isfinite(values).all().item<bool>()) {
      problems.push_back(where + ": non-finite logits");
    } else if (cache.format() == CacheFormat::kProbsU8 && !(values.to(torch::kInt).sum(0) == 255).all().item<bool>()) {
      problems.push_back(where + ": quantised probabilities do not sum to 255");
    }
  }
}

}  // namespace

std::vector<std::string> verify_cache(const std::string& dir, const std::string& store_path,
                                      const std::string& teacher_path) {
  std::vector<std::string> problems;
  std::unique_ptr<SoftLabelCache> cache;
  try {
    cache = std::make_unique<SoftLabelCache>(dir);
  } catch (const Error& e) {
    return {e.message()};
  }
  try {
    for (auto& d : provenance_differences(cache->provenance(), store_path, teacher_path)) problems.push_back(std::move(d));
  } catch (const Error& e) {
    problems.push_back(e.message());
  }
  // Every shard: all slices done, each matching its checksum and well-formed.
  for (int r = 0; r < cache->shards(); ++r) {
    try {
      verify_shard(*cache, dir, r, problems);
    } catch (const Error& e) {
      problems.push_back(e.message());
    }
  }
  return problems;
}

}  // namespace kdseg::data
