#include "data/cache_folder.h"

#include <charconv>
#include <cstdio>
#include <filesystem>
#include <string_view>
#include <system_error>

#include "core/error.h"
#include "core/log.h"
#include "data/soft_label_cache.h"

namespace kdseg::data {
namespace fs = std::filesystem;

namespace {

constexpr const char kStagingName[] = ".kdseg-replacement";

bool read_literal(const std::string& text, size_t& pos, std::string_view literal) {
  if (text.compare(pos, literal.size(), literal) != 0) return false;
  pos += literal.size();
  return true;
}

bool read_number(const std::string& text, size_t& pos, int& value) {
  const char* first = text.data() + pos;
  const auto [end, ec] = std::from_chars(first, text.data() + text.size(), value);
  if (ec != std::errc() || end == first) return false;
  pos += static_cast<size_t>(end - first);
  return true;
}

}  // namespace

std::string shard_file_name(int rank, int world) {
  char name[64];
  std::snprintf(name, sizeof name, "shard-%05d-of-%05d.h5", rank, world);
  return name;
}

std::optional<ShardFileName> parse_shard_file_name(const std::string& name) {
  ShardFileName out;
  size_t pos = 0;
  if (!read_literal(name, pos, "shard-") || !read_number(name, pos, out.rank) || !read_literal(name, pos, "-of-") ||
      !read_number(name, pos, out.world) || !read_literal(name, pos, ".h5")) {
    return std::nullopt;
  }
  // Only the spelling shard_file_name writes (zero-padded, unsigned).
  if (out.rank < 0 || out.world < 1 || name.compare(0, pos, shard_file_name(out.rank, out.world)) != 0) {
    return std::nullopt;
  }
  out.partial = read_literal(name, pos, kPartialShardSuffix);
  if (pos != name.size()) return std::nullopt;
  return out;
}

CacheFolder::CacheFolder(std::string dir) : dir_(std::move(dir)) {}

std::string CacheFolder::master_path() const { return (fs::path(dir_) / kCacheMasterName).string(); }

std::string CacheFolder::shard_path(int rank, int world) const {
  return (fs::path(dir_) / shard_file_name(rank, world)).string();
}

std::string CacheFolder::staging_dir() const { return (fs::path(dir_) / kStagingName).string(); }

bool CacheFolder::finished() const { return fs::exists(master_path()); }

std::string CacheFolder::pass_dir() const { return finished() ? staging_dir() : dir_; }

void CacheFolder::prepare_pass(int world, bool force) const {
  const bool replacing = finished();
  KDSEG_CHECK(!replacing || force, master_path(), ": a finished cache is already there; it is never overwritten ",
              "without --force (or choose another --output)");
  if (!replacing && fs::is_directory(staging_dir())) promote_staged();  // an interrupted replacement
  const fs::path work = replacing ? staging_dir() : dir_;
  std::error_code ec;
  fs::create_directories(work, ec);
  KDSEG_CHECK(!ec && fs::is_directory(work), dir_,
              ": cannot create the cache folder: ", ec ? ec.message() : "a file of that name exists");
  for (const auto& entry : fs::directory_iterator(work)) {
    const auto shard = parse_shard_file_name(entry.path().filename().string());
    if (shard && shard->world != world) {
      log::warn("{}: left by a pass with another number of ranks; removed", entry.path().string());
      fs::remove(entry.path());
    }
  }
}

void CacheFolder::finish_pass(int world) const {
  // A replacement: the old cache stayed readable until now.
  if (fs::is_directory(staging_dir())) promote_staged();
  write_cache_master(dir_, world);
}

void CacheFolder::promote_staged() const {
  const fs::path dir(dir_), staged(staging_dir());
  fs::remove(master_path());
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (parse_shard_file_name(name) && !fs::exists(staged / name)) fs::remove(entry.path());
  }
  for (const auto& entry : fs::directory_iterator(staged)) fs::rename(entry.path(), dir / entry.path().filename());
  fs::remove(staged);
}

}  // namespace kdseg::data
