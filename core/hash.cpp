#include "core/hash.h"

#include <cstdio>
#include <fstream>
#include <vector>

#include "core/error.h"

namespace kdseg {

std::string hex64(uint64_t value) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(value));
  return hex;
}

std::string hash_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  KDSEG_CHECK(static_cast<bool>(in), path, ": cannot open for reading");
  std::vector<char> buffer(1 << 20);
  uint64_t h = kFnvOffset;
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    h = fnv1a(h, buffer.data(), static_cast<size_t>(in.gcount()));
  }
  KDSEG_CHECK(in.eof(), path, ": read error");
  return hex64(h);
}

}  // namespace kdseg
