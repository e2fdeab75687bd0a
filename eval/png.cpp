#include "eval/png.h"

#include <png.h>

#include <cstring>

#include "core/error.h"

namespace kdseg::eval {
namespace {

// libpng reports errors through a longjmp; these handlers turn them into messages that the
// caller throws once libpng has returned.
void on_error(png_structp png, png_const_charp message) {
  auto* text = static_cast<std::string*>(png_get_error_ptr(png));
  *text = message;
  png_longjmp(png, 1);
}
void on_warning(png_structp, png_const_charp) {}

void append_bytes(png_structp png, png_bytep data, png_size_t length) {
  auto* out = static_cast<std::string*>(png_get_io_ptr(png));
  out->append(reinterpret_cast<const char*>(data), length);
}
void flush_nothing(png_structp) {}

struct Reader {
  const std::string* bytes;
  size_t offset = 0;
};
void read_bytes(png_structp png, png_bytep data, png_size_t length) {
  auto* reader = static_cast<Reader*>(png_get_io_ptr(png));
  if (reader->offset + length > reader->bytes->size()) png_error(png, "truncated");
  std::memcpy(data, reader->bytes->data() + reader->offset, length);
  reader->offset += length;
}

}  // namespace

std::string encode_png(const RgbImage& image) {
  KDSEG_CHECK(image.width > 0 && image.height > 0 &&
                  image.pixels.size() == static_cast<size_t>(image.width) * static_cast<size_t>(image.height) * 3,
              "encode_png: ", image.width, "x", image.height, " RGB needs ", image.width * image.height * 3,
              " bytes, got ", image.pixels.size());
  std::string error, out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &error, on_error, on_warning);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  KDSEG_CHECK(png && info, "encode_png: libpng could not start");
  std::vector<png_const_bytep> rows(static_cast<size_t>(image.height));
  for (int y = 0; y < image.height; ++y)
    rows[static_cast<size_t>(y)] = &image.pixels[static_cast<size_t>(y) * image.width * 3];
  if (setjmp(png_jmpbuf(png)) == 0) {
    png_set_write_fn(png, &out, append_bytes, flush_nothing);
    png_set_IHDR(png, info, static_cast<png_uint_32>(image.width), static_cast<png_uint_32>(image.height), 8,
                 PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_set_compression_level(png, 6);
    png_write_info(png, info);
    png_write_rows(png, const_cast<png_bytepp>(rows.data()), static_cast<png_uint_32>(image.height));
    png_write_end(png, info);
  }
  png_destroy_write_struct(&png, &info);
  KDSEG_CHECK(error.empty(), "encode_png: libpng: ", error);
  return out;
}

RgbImage decode_png(const std::string& bytes, const std::string& what) {
  KDSEG_CHECK(bytes.size() >= 8 && png_sig_cmp(reinterpret_cast<png_const_bytep>(bytes.data()), 0, 8) == 0, what,
              ": not a PNG");
  std::string error;
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &error, on_error, on_warning);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  KDSEG_CHECK(png && info, "decode_png: libpng could not start");
  Reader reader{&bytes};
  RgbImage image;
  std::vector<png_bytep> rows;
  if (setjmp(png_jmpbuf(png)) == 0) {
    png_set_read_fn(png, &reader, read_bytes);
    png_read_info(png, info);
    // Whatever the file holds, 8-bit RGB comes out.
    png_set_expand(png);
    png_set_strip_16(png);
    png_set_strip_alpha(png);
    png_set_gray_to_rgb(png);
    png_read_update_info(png, info);
    image.width = static_cast<int>(png_get_image_width(png, info));
    image.height = static_cast<int>(png_get_image_height(png, info));
    image.pixels.resize(static_cast<size_t>(image.width) * static_cast<size_t>(image.height) * 3);
    for (int y = 0; y < image.height; ++y) rows.push_back(&image.pixels[static_cast<size_t>(y) * image.width * 3]);
    png_read_image(png, rows.data());
    png_read_end(png, nullptr);
  }
  png_destroy_read_struct(&png, &info, nullptr);
  KDSEG_CHECK(error.empty(), what, ": libpng: ", error);
  return image;
}

std::string base64(const std::string& bytes) {
  static const char kDigits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    const size_t n = std::min<size_t>(3, bytes.size() - i);
    uint32_t v = 0;
    for (size_t k = 0; k < 3; ++k) v = (v << 8) | (k < n ? static_cast<uint8_t>(bytes[i + k]) : 0u);
    for (size_t k = 0; k < 4; ++k) out += k <= n ? kDigits[(v >> (18 - 6 * k)) & 63] : '=';
  }
  return out;
}

}  // namespace kdseg::eval
