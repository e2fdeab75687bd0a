#include "core/zip_check.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "core/error.h"

namespace kdseg {
namespace {

constexpr uint32_t kLocalHeader = 0x04034b50, kCentralHeader = 0x02014b50, kEndOfDirectory = 0x06054b50,
                   kZip64Locator = 0x07064b50, kZip64End = 0x06064b50;
constexpr size_t kEndSize = 22, kLocatorSize = 20, kZip64EndSize = 56, kCentralSize = 46, kLocalSize = 30;
constexpr uint32_t kStored = 0;

uint64_t le(const unsigned char* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

std::string hex32(uint64_t v) {
  char text[16];
  std::snprintf(text, sizeof text, "%08llx", static_cast<unsigned long long>(v));
  return text;
}

// The open file, read by offset; errors name it.
class Reader {
 public:
  explicit Reader(const std::string& path) : path_(path), fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
    KDSEG_CHECK(fd_ >= 0, path, ": cannot open (", std::strerror(errno), ")");
    struct stat st {};
    KDSEG_CHECK(::fstat(fd_, &st) == 0, path, ": cannot stat (", std::strerror(errno), ")");
    size_ = static_cast<uint64_t>(st.st_size);
  }
  ~Reader() { ::close(fd_); }
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  uint64_t size() const { return size_; }
  // `bytes` bytes at `offset`; false when they run past the end of the file.
  bool read(uint64_t offset, size_t bytes, unsigned char* out) const {
    if (offset > size_ || bytes > size_ - offset) return false;
    while (bytes > 0) {
      const ssize_t n = ::pread(fd_, out, bytes, static_cast<off_t>(offset));
      if (n < 0 && errno == EINTR) continue;
      KDSEG_CHECK(n > 0, path_, ": cannot read at byte ", offset, " (", n < 0 ? std::strerror(errno) : "end of file",
                  ")");
      out += n;
      offset += static_cast<uint64_t>(n);
      bytes -= static_cast<size_t>(n);
    }
    return true;
  }

 private:
  std::string path_;
  int fd_;
  uint64_t size_ = 0;
};

struct Record {
  std::string name;
  uint32_t method = 0, crc = 0;
  uint64_t compressed = 0, uncompressed = 0, local_offset = 0;
};

struct Directory {
  uint64_t entries = 0, size = 0, offset = 0;
  bool found = false;
};

// The end-of-central-directory record (and its zip64 form), searched for from the end.
Directory find_directory(const Reader& file) {
  Directory d;
  const uint64_t tail = std::min<uint64_t>(file.size(), kEndSize + 0xFFFF);
  std::vector<unsigned char> buf(tail);
  if (tail < kEndSize || !file.read(file.size() - tail, tail, buf.data())) return d;
  for (size_t i = tail - kEndSize + 1; i-- > 0;) {
    if (le(&buf[i], 4) != kEndOfDirectory || i + kEndSize + le(&buf[i + 20], 2) != tail) continue;
    d = {le(&buf[i + 10], 2), le(&buf[i + 12], 4), le(&buf[i + 16], 4), true};
    const uint64_t end_at = file.size() - tail + i;
    unsigned char locator[kLocatorSize], end64[kZip64EndSize];
    if (end_at >= kLocatorSize && file.read(end_at - kLocatorSize, kLocatorSize, locator) &&
        le(locator, 4) == kZip64Locator && file.read(le(locator + 8, 8), kZip64EndSize, end64) &&
        le(end64, 4) == kZip64End) {
      d = {le(end64 + 32, 8), le(end64 + 40, 8), le(end64 + 48, 8), true};
    }
    return d;
  }
  return d;
}

// Reads the central directory's records; a message instead when it is cut or malformed.
std::string read_directory(const Reader& file, const Directory& d, std::vector<Record>& records) {
  // Bounded by the file before anything is allocated: a stray end record could claim any size.
  if (d.offset > file.size() || d.size > file.size() - d.offset)
    return "its central directory (" + std::to_string(d.size) + " bytes at " + std::to_string(d.offset) +
           ") runs past the end of the " + std::to_string(file.size()) + "-byte file: the file was cut short";
  std::vector<unsigned char> dir(static_cast<size_t>(d.size));
  file.read(d.offset, dir.size(), dir.data());
  size_t at = 0;
  for (uint64_t e = 0; e < d.entries; ++e) {
    if (at + kCentralSize > dir.size() || le(&dir[at], 4) != kCentralHeader)
      return "its central directory is malformed at entry " + std::to_string(e);
    const unsigned char* h = &dir[at];
    const size_t name_len = le(h + 28, 2), extra_len = le(h + 30, 2), comment_len = le(h + 32, 2);
    if (at + kCentralSize + name_len + extra_len + comment_len > dir.size())
      return "its central directory is malformed at entry " + std::to_string(e);
    Record r;
    r.name.assign(reinterpret_cast<const char*>(h + kCentralSize), name_len);
    r.method = static_cast<uint32_t>(le(h + 10, 2));
    r.crc = static_cast<uint32_t>(le(h + 16, 4));
    r.compressed = le(h + 20, 4);
    r.uncompressed = le(h + 24, 4);
    r.local_offset = le(h + 42, 4);
    // Sizes and offsets past 4 GiB live in the zip64 extra field, in this order, each only when
    // its 32-bit field is saturated.
    const unsigned char* extra = h + kCentralSize + name_len;
    for (size_t x = 0; x + 4 <= extra_len;) {
      const uint64_t id = le(extra + x, 2), len = le(extra + x + 2, 2);
      if (id == 1) {
        size_t f = x + 4;
        for (uint64_t* field : {&r.uncompressed, &r.compressed, &r.local_offset}) {
          if (*field != 0xFFFFFFFF) continue;
          if (f + 8 > x + 4 + len || f + 8 > extra_len) return "record " + r.name + " has a malformed zip64 field";
          *field = le(extra + f, 8);
          f += 8;
        }
      }
      x += 4 + len;
    }
    records.push_back(std::move(r));
    at += kCentralSize + name_len + extra_len + comment_len;
  }
  return "";
}

// The CRC-32 of a stored record's bytes; a message instead when they run past the end of the
// file.
std::string record_crc(const Reader& file, const Record& r, uLong& crc) {
  unsigned char local[kLocalSize];
  if (!file.read(r.local_offset, kLocalSize, local) || le(local, 4) != kLocalHeader)
    return "record " + r.name + " has no local header at byte " + std::to_string(r.local_offset);
  uint64_t at = r.local_offset + kLocalSize + le(local + 26, 2) + le(local + 28, 2);
  if (at > file.size() || r.compressed > file.size() - at)
    return "record " + r.name + " (" + std::to_string(r.compressed) + " bytes at " + std::to_string(at) +
           ") runs past the end of the " + std::to_string(file.size()) + "-byte file: the file was cut short";
  constexpr size_t kChunk = size_t{4} << 20;
  std::vector<unsigned char> buf(static_cast<size_t>(std::min<uint64_t>(r.compressed, kChunk)));
  crc = crc32(0L, Z_NULL, 0);
  for (uint64_t left = r.compressed; left > 0;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(left, kChunk));
    file.read(at, n, buf.data());
    crc = crc32(crc, buf.data(), static_cast<uInt>(n));
    at += n;
    left -= n;
  }
  return "";
}

}  // namespace

std::string zip_damage(const std::string& path, bool* is_zip) {
  const Reader file(path);
  const Directory directory = find_directory(file);
  if (is_zip != nullptr) *is_zip = directory.found;
  if (!directory.found) return "";  // not a zip archive: its reader says what it is not
  std::vector<Record> records;
  if (std::string damage = read_directory(file, directory, records); !damage.empty()) return damage;
  for (const Record& r : records) {
    if (r.method != kStored) continue;  // LibTorch writes stored records only; others are not checked
    uLong crc = 0;
    if (std::string damage = record_crc(file, r, crc); !damage.empty()) return damage;
    if (crc != r.crc)
      return "record " + r.name + " does not match its CRC-32 (recorded " + hex32(r.crc) + ", its bytes give " +
             hex32(crc) + "): the file was changed or damaged after it was written";
  }
  return "";
}

void check_zip_intact(const std::string& path, const char* what) {
  const std::string damage = zip_damage(path);
  KDSEG_CHECK(damage.empty(), path, ": ", damage, "; use an intact copy of the ", what);
}

}  // namespace kdseg
