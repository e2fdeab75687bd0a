// PNG images through libpng: 8-bit RGB in, the file's bytes out (for report/figures/ and for the
// report's data URIs), and the bytes back to pixels (for tests). No LibTorch here.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kdseg::eval {

struct RgbImage {
  int width = 0, height = 0;
  std::vector<uint8_t> pixels;  // row-major, 3 bytes (R, G, B) per pixel
};

// The PNG bytes of `image` (8-bit RGB, no interlacing). Throws kdseg::Error when libpng fails.
std::string encode_png(const RgbImage& image);

// `bytes` decoded to 8-bit RGB (any PNG libpng reads: palette, grey and alpha are converted).
// Throws kdseg::Error naming `what` when they are not a PNG.
RgbImage decode_png(const std::string& bytes, const std::string& what = "PNG data");

// Base64 of `bytes` (RFC 4648, with padding), for data: URIs.
std::string base64(const std::string& bytes);

}  // namespace kdseg::eval
