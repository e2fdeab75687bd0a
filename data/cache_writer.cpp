#include "data/soft_label_cache.h"

#include <torch/torch.h>

#include <algorithm>
#include <filesystem>

#include "core/error.h"
#include "core/file_util.h"
#include "core/log.h"
#include "data/cache_io.h"
#include "data/chunked_rows.h"

namespace kdseg::data {
namespace fs = std::filesystem;
using detail::crc_of;
using detail::read_int_attribute;
using detail::read_provenance;
using detail::read_shard_header;
using detail::read_vector;
using detail::ShardHeader;
using detail::value_size;
using detail::value_type;
using detail::write_int_attribute;
using detail::write_provenance;
using torch::Tensor;

namespace {

// Writes `count` rows of a 1-d dataset starting at `first`.
void write_rows(hid_t file, const char* name, hid_t type, int64_t first, int64_t count, const void* data) {
  h5::write_slab(h5::open_dataset(file, name), type, {static_cast<hsize_t>(first)}, {static_cast<hsize_t>(count)},
                 data);
}

}  // namespace

// --- the shard writer --------------------------------------------------------------------------------

CacheShardWriter::CacheShardWriter(const std::string& dir, ShardSpec spec, CacheProvenance provenance)
    : dir_(dir), spec_(std::move(spec)), provenance_(std::move(provenance)), file_(std::make_unique<h5::Handle>()) {
  h5::quiet_errors();
  const h5::Lock lock(h5::library_mutex());
  final_path_ = CacheFolder(dir_).shard_path(spec_.rank, spec_.world);
  partial_path_ = final_path_ + kPartialShardSuffix;
  done_.assign(spec_.store_rows.size(), 0);
  if (fs::exists(final_path_) && open_existing(final_path_, /*final_file=*/true)) {
    finished_ = true;
    return;
  }
  if (fs::exists(partial_path_) && open_existing(partial_path_, /*final_file=*/false)) return;
  create();
}

CacheShardWriter::~CacheShardWriter() {
  const h5::Lock lock(h5::library_mutex());
  file_->reset();
}

int64_t CacheShardWriter::done_count() const {
  return static_cast<int64_t>(std::count(done_.begin(), done_.end(), uint8_t{1}));
}

// Reuses a shard left by an earlier run of the same pass: the same provenance and rows, and
// every slice marked done still matching its checksum. Anything else is started over.
bool CacheShardWriter::open_existing(const std::string& path, bool final_file) {
  const auto reject = [&](const std::string& why) {
    log::warn("{}: {}; writing this shard again", path, why);
    file_->reset();
    std::fill(done_.begin(), done_.end(), uint8_t{0});
    return false;
  };
  *file_ = h5::try_open_file(path, /*writable=*/!final_file);
  if (file_->get() < 0) return reject("unreadable (left by a killed run)");
  try {
    const CacheProvenance found = read_provenance(*file_, path);
    for (const auto& field : CacheProvenance::identity_fields()) {
      if (found.get(field) != provenance_.get(field)) return reject("made with another " + field);
    }
    const auto rows = read_vector<int64_t>(*file_, "slice", H5T_NATIVE_INT64, path);
    if (rows != spec_.store_rows || read_int_attribute(*file_, "first_row", path) != spec_.first_row) {
      return reject("covers other slices");
    }
    const auto dims = h5::dataset_dims(*file_, "soft_labels");
    if (dims != std::vector<hsize_t>{done_.size(), static_cast<hsize_t>(spec_.classes),
                                     static_cast<hsize_t>(spec_.height), static_cast<hsize_t>(spec_.width)}) {
      return reject("has another shape");
    }
    const auto done = read_vector<uint8_t>(*file_, "done", H5T_NATIVE_UINT8, path);
    const auto checksum = read_vector<uint32_t>(*file_, "checksum", H5T_NATIVE_UINT32, path);
    if (done.size() != done_.size() || checksum.size() != done_.size()) return reject("has tables of other lengths");
    const ChunkedRows values(*file_, path, "soft_labels");
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
  create_new_file(partial_path_);  // HDF5 truncates only a file this process made, never through a link
  *file_ = h5::Handle(H5Fcreate(partial_path_.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
  KDSEG_CHECK(file_->get() >= 0, partial_path_, ": cannot create the shard file (is ", dir_,
              " writable, and is there space?)");
  const hsize_t n = done_.size();
  const hsize_t dims[4] = {n, static_cast<hsize_t>(spec_.classes), static_cast<hsize_t>(spec_.height),
                           static_cast<hsize_t>(spec_.width)};
  const h5::Handle dcpl(KDSEG_CHECK_HDF5(H5Pcreate(H5P_DATASET_CREATE)));
  if (n > 0) {
    h5::set_shuffle_deflate_chunks(dcpl, {1, dims[1], dims[2], dims[3]}, spec_.compression);
    KDSEG_CHECK_HDF5(H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER));
  }
  const h5::Handle type = value_type(spec_.format);
  h5::create_dataset(*file_, "soft_labels", type, {dims[0], dims[1], dims[2], dims[3]}, dcpl);
  h5::write_array(*file_, "slice", H5T_NATIVE_INT64, {n}, spec_.store_rows.data());
  h5::write_array(*file_, "done", H5T_NATIVE_UINT8, {n}, done_.data());
  const std::vector<uint32_t> zeros(n, 0);
  h5::write_array(*file_, "checksum", H5T_NATIVE_UINT32, {n}, zeros.data());
  write_provenance(*file_, provenance_);
  write_int_attribute(*file_, "shard", spec_.rank);
  write_int_attribute(*file_, "shards", spec_.world);
  write_int_attribute(*file_, "first_row", spec_.first_row);
  KDSEG_CHECK(H5Fflush(*file_, H5F_SCOPE_LOCAL) >= 0, partial_path_, ": cannot write (is the disk full?)");
}

void CacheShardWriter::write(int64_t local_first, const Tensor& values) {
  KDSEG_CHECK(!finished_, final_path_, ": the shard is already complete");
  const int64_t count = values.size(0);
  KDSEG_CHECK(local_first >= 0 && local_first + count <= rows(), partial_path_, ": rows [", local_first, ", ",
              local_first + count, ") outside the shard's ", rows());
  const auto expected = spec_.format == CacheFormat::kLogitsF16 ? torch::kHalf : torch::kByte;
  KDSEG_CHECK(values.scalar_type() == expected && values.dim() == 4 && values.size(1) == spec_.classes &&
                  values.size(2) == spec_.height && values.size(3) == spec_.width,
              partial_path_, ": values must be [B,", spec_.classes, ",", spec_.height, ",", spec_.width, "] ",
              enum_name(spec_.format));
  const Tensor host = values.to(torch::kCPU).contiguous();
  const size_t row_bytes = static_cast<size_t>(spec_.classes * spec_.height * spec_.width) * value_size(spec_.format);
  std::vector<uint32_t> checksums(static_cast<size_t>(count));
  const auto* bytes = static_cast<const unsigned char*>(host.data_ptr());
  for (int64_t i = 0; i < count; ++i) {
    checksums[static_cast<size_t>(i)] = crc_of(bytes + static_cast<size_t>(i) * row_bytes, row_bytes);
  }
  const std::vector<uint8_t> ones(static_cast<size_t>(count), 1);
  try {
    const h5::Lock lock(h5::library_mutex());
    const h5::Handle set = h5::open_dataset(*file_, "soft_labels");
    const h5::Handle type = value_type(spec_.format);
    h5::write_slab(set, type, {static_cast<hsize_t>(local_first), 0, 0, 0},
                   {static_cast<hsize_t>(count), static_cast<hsize_t>(spec_.classes),
                    static_cast<hsize_t>(spec_.height), static_cast<hsize_t>(spec_.width)},
                   host.data_ptr());
    write_rows(*file_, "checksum", H5T_NATIVE_UINT32, local_first, count, checksums.data());
    // The data reaches the file before the flags that say it is there.
    KDSEG_CHECK_HDF5(H5Fflush(*file_, H5F_SCOPE_LOCAL));
    write_rows(*file_, "done", H5T_NATIVE_UINT8, local_first, count, ones.data());
    KDSEG_CHECK_HDF5(H5Fflush(*file_, H5F_SCOPE_LOCAL));
  } catch (const IoError& e) {
    throw_write_failure(partial_path_,
                        "slices " + std::to_string(local_first) + "-" + std::to_string(local_first + count - 1),
                        e.message());
  } catch (const Error& e) {
    KDSEG_THROW(partial_path_, ": cannot write slices ", local_first, "-", local_first + count - 1, ": ", e.message());
  }
  std::fill(done_.begin() + local_first, done_.begin() + local_first + count, uint8_t{1});
}

void CacheShardWriter::finish() {
  if (finished_) return;
  KDSEG_CHECK(done_count() == rows(), partial_path_, ": ", rows() - done_count(), " slice(s) not written yet");
  {
    const h5::Lock lock(h5::library_mutex());
    const bool closed = file_->close();
    KDSEG_CHECK(closed, partial_path_, ": cannot close (is the disk full?)");
  }
  fsync_path(partial_path_);
  std::error_code ec;
  fs::rename(partial_path_, final_path_, ec);
  KDSEG_CHECK(!ec, partial_path_, ": cannot rename to ", final_path_, ": ", ec.message());
  fsync_path(dir_);
  finished_ = true;
}

// --- the master file ---------------------------------------------------------------------------------

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
  const CacheFormat format = parse_enum<CacheFormat>(shards.front().path + ": format", provenance.format);

  AtomicFile master(CacheFolder(dir).master_path());
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

}  // namespace kdseg::data
