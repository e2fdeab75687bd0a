#include "data/soft_label_cache.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>

#include "core/error.h"
#include "core/hash.h"
#include "data/cache_io.h"
#include "data/prepared_store.h"

namespace kdseg::data {
namespace fs = std::filesystem;
using detail::crc_of;
using detail::read_shard_header;
using detail::read_vector;
using detail::ShardHeader;
using detail::value_size;
using torch::Tensor;

namespace {

// Differences between a cache's provenance and the store (given by its path and content hash)
// and the teacher file it is to be used with.
std::vector<std::string> differences(const CacheProvenance& cache, const std::string& store_path,
                                     const std::string& store_hash, const std::string& teacher_path) {
  std::vector<std::string> out;
  if (!store_path.empty() && store_hash != cache.store_hash) {
    out.push_back("prepared store: the cache was made from " + cache.store_file + " (content hash " + cache.store_hash +
                  "), " + store_path + " has content hash " + store_hash);
  }
  if (!teacher_path.empty()) {
    const std::string hash = hash_file(teacher_path);
    if (hash != cache.teacher_hash) {
      out.push_back("teacher: the cache was made by " + cache.teacher_file + " (file hash " + cache.teacher_hash +
                    "), " + teacher_path + " has file hash " + hash);
    }
  }
  return out;
}

void throw_differences(const std::string& dir, const std::vector<std::string>& differences) {
  if (differences.empty()) return;
  std::string text;
  for (const auto& d : differences) text += "\n  " + d;
  KDSEG_THROW(dir, ": the soft-label cache does not match the files given:", text,
              "\n(run kdseg precompute again for these files)");
}

// "<row> (<case id> slice <index>)" for the first 20 rows, then ", ...".
std::string describe_rows(const PreparedStore& store, const std::vector<int64_t>& rows) {
  std::string ids;
  for (size_t i = 0; i < std::min<size_t>(rows.size(), 20); ++i) {
    const size_t row = static_cast<size_t>(rows[i]);
    const size_t case_row = static_cast<size_t>(store.slice_case()[row]);
    ids += (i ? ", " : "") + std::to_string(rows[i]) + " (" + store.case_ids()[case_row] + " slice " +
           std::to_string(store.slice_index()[row]) + ")";
  }
  return ids + (rows.size() > 20 ? ", ..." : "");
}

}  // namespace

// --- provenance ---------------------------------------------------------------------------------------

std::vector<std::string> provenance_differences(const CacheProvenance& cache, const std::string& store_path,
                                                const std::string& teacher_path) {
  const std::string store_hash =
      store_path.empty() ? "" : PreparedStore(store_path).attribute(store::kContentHashAttribute);
  return differences(cache, store_path, store_hash, teacher_path);
}

void SoftLabelCache::check_provenance(const std::string& store_path, const std::string& teacher_path) const {
  throw_differences(dir_, provenance_differences(provenance_, store_path, teacher_path));
}

// --- before training ------------------------------------------------------------------------------------

void check_cache_for_training(const SoftLabelCache& cache, const PreparedStore& store,
                              const std::vector<int64_t>& train_rows, const CacheUse& use) {
  const std::string& dir = cache.dir();
  throw_differences(dir, differences(cache.provenance(), use.store_path, store.attribute(store::kContentHashAttribute),
                                     use.teacher_path));
  KDSEG_CHECK(cache.classes() == use.classes, dir, ": the cache holds ", cache.classes(), " classes but task '",
              use.task_name, "' has ", use.classes, " (was it made for another --task?)");
  if (cache.format() == CacheFormat::kProbsU8) {
    const double t = cache.temperature();
    KDSEG_CHECK(std::abs(use.temperature - t) <= 1e-9 * t, dir, ": a probs-u8 cache holds probabilities at T = ", t,
                "; distill with --temperature ", t, ", or precompute a logits-f16 cache to choose T when training");
  }
  KDSEG_CHECK(cache.height() == store.height() && cache.width() == store.width(), dir, ": cached slices are ",
              cache.height(), "x", cache.width(), " but the store's are ", store.height(), "x", store.width());
  const auto missing = cache.missing(train_rows);
  if (!missing.empty()) {
    KDSEG_THROW(dir, ": no soft labels for ", missing.size(), " of the ", train_rows.size(),
                " training slices (validation fold ", use.fold, "): store rows ", describe_rows(store, missing),
                " (was it precomputed with other --folds?)");
  }
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
    const std::string path = CacheFolder(dir).shard_path(r, cache.shards());
    const h5::Handle file = h5::try_open_file(path);
    KDSEG_CHECK(file.get() >= 0, path, ": not readable");
    const h5::Handle set = h5::open_dataset(file, "soft_labels");
    out.stored_bytes += static_cast<int64_t>(H5Dget_storage_size(set));
  }
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.is_regular_file()) out.file_bytes += static_cast<int64_t>(entry.file_size());
  }
  return out;
}

namespace {

void verify_shard(const SoftLabelCache& cache, const std::string& dir, int r, std::vector<std::string>& problems) {
  const ShardHeader header = read_shard_header(dir, r, cache.shards());
  const std::string& path = header.path;
  std::vector<uint8_t> done;
  std::vector<uint32_t> checksum;
  {
    const h5::Lock lock(h5::library_mutex());
    const h5::Handle file = h5::try_open_file(path);
    KDSEG_CHECK(file.get() >= 0, path, ": not a readable HDF5 file");
    done = read_vector<uint8_t>(file, "done", H5T_NATIVE_UINT8, path);
    checksum = read_vector<uint32_t>(file, "checksum", H5T_NATIVE_UINT32, path);
  }
  KDSEG_CHECK(done.size() == header.store_rows.size() && checksum.size() == header.store_rows.size(), path, ": /done (",
              done.size(), ") and /checksum (", checksum.size(), ") must have a row per slice (",
              header.store_rows.size(), ")");
  for (size_t i = 0; i < done.size(); ++i) {
    const int64_t row = header.first_row + static_cast<int64_t>(i);
    const std::string where =
        path + ": slice " + std::to_string(i) + " (prepared-store row " + std::to_string(header.store_rows[i]) + ")";
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
    for (auto& d : provenance_differences(cache->provenance(), store_path, teacher_path)) {
      problems.push_back(std::move(d));
    }
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
