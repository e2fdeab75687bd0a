// Content hashes for provenance: FNV-1a (64 bit) over bytes and files, printed as 16 hex digits.
// Not cryptographic: they tell files apart, they do not defend against tampering.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace kdseg {

constexpr uint64_t kFnvOffset = 0xCBF29CE484222325ULL;

inline uint64_t fnv1a(uint64_t h, const void* data, size_t bytes) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 0x100000001B3ULL;
  return h;
}

// "0123456789abcdef".
std::string hex64(uint64_t value);

// The FNV-1a hash of a whole file, as hex64; throws kdseg::Error naming the file when it cannot
// be read.
std::string hash_file(const std::string& path);

}  // namespace kdseg
