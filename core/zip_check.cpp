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
constexpr uint32_t kStored = 0, kDeflated = 8;

// The little-endian integer of `bytes` bytes at `p`, as zip stores every field.
uint64_t little_endian(const unsigned char* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

std::string hex32(uint32_t v) {
  char text[16];
  std::snprintf(text, sizeof text, "%08x", v);
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
  uint64_t ends_before = 0;  // where the end records start: the directory must end by then
  bool found = false;
};

// The end-of-central-directory record (and its zip64 form), the last one from the end whose
// comment fits in the file (bytes appended after it, as a copy may add, are tolerated as
// LibTorch's reader tolerates them).
Directory find_directory(const Reader& file) {
  Directory d;
  const uint64_t tail = std::min<uint64_t>(file.size(), kEndSize + 0xFFFF);
  std::vector<unsigned char> buf(tail);
  if (tail < kEndSize || !file.read(file.size() - tail, tail, buf.data())) return d;
  for (size_t i = tail - kEndSize + 1; i-- > 0;) {
    if (little_endian(&buf[i], 4) != kEndOfDirectory || i + kEndSize + little_endian(&buf[i + 20], 2) > tail) continue;
    const uint64_t end_at = file.size() - tail + i;
    d = {little_endian(&buf[i + 10], 2), little_endian(&buf[i + 12], 4), little_endian(&buf[i + 16], 4), end_at, true};
    unsigned char locator[kLocatorSize], end64[kZip64EndSize];
    if (end_at >= kLocatorSize && file.read(end_at - kLocatorSize, kLocatorSize, locator) &&
        little_endian(locator, 4) == kZip64Locator) {
      const uint64_t end64_at = little_endian(locator + 8, 8);
      if (end64_at < end_at && file.read(end64_at, kZip64EndSize, end64) && little_endian(end64, 4) == kZip64End)
        d = {little_endian(end64 + 32, 8), little_endian(end64 + 40, 8), little_endian(end64 + 48, 8), end64_at, true};
    }
    return d;
  }
  return d;
}

// Reads the central directory's records; a message instead when it is cut or malformed.
std::string read_directory(const Reader& file, const Directory& d, std::vector<Record>& records) {
  // The directory ends where the end records start; checked before anything is allocated, so a
  // damaged size or offset cannot ask for more memory than the file holds.
  if (d.offset > d.ends_before || d.size > d.ends_before - d.offset)
    return "its central directory (" + std::to_string(d.size) + " bytes at " + std::to_string(d.offset) +
           ") does not end before its end record at byte " + std::to_string(d.ends_before) +
           ": the file was cut short or its end damaged";
  std::vector<unsigned char> dir(static_cast<size_t>(d.size));
  file.read(d.offset, dir.size(), dir.data());
  size_t at = 0;
  for (uint64_t e = 0; e < d.entries; ++e) {
    if (at + kCentralSize > dir.size() || little_endian(&dir[at], 4) != kCentralHeader)
      return "its central directory is malformed at entry " + std::to_string(e);
    const unsigned char* h = &dir[at];
    const size_t name_len = little_endian(h + 28, 2), extra_len = little_endian(h + 30, 2),
                 comment_len = little_endian(h + 32, 2);
    if (at + kCentralSize + name_len + extra_len + comment_len > dir.size())
      return "its central directory is malformed at entry " + std::to_string(e);
    Record r;
    r.name.assign(reinterpret_cast<const char*>(h + kCentralSize), name_len);
    r.method = static_cast<uint32_t>(little_endian(h + 10, 2));
    r.crc = static_cast<uint32_t>(little_endian(h + 16, 4));
    r.compressed = little_endian(h + 20, 4);
    r.uncompressed = little_endian(h + 24, 4);
    r.local_offset = little_endian(h + 42, 4);
    // Sizes and offsets past 4 GiB live in the zip64 extra field, in this order, each only when
    // its 32-bit field is saturated.
    const unsigned char* extra = h + kCentralSize + name_len;
    for (size_t x = 0; x + 4 <= extra_len;) {
      const uint64_t id = little_endian(extra + x, 2), len = little_endian(extra + x + 2, 2);
      if (id == 1) {
        size_t f = x + 4;
        for (uint64_t* field : {&r.uncompressed, &r.compressed, &r.local_offset}) {
          if (*field != 0xFFFFFFFF) continue;
          if (f + 8 > x + 4 + len || f + 8 > extra_len) return "record " + r.name + " has a malformed zip64 field";
          *field = little_endian(extra + f, 8);
          f += 8;
        }
      }
      x += 4 + len;
    }
    records.push_back(std::move(r));
    at += kCentralSize + name_len + extra_len + comment_len;
  }
  if (at != dir.size())
    return "its central directory holds more than the " + std::to_string(d.entries) +
           " entries its end record counts: the end record is damaged";
  return "";
}

// The CRC-32 of a record's content: its bytes when stored, inflated when deflated (LibTorch
// deflates the TorchScript code it saves); a message instead when they run past the end of the
// file or do not inflate.
std::string record_crc(const Reader& file, const Record& r, uLong& crc) {
  unsigned char local[kLocalSize];
  if (!file.read(r.local_offset, kLocalSize, local) || little_endian(local, 4) != kLocalHeader)
    return "record " + r.name + " has no local header at byte " + std::to_string(r.local_offset);
  uint64_t at = r.local_offset + kLocalSize + little_endian(local + 26, 2) + little_endian(local + 28, 2);
  if (at > file.size() || r.compressed > file.size() - at)
    return "record " + r.name + " (" + std::to_string(r.compressed) + " bytes at " + std::to_string(at) +
           ") runs past the end of the " + std::to_string(file.size()) + "-byte file: the file was cut short";
  constexpr size_t kChunk = size_t{4} << 20;
  std::vector<unsigned char> in(static_cast<size_t>(std::min<uint64_t>(r.compressed, kChunk))), out;
  crc = crc32(0L, Z_NULL, 0);
  z_stream z{};
  if (r.method == kDeflated) {
    if (inflateInit2(&z, -MAX_WBITS) != Z_OK) return "record " + r.name + ": zlib cannot start inflating";
    out.resize(kChunk);
  }
  int status = Z_OK;
  for (uint64_t left = r.compressed; left > 0 && (status == Z_OK || status == Z_BUF_ERROR);) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(left, kChunk));
    file.read(at, n, in.data());
    at += n;
    left -= n;
    if (r.method == kStored) {
      crc = crc32(crc, in.data(), static_cast<uInt>(n));
      continue;
    }
    z.next_in = in.data();
    z.avail_in = static_cast<uInt>(n);
    do {  // until this piece is consumed and the output no longer fills
      z.next_out = out.data();
      z.avail_out = static_cast<uInt>(out.size());
      status = inflate(&z, Z_NO_FLUSH);
      crc = crc32(crc, out.data(), static_cast<uInt>(out.size() - z.avail_out));
    } while (status == Z_OK && (z.avail_in > 0 || z.avail_out == 0));
  }
  std::string damage;
  if (r.method == kDeflated) {
    if (status != Z_STREAM_END)
      damage = "record " + r.name + " does not inflate (" + (z.msg != nullptr ? z.msg : "its data end too early") +
               "): the file was changed or damaged after it was written";
    inflateEnd(&z);
  }
  return damage;
}

}  // namespace

ZipCheck check_zip(const std::string& path) {
  const Reader file(path);
  ZipCheck check;
  unsigned char magic[4] = {};
  const bool starts_as_zip = file.read(0, sizeof magic, magic) && little_endian(magic, 4) == kLocalHeader;
  const Directory directory = find_directory(file);
  check.is_zip = directory.found || starts_as_zip;
  if (!directory.found) {
    // A zip's start without its end: cut short. Anything else is not a zip; its reader says what.
    if (starts_as_zip) check.damage = "it has no end-of-central-directory record: the file was cut short";
    return check;
  }
  std::vector<Record> records;
  check.damage = read_directory(file, directory, records);
  check.records = static_cast<int64_t>(records.size());
  for (const Record& r : records) {
    if (!check.damage.empty()) break;
    if (r.method != kStored && r.method != kDeflated) {  // methods LibTorch never writes
      ++check.unchecked;
      continue;
    }
    uLong crc = 0;
    check.damage = record_crc(file, r, crc);
    if (check.damage.empty() && crc != r.crc)
      check.damage = "record " + r.name + " does not match its CRC-32 (recorded " + hex32(r.crc) + ", its bytes give " +
                     hex32(static_cast<uint32_t>(crc)) + "): the file was changed or damaged after it was written";
  }
  return check;
}

void check_zip_intact(const std::string& path, const char* what) {
  const std::string damage = check_zip(path).damage;
  KDSEG_CHECK(damage.empty(), path, ": ", damage, "; use an intact copy of the ", what);
}

}  // namespace kdseg
