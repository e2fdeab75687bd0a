#include "data/deflate.h"

#include <libdeflate.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <memory>

#include "core/error.h"

namespace kdseg::data {
namespace {

struct CompressorDeleter {
  void operator()(libdeflate_compressor* c) const { libdeflate_free_compressor(c); }
};
struct DecompressorDeleter {
  void operator()(libdeflate_decompressor* d) const { libdeflate_free_decompressor(d); }
};

// One compressor per thread and level (allocating one costs more than a slice's compression).
libdeflate_compressor* compressor(int level) {
  thread_local std::unique_ptr<libdeflate_compressor, CompressorDeleter> held[13];
  auto& slot = held[level];
  if (!slot) slot.reset(libdeflate_alloc_compressor(level));
  KDSEG_CHECK(slot != nullptr, "libdeflate could not allocate a compressor of level ", level);
  return slot.get();
}

libdeflate_decompressor* decompressor() {
  thread_local std::unique_ptr<libdeflate_decompressor, DecompressorDeleter> held;
  if (!held) held.reset(libdeflate_alloc_decompressor());
  KDSEG_CHECK(held != nullptr, "libdeflate could not allocate a decompressor");
  return held.get();
}

// HDF5's shuffle filter: byte b of element i goes to b * n + i.
void shuffle(const uint8_t* in, uint8_t* out, size_t n, size_t size) {
  for (size_t i = 0; i < n; ++i) {
    for (size_t b = 0; b < size; ++b) out[b * n + i] = in[i * size + b];
  }
}
// The byte loops above, specialised for the widths the store uses so that they vectorise.
void shuffle_any(const uint8_t* in, uint8_t* out, size_t bytes, size_t size) {
  if (size == 2) return shuffle(in, out, bytes / 2, 2);
  if (size == 4) return shuffle(in, out, bytes / 4, 4);
  shuffle(in, out, bytes / size, size);
}

bool is_gzip(const uint8_t* in, size_t in_bytes) { return in_bytes >= 2 && in[0] == 0x1f && in[1] == 0x8b; }

// zlib's words for a failed check, as a message says them.
std::string inflate_problem(const z_stream& z, int code) {
  const std::string said = z.msg != nullptr ? z.msg : zError(code);
  if (said == "incorrect data check") return "damaged gzip data: the CRC-32 does not match the data";
  if (said == "incorrect length check") return "damaged gzip data: the length in the trailer does not match the data";
  return "damaged gzip data (" + said + ")";
}

struct Inflater {
  z_stream z{};
  bool ok = inflateInit2(&z, 16 + MAX_WBITS) == Z_OK;  // gzip members only
  ~Inflater() {
    if (ok) inflateEnd(&z);
  }
};

constexpr size_t kMaxZlibCall = std::numeric_limits<uInt>::max();

// One gzip member at `in` inflated to its end: bytes below `out_bytes` (counted by `total`) into
// `out`, later ones into `spill` only to reach the trailer's checks. Sets `used` to the member's
// compressed size; returns "" or the problem.
std::string inflate_member(z_stream& z, const uint8_t* in, size_t in_bytes, uint8_t* out, size_t out_bytes,
                           std::vector<uint8_t>& spill, uint64_t& total, size_t& used) {
  KDSEG_CHECK(inflateReset(&z) == Z_OK, "zlib could not reset its inflater");
  z.avail_in = 0;
  size_t fed = 0;
  while (true) {
    if (z.avail_in == 0 && fed < in_bytes) {
      z.next_in = const_cast<Bytef*>(in + fed);
      z.avail_in = static_cast<uInt>(std::min(in_bytes - fed, kMaxZlibCall));
      fed += z.avail_in;
    }
    const bool wanted = total < out_bytes;
    z.next_out = wanted ? out + total : spill.data();
    z.avail_out = static_cast<uInt>(std::min(wanted ? out_bytes - total : spill.size(), kMaxZlibCall));
    const uInt room = z.avail_out;
    const int code = inflate(&z, Z_NO_FLUSH);
    total += room - z.avail_out;
    if (code == Z_STREAM_END) break;
    // No progress with every byte given: the member ends before its trailer.
    if (code == Z_BUF_ERROR && fed == in_bytes && z.avail_in == 0) {
      return "truncated file: its gzip data end after " + std::to_string(total) + " bytes, before the end of a member";
    }
    if (code != Z_OK && code != Z_BUF_ERROR) return inflate_problem(z, code);
  }
  used = fed - z.avail_in;
  return "";
}

}  // namespace

std::vector<uint8_t> encode_chunk(const void* data, size_t bytes, size_t element_size, int level) {
  KDSEG_CHECK(level >= 0 && level <= 12, "deflate level must be 0-12, got ", level);
  const auto* in = static_cast<const uint8_t*>(data);
  if (level == 0) return std::vector<uint8_t>(in, in + bytes);
  // Scratch kept by each thread: a slice's buffers are reused instead of faulted in anew.
  thread_local std::vector<uint8_t> shuffled, scratch;
  if (element_size > 1) {
    if (shuffled.size() < bytes) shuffled.resize(bytes);
    shuffle_any(in, shuffled.data(), bytes, element_size);
    in = shuffled.data();
  }
  libdeflate_compressor* c = compressor(level);
  const size_t bound = libdeflate_zlib_compress_bound(c, bytes);
  if (scratch.size() < bound) scratch.resize(bound);
  const size_t size = libdeflate_zlib_compress(c, in, bytes, scratch.data(), bound);
  KDSEG_CHECK(size > 0, "libdeflate could not compress a chunk of ", bytes, " bytes");
  return std::vector<uint8_t>(scratch.begin(), scratch.begin() + static_cast<std::ptrdiff_t>(size));
}

std::vector<uint8_t> gzip_member(const void* data, size_t bytes, int level) {
  KDSEG_CHECK(level >= 1 && level <= 12, "gzip level must be 1-12, got ", level);
  libdeflate_compressor* c = compressor(level);
  std::vector<uint8_t> out(libdeflate_gzip_compress_bound(c, bytes));
  const size_t size = libdeflate_gzip_compress(c, data, bytes, out.data(), out.size());
  KDSEG_CHECK(size > 0, "libdeflate could not compress ", bytes, " bytes");
  out.resize(size);
  return out;
}

bool gunzip_exact(const uint8_t* in, size_t in_bytes, uint8_t* out, size_t out_bytes) {
  size_t used = 0, written = 0;
  // Members one after another (bgzip and concatenated files have several).
  while (used < in_bytes) {
    size_t in_used = 0, out_got = 0;
    const libdeflate_result r = libdeflate_gzip_decompress_ex(decompressor(), in + used, in_bytes - used, out + written,
                                                              out_bytes - written, &in_used, &out_got);
    if (r != LIBDEFLATE_SUCCESS) return false;
    used += in_used;
    written += out_got;
    if (written == out_bytes && used < in_bytes) return false;  // more data than the header says
  }
  return written == out_bytes;
}

std::string gunzip_prefix(const uint8_t* in, size_t in_bytes, uint8_t* out, size_t out_bytes) {
  if (!is_gzip(in, in_bytes)) {
    if (in_bytes < out_bytes) {
      return "truncated file: " + std::to_string(in_bytes) + " of " + std::to_string(out_bytes) +
             " bytes (not gzip data)";
    }
    std::memcpy(out, in, out_bytes);
    return "";
  }
  // The common case in one call; anything else member by member through zlib, which names the problem.
  if (gunzip_exact(in, in_bytes, out, out_bytes)) return "";
  Inflater inflater;
  KDSEG_CHECK(inflater.ok, "zlib could not allocate an inflater");
  std::vector<uint8_t> spill(size_t{1} << 16);
  uint64_t total = 0;
  size_t used = 0;
  while (used < in_bytes) {
    if (used > 0 && !is_gzip(in + used, in_bytes - used)) {
      if (std::all_of(in + used, in + in_bytes, [](uint8_t b) { return b == 0; })) break;
      return std::to_string(in_bytes - used) + " bytes after the end of its gzip data are neither gzip data nor zeros";
    }
    size_t member = 0;
    const std::string problem =
        inflate_member(inflater.z, in + used, in_bytes - used, out, out_bytes, spill, total, member);
    if (!problem.empty()) return problem;
    used += member;
  }
  if (total < out_bytes) {
    return "truncated file: its gzip data hold " + std::to_string(total) + " of the " + std::to_string(out_bytes) +
           " bytes its header promises";
  }
  return "";
}

}  // namespace kdseg::data
