#include "data/deflate.h"

#include <libdeflate.h>

#include <cstring>
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

}  // namespace kdseg::data
