// libpng decoding from memory. libpng reports errors by longjmp; the frames it may jump over
// (libpng's own and read_callback) hold no C++ objects, and everything the decode owns lives in
// DecodeState in the caller's frame, so the jump is safe and the error becomes a UsageError.
#include "data/png_decode.h"

#include <png.h>

#include <csetjmp>
#include <cstring>

#include "core/check.h"

namespace mt {
namespace {

// Larger images are rejected before any allocation (a corrupt header cannot exhaust memory).
constexpr png_uint_32 kMaxSide = 16384;

struct DecodeState {
  const uint8_t* data = nullptr;
  size_t size = 0, offset = 0;
  char error[256] = {0};
  int height = 0, width = 0, channels = 0;
  std::vector<uint8_t> raw;  // [height, width, channels] after libpng's transforms
  std::vector<png_bytep> rows;
};

void read_callback(png_structp png, png_bytep out, png_size_t length) {
  auto* st = static_cast<DecodeState*>(png_get_io_ptr(png));
  if (length > st->size - st->offset) png_error(png, "data ends early (truncated PNG)");
  std::memcpy(out, st->data + st->offset, length);
  st->offset += length;
}

void error_callback(png_structp png, png_const_charp message) {
  auto* st = static_cast<DecodeState*>(png_get_error_ptr(png));
  std::strncpy(st->error, message, sizeof(st->error) - 1);
  png_longjmp(png, 1);
}

void warning_callback(png_structp, png_const_charp) {}

// Runs libpng over st->data into 8-bit gray (`rgb` false) or RGB, either maybe with an alpha
// channel; on failure returns false with st->error set.
bool decode(DecodeState* st, bool rgb) {
  png_structp png =
      png_create_read_struct(PNG_LIBPNG_VER_STRING, st, error_callback, warning_callback);
  if (png == nullptr) {
    std::strncpy(st->error, "out of memory", sizeof(st->error) - 1);
    return false;
  }
  png_infop info = png_create_info_struct(png);
  if (info == nullptr || setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  png_set_user_limits(png, kMaxSide, kMaxSide);
  png_set_read_fn(png, st, read_callback);
  png_read_info(png, info);
  png_set_expand(png);
  png_set_scale_16(png);
  const int color = png_get_color_type(png, info);
  const bool colour = (color & PNG_COLOR_MASK_COLOR) != 0;
  if (!rgb && colour) png_set_rgb_to_gray(png, 1, -1, -1);
  if (rgb && !colour) png_set_gray_to_rgb(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  st->height = static_cast<int>(png_get_image_height(png, info));
  st->width = static_cast<int>(png_get_image_width(png, info));
  st->channels = png_get_channels(png, info);
  const size_t row_bytes = png_get_rowbytes(png, info);
  if (row_bytes != static_cast<size_t>(st->width) * st->channels)
    png_error(png, "unexpected row size after conversion to 8 bits");
  st->raw.resize(row_bytes * st->height);
  st->rows.resize(st->height);
  for (int y = 0; y < st->height; ++y) st->rows[y] = st->raw.data() + y * row_bytes;
  png_read_image(png, st->rows.data());
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  return true;
}

// Decodes `data` (signature and libpng errors become UsageErrors naming `what`) and composites
// its alpha channel, if any, on white: `colours` (1 gray, 3 RGB) interleaved channels per pixel.
std::vector<uint8_t> decode_checked(const uint8_t* data, size_t size, const std::string& what,
                                    int colours, int* height, int* width) {
  MT_REQUIRE(size >= 8 && png_sig_cmp(data, 0, 8) == 0, "'", what,
             "' is not a PNG image (bad signature); replace the file with a valid PNG");
  DecodeState st;
  st.data = data;
  st.size = size;
  MT_REQUIRE(decode(&st, colours == 3), "'", what, "' is a corrupt PNG image (libpng: ", st.error,
             "); replace the file with a valid PNG");
  MT_CHECK(st.channels == colours || st.channels == colours + 1, "unexpected channel count ",
           st.channels);
  *height = st.height;
  *width = st.width;
  if (st.channels == colours) return std::move(st.raw);
  const size_t n = static_cast<size_t>(st.height) * st.width;
  std::vector<uint8_t> out(n * colours);
  for (size_t i = 0; i < n; ++i) {
    const unsigned a = st.raw[(i + 1) * st.channels - 1];
    for (int c = 0; c < colours; ++c) {
      const unsigned v = st.raw[i * st.channels + c];
      out[i * colours + c] = static_cast<uint8_t>((v * a + 255 * (255 - a) + 127) / 255);
    }
  }
  return out;
}

}  // namespace

GrayImage decode_png_gray(const uint8_t* data, size_t size, const std::string& what) {
  GrayImage img;
  img.pixels = decode_checked(data, size, what, 1, &img.height, &img.width);
  return img;
}

RgbImage decode_png_rgb(const uint8_t* data, size_t size, const std::string& what) {
  RgbImage img;
  img.pixels = decode_checked(data, size, what, 3, &img.height, &img.width);
  return img;
}

}  // namespace mt
