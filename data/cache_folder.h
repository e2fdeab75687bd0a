// The soft-label cache's folder: the names of its files and the lifecycle of the pass that writes
// it (`kdseg precompute`, teacher/precompute.cpp). The files' contents are in
// data/soft_label_cache.h.
//
//   DIR/soft_labels.h5                   the master, written last: a folder with one holds a
//                                        finished cache, a folder without one a pass to resume
//   DIR/shard-RRRRR-of-WWWWW.h5          rank R's finished shard of a pass of W ranks
//   DIR/shard-RRRRR-of-WWWWW.h5.partial  a shard being written (resumed by the next pass)
//   DIR/.kdseg-replacement/              the shards of a --force pass replacing a finished cache;
//                                        moved into DIR only once all are finished, so that the
//                                        old cache stays readable until then
#pragma once

#include <optional>
#include <string>

namespace kdseg::data {

inline constexpr const char kCacheMasterName[] = "soft_labels.h5";
inline constexpr const char kPartialShardSuffix[] = ".partial";

// "shard-RRRRR-of-WWWWW.h5"
std::string shard_file_name(int rank, int world);

struct ShardFileName {
  int rank = 0, world = 0;
  bool partial = false;  // "<shard_file_name>.partial"
};
// A shard's file name as shard_file_name writes it, with or without ".partial"; nullopt for any
// other name.
std::optional<ShardFileName> parse_shard_file_name(const std::string& name);

class CacheFolder {
 public:
  explicit CacheFolder(std::string dir);

  const std::string& dir() const { return dir_; }
  std::string master_path() const;
  std::string shard_path(int rank, int world) const;
  std::string staging_dir() const;
  // The master is there.
  bool finished() const;

  // The folder a pass writes its shards to: DIR, or the staging folder when a finished cache is
  // there (a --force pass replacing it).
  std::string pass_dir() const;
  // Run by one process (rank 0) before a pass of `world` ranks, the others waiting: refuses to
  // replace a finished cache without `force`, completes a replacement interrupted while its
  // shards were being moved in, creates pass_dir(), and removes the shards left there by a pass
  // with another number of ranks (they cannot be resumed). Errors name the file or folder.
  void prepare_pass(int world, bool force) const;
  // Run by one process once every shard of the pass is finished: moves staged shards into DIR
  // (promote_staged) and writes the master.
  void finish_pass(int world) const;
  // Replaces DIR's shards with the staged ones. Crash-safe with the master removed first: a
  // folder without a master is a pass to resume, which starts by finishing this.
  void promote_staged() const;

 private:
  std::string dir_;
};

}  // namespace kdseg::data
