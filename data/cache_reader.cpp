#include "data/soft_label_cache.h"

#include <torch/torch.h>

#include <cmath>
#include <filesystem>

#include "core/error.h"
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
using torch::Tensor;

namespace {

Tensor decode(const std::vector<unsigned char>& bytes, CacheFormat format, const std::vector<int64_t>& shape) {
  return torch::from_blob(const_cast<unsigned char*>(bytes.data()), shape,
                          format == CacheFormat::kLogitsF16 ? torch::kHalf : torch::kByte)
      .clone();
}

}  // namespace

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
  const std::string master_path = CacheFolder(dir).master_path();
  KDSEG_CHECK(fs::is_directory(dir), dir, ": no such cache folder");
  KDSEG_CHECK(fs::exists(master_path), master_path, ": missing; is ", dir,
              " a finished cache (kdseg precompute writes it last)?");
  const h5::Handle master = h5::try_open_file(master_path);
  KDSEG_CHECK(master.get() >= 0, master_path, ": not a readable HDF5 file");
  provenance_ = read_provenance(master, master_path);
  format_ = parse_enum<CacheFormat>(master_path + ": format", provenance_.format);
  if (format_ == CacheFormat::kProbsU8) {
    try {
      temperature_ = std::stod(provenance_.temperature);
    } catch (const std::exception&) {
      temperature_ = 0;
    }
    KDSEG_CHECK(temperature_ > 0, master_path, ": temperature attribute '", provenance_.temperature,
                "' is not a number > 0");
  }
  const int world = static_cast<int>(read_int_attribute(master, "shards", master_path));
  store_rows_ = read_vector<int64_t>(master, "slice", H5T_NATIVE_INT64, master_path);
  const auto dims = h5::dataset_dims(master, "soft_labels");
  KDSEG_CHECK(dims.size() == 4 && dims[0] == store_rows_.size(), master_path,
              ": /soft_labels must be [N,C,H,W] with N = |/slice|");
  classes_ = static_cast<int64_t>(dims[1]);
  height_ = static_cast<int64_t>(dims[2]);
  width_ = static_cast<int64_t>(dims[3]);
  for (int r = 0; r < world; ++r) open_shard(r, world, master_path);
  KDSEG_CHECK(location_.size() == store_rows_.size(), master_path, ": the shards hold ", location_.size(),
              " slices but the master lists ", store_rows_.size());
  index_store_rows(master_path);
}

void SoftLabelCache::open_shard(int rank, int world, const std::string& master_path) {
  auto info = std::make_unique<ShardInfo>();
  const ShardHeader h = read_shard_header(dir_, rank, world, &info->file);
  KDSEG_CHECK(h.provenance.teacher_hash == provenance_.teacher_hash &&
                  h.provenance.store_hash == provenance_.store_hash && h.provenance.format == provenance_.format,
              h.path, ": was made by another pass than ", master_path);
  KDSEG_CHECK(h.first_row == static_cast<int64_t>(location_.size()), h.path, ": starts at cache row ", h.first_row,
              " but the shards before it end at ", location_.size());
  KDSEG_CHECK(static_cast<int64_t>(h.dims[1]) == classes_ && static_cast<int64_t>(h.dims[2]) == height_ &&
                  static_cast<int64_t>(h.dims[3]) == width_,
              h.path, ": its slices are not [C,H,W] = [", classes_, ",", height_, ",", width_, "] as in ", master_path);
  for (size_t i = 0; i < h.store_rows.size(); ++i) {
    const size_t row = static_cast<size_t>(h.first_row) + i;
    KDSEG_CHECK(row < store_rows_.size() && store_rows_[row] == h.store_rows[i], h.path, ": slice ", i,
                " disagrees with the master's /slice");
    location_.emplace_back(rank, static_cast<int64_t>(i));
  }
  info->values = std::make_unique<ChunkedRows>(info->file.get(), h.path, "soft_labels");
  info->path = h.path;
  info->checksum = read_vector<uint32_t>(info->file.get(), "checksum", H5T_NATIVE_UINT32, h.path);
  KDSEG_CHECK(info->checksum.size() == h.store_rows.size(), h.path, ": /checksum has ", info->checksum.size(),
              " entries for ", h.store_rows.size(), " slices");
  shards_.push_back(std::move(info));
}

void SoftLabelCache::index_store_rows(const std::string& master_path) {
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

}  // namespace kdseg::data
