// The soft-label cache: the teacher's outputs for prepared-store slices, written once by
// `kdseg precompute` and read by `kdseg distill` (docs/formats.md has the full layout; the
// folder's file names and the lifecycle of a pass are in data/cache_folder.h).
//
//   DIR/soft_labels.h5           master: /soft_labels [N,C,H,W], a virtual dataset over the
//                                shards in prepared-store order; /slice [N] int64 (each cache
//                                row's row in the prepared store); provenance attributes
//   DIR/shard-RRRRR-of-WWWWW.h5  one per rank of the pass: /soft_labels [n,C,H,W] chunked per
//                                slice, /slice [n], /done [n] uint8, /checksum [n] uint32 (CRC-32
//                                of the slice's stored bytes), the same provenance attributes
//
// Formats: logits-f16 (the teacher's logits as IEEE half; the temperature is applied by the
// reader) or probs-u8 (softmax(logits / T) at a fixed T, quantised so that each voxel's C values
// sum to exactly 255: every probability is within 1/255 of the teacher's, within 1/510 for
// two classes).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/enum_names.h"
#include "data/cache_folder.h"

namespace kdseg::data {
namespace h5 {
class Handle;  // data/hdf5_util.h
}

class PreparedStore;

enum class CacheFormat { kLogitsF16, kProbsU8 };
// --format, and the cache's "format" attribute: parse_enum<data::CacheFormat>, enum_name.
inline constexpr EnumName<CacheFormat> kCacheFormatNames[] = {
    {CacheFormat::kLogitsF16, "logits-f16", "temperature applied when read"},
    {CacheFormat::kProbsU8, "probs-u8", "probabilities at --temperature, 1 byte per class"},
};
constexpr EnumNames<CacheFormat> enum_names(EnumTag<CacheFormat>) { return kCacheFormatNames; }

// What a cache was made from. Every field is a string attribute on the master and the shards.
struct CacheProvenance {
  std::string format;                      // logits-f16 | probs-u8
  std::string temperature;                 // probs-u8: T (as written by %.17g); logits-f16: "applied when read"
  std::string teacher_file, teacher_hash;  // the teacher as given, FNV-1a of its bytes
  std::string store_file, store_hash;      // the prepared store as given, its content_hash
  std::string folds;                       // "all" or "0,2,3"
  std::string classes;
  std::string calibration;  // "none", or "T = <t> fitted on folds <f>": the cache holds logits / t
  std::string tool_version, created;

  // Every field by its attribute name (the member's name): the identity fields first, in the
  // order the attributes are written.
  static const std::vector<std::string>& fields();
  // The fields that must match between shards, and between a cache and what it is used with.
  static const std::vector<std::string>& identity_fields();
  // Errors name an unknown field.
  std::string get(const std::string& field) const;
  void set(const std::string& field, const std::string& value);
};

// Differences ("<field>: cache has X, expected Y") between a cache's provenance and the files
// it is to be used with: the store's content hash (read through PreparedStore, whose errors
// name a file that is not a prepared store) when a store is given, the teacher's file hash when
// a teacher file is given.
std::vector<std::string> provenance_differences(const CacheProvenance& cache, const std::string& store_path,
                                                const std::string& teacher_path = "");

// probs [B,C,H,W] (or [C,H,W]) float, normalised over dim -3 -> uint8 summing to 255 per
// voxel: floor(255 p) plus one for the classes with the largest remainders (ties to the lower
// class), so |q/255 - p| < 1/255, and <= 1/510 for two classes.
at::Tensor quantise_probabilities(const at::Tensor& probs);
at::Tensor dequantise_probabilities(const at::Tensor& quantised);

// The teacher's logits [B,C,H,W] (or [C,H,W]) float32 as the cache stores them, on the same
// device: logits-f16 clamped to half's range (so that a confident teacher never stores inf) as
// kHalf; probs-u8 quantise_probabilities(softmax(logits / temperature)) as kByte.
at::Tensor encode_soft_labels(const at::Tensor& logits, CacheFormat format, double temperature);

// One rank's shard of the pass. A shard in progress lives under "<name>.partial" with a per-slice
// completion flag flushed after every write, so a pass killed at any point resumes where it
// stopped; a partial shard that is unreadable or was made from other files is started over.
class CacheShardWriter {
 public:
  // What the shard is: its place in the pass, its slices and how its values are stored.
  struct ShardSpec {
    int rank = 0, world = 1;
    int64_t first_row = 0;            // first cache row of this shard
    std::vector<int64_t> store_rows;  // prepared-store row of each of the shard's slices
    int64_t classes = 2, height = 0, width = 0;
    CacheFormat format = CacheFormat::kLogitsF16;
    int compression = 4;  // deflate level (0: none); shuffle when > 0
  };
  CacheShardWriter(const std::string& dir, ShardSpec spec, CacheProvenance provenance);
  ~CacheShardWriter();
  CacheShardWriter(const CacheShardWriter&) = delete;
  CacheShardWriter& operator=(const CacheShardWriter&) = delete;

  int64_t rows() const { return static_cast<int64_t>(spec_.store_rows.size()); }
  bool done(int64_t local_row) const { return done_[static_cast<size_t>(local_row)] != 0; }
  int64_t done_count() const;

  // Writes rows [local_first, local_first + values.size(0)) (kHalf for logits-f16, kByte for
  // probs-u8), records them as done and flushes the file.
  void write(int64_t local_first, const at::Tensor& values);
  // Once every row is done: closes the file and renames it to its final name.
  void finish();

 private:
  bool open_existing(const std::string& path, bool final_file);
  void create();
  std::string dir_, final_path_, partial_path_;
  ShardSpec spec_;
  CacheProvenance provenance_;
  std::unique_ptr<h5::Handle> file_;  // data/hdf5_util.h
  std::vector<uint8_t> done_;
  bool finished_ = false;
};

// Writes DIR/soft_labels.h5 (atomically) over the finished shards of a pass of `world` ranks.
void write_cache_master(const std::string& dir, int world);

// Reads a finished cache. Thread-safe reads (HDF5 under the library lock, decoding outside it).
class SoftLabelCache {
 public:
  explicit SoftLabelCache(const std::string& dir);
  ~SoftLabelCache();
  SoftLabelCache(const SoftLabelCache&) = delete;
  SoftLabelCache& operator=(const SoftLabelCache&) = delete;

  const std::string& dir() const { return dir_; }
  const CacheProvenance& provenance() const { return provenance_; }
  CacheFormat format() const { return format_; }
  int64_t rows() const { return static_cast<int64_t>(store_rows_.size()); }
  int64_t classes() const { return classes_; }
  int64_t height() const { return height_; }
  int64_t width() const { return width_; }
  int shards() const { return static_cast<int>(shards_.size()); }
  // probs-u8: the temperature the probabilities were computed at; logits-f16: 0 (chosen when read).
  double temperature() const { return temperature_; }
  const std::vector<int64_t>& store_rows() const { return store_rows_; }
  // The cache row holding prepared-store row `store_row`, or -1.
  int64_t cache_row(int64_t store_row) const;
  // The store rows among `wanted` that the cache does not hold.
  std::vector<int64_t> missing(const std::vector<int64_t>& wanted) const;

  // Cache row `row` as stored: [C,H,W] kHalf or kByte. Throws kdseg::Error naming the shard
  // and slice when its bytes do not match the checksum the pass recorded.
  at::Tensor stored(int64_t row) const;
  // The teacher's probabilities [C,H,W] float32 for prepared-store row `store_row`:
  // softmax(logits / temperature) for logits-f16, dequantised for probs-u8 (where the
  // temperature was fixed by the pass and `temperature` must be 0 or equal to it).
  at::Tensor probabilities(int64_t store_row, double temperature) const;

  // Throws kdseg::Error listing every difference when the cache was not made from these files.
  void check_provenance(const std::string& store_path, const std::string& teacher_path = "") const;

  struct ShardInfo;

 private:
  // Opens rank `rank`'s shard and checks it against the master read so far.
  void open_shard(int rank, int world, const std::string& master_path);
  void index_store_rows(const std::string& master_path);
  std::string dir_;
  CacheProvenance provenance_;
  CacheFormat format_ = CacheFormat::kLogitsF16;
  double temperature_ = 0;  // probs-u8: the pass's T
  int64_t classes_ = 0, height_ = 0, width_ = 0;
  std::vector<int64_t> store_rows_;
  std::vector<int64_t> row_of_store_;  // store row -> cache row or -1
  std::vector<std::unique_ptr<ShardInfo>> shards_;
  std::vector<std::pair<int, int64_t>> location_;  // cache row -> (shard, local row)
};

// `kdseg cache inspect`: shape, format, provenance, bytes on disk, compression.
struct CacheInspection {
  std::vector<int64_t> shape;  // N, C, H, W
  CacheProvenance provenance;
  int shards = 0;
  int64_t stored_bytes = 0;  // the shards' compressed data
  int64_t raw_bytes = 0;     // N*C*H*W * element size
  int64_t file_bytes = 0;    // every file of the cache on disk
  double bytes_per_voxel_per_class() const;
  double compression_ratio() const;
};
CacheInspection inspect_cache(const std::string& dir);

// `kdseg cache verify`: every slice present, finite (logits) or summing to 255 (probs),
// checksums, shards consistent with the master, provenance against the given files.
// Returns the problems found (empty: the cache is sound).
std::vector<std::string> verify_cache(const std::string& dir, const std::string& store_path = "",
                                      const std::string& teacher_path = "");

// What `kdseg distill` uses a cache with (student/trainer.cpp), for check_cache_for_training.
struct CacheUse {
  std::string store_path;    // the prepared store the cache must have been made from
  std::string teacher_path;  // the teacher it must have been made by; not checked when empty
  std::string task_name;     // named when the class count differs
  int64_t classes = 2;       // the task's
  double temperature = 1;    // distill's --temperature: a probs-u8 cache must hold probabilities at it
  int fold = 0;              // the validation fold, named when training slices are missing
};
// Throws kdseg::Error naming the cache folder unless the cache was made from `store` (opened
// from use.store_path) and the teacher, holds the task's classes at the store's slice size (and
// probs-u8 at use.temperature), and has soft labels for every row of `train_rows` (the first 20
// missing are listed with their case id and slice index).
void check_cache_for_training(const SoftLabelCache& cache, const PreparedStore& store,
                              const std::vector<int64_t>& train_rows, const CacheUse& use);

}  // namespace kdseg::data
