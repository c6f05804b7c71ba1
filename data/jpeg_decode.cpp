// libjpeg decoding from memory. libjpeg reports errors (and, here, warnings) through the error
// manager; ours longjmps back to decode(), whose frame and libjpeg's own hold no C++ objects:
// everything the decode owns lives in DecodeState in the caller's frame, so the jump is safe.
#include "data/jpeg_decode.h"

#include <cstdio>
// jpeglib.h needs size_t and FILE declared before it.
#include <jpeglib.h>

#include <csetjmp>
#include <cstring>

#include "core/check.h"

namespace mt {
namespace {

// Larger images are rejected before any allocation (a corrupt header cannot exhaust memory).
constexpr JDIMENSION kMaxSide = 16384;

struct ErrorManager {
  jpeg_error_mgr pub;  // first member: libjpeg sees an ErrorManager* as a jpeg_error_mgr*
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX] = {0};
};

struct DecodeState {
  const uint8_t* data = nullptr;
  size_t size = 0;
  jpeg_decompress_struct cinfo{};  // zeroed: jpeg_destroy_decompress is safe before creation
  ErrorManager err;
  int height = 0, width = 0, components = 0;
  bool cmyk = false, adobe_inverted = false, too_large = false;
  std::vector<uint8_t> raw;  // [height, width, components] as libjpeg outputs them
};

[[noreturn]] void fail(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

void error_exit(j_common_ptr cinfo) { fail(cinfo); }

// Level -1 is a warning (corrupt or truncated data that libjpeg would patch over): a failure
// here. Levels >= 0 are trace messages, ignored.
void emit_message(j_common_ptr cinfo, int msg_level) {
  if (msg_level < 0) fail(cinfo);
}

void output_message(j_common_ptr) {}

// Runs libjpeg over st->data; on failure returns false with st->err.message set.
bool decode(DecodeState* st) {
  jpeg_decompress_struct* cinfo = &st->cinfo;
  cinfo->err = jpeg_std_error(&st->err.pub);
  st->err.pub.error_exit = error_exit;
  st->err.pub.emit_message = emit_message;
  st->err.pub.output_message = output_message;
  if (setjmp(st->err.jump)) {
    jpeg_destroy_decompress(cinfo);
    return false;
  }
  jpeg_create_decompress(cinfo);
  jpeg_mem_src(cinfo, st->data, static_cast<unsigned long>(st->size));
  jpeg_read_header(cinfo, TRUE);
  if (cinfo->image_width > kMaxSide || cinfo->image_height > kMaxSide) {
    st->too_large = true;
    st->width = static_cast<int>(cinfo->image_width);
    st->height = static_cast<int>(cinfo->image_height);
    jpeg_destroy_decompress(cinfo);
    return false;
  }
  switch (cinfo->jpeg_color_space) {
    case JCS_GRAYSCALE:
      cinfo->out_color_space = JCS_GRAYSCALE;
      break;
    case JCS_CMYK:
    case JCS_YCCK:
      cinfo->out_color_space = JCS_CMYK;
      st->cmyk = true;
      st->adobe_inverted = cinfo->saw_Adobe_marker != 0;
      break;
    case JCS_RGB:
    case JCS_YCbCr:
      cinfo->out_color_space = JCS_RGB;
      break;
    default:
      std::snprintf(st->err.message, sizeof(st->err.message),
                    "unsupported colour space with %d components", cinfo->num_components);
      jpeg_destroy_decompress(cinfo);
      return false;
  }
  jpeg_start_decompress(cinfo);
  st->height = static_cast<int>(cinfo->output_height);
  st->width = static_cast<int>(cinfo->output_width);
  st->components = cinfo->output_components;
  const size_t row_bytes = static_cast<size_t>(st->width) * st->components;
  st->raw.resize(row_bytes * st->height);
  while (cinfo->output_scanline < cinfo->output_height) {
    JSAMPROW row = st->raw.data() + cinfo->output_scanline * row_bytes;
    jpeg_read_scanlines(cinfo, &row, 1);
  }
  jpeg_finish_decompress(cinfo);
  jpeg_destroy_decompress(cinfo);
  return true;
}

}  // namespace

RgbImage decode_jpeg_rgb(const uint8_t* data, size_t size, const std::string& what) {
  DecodeState st;
  st.data = data;
  st.size = size;
  const bool ok = decode(&st);
  MT_REQUIRE(!st.too_large, "'", what, "' is a JPEG of ", st.width, "x", st.height,
             " pixels, larger than the limit of ", kMaxSide, " per side; shrink or replace it");
  MT_REQUIRE(ok, "'", what, "' is a corrupt JPEG (libjpeg: ", st.err.message,
             "); replace the file with a valid JPEG");
  const int expected = st.cmyk ? 4 : (st.components == 1 ? 1 : 3);
  MT_CHECK(st.components == expected, "unexpected component count ", st.components);
  RgbImage img;
  img.height = st.height;
  img.width = st.width;
  const size_t n = static_cast<size_t>(st.height) * st.width;
  if (st.components == 3) {
    img.pixels = std::move(st.raw);
  } else if (st.components == 1) {
    img.pixels.resize(3 * n);
    for (size_t i = 0; i < n; ++i)
      img.pixels[3 * i] = img.pixels[3 * i + 1] = img.pixels[3 * i + 2] = st.raw[i];
  } else {
    img.pixels.resize(3 * n);
    for (size_t i = 0; i < n; ++i) {
      const uint8_t* p = &st.raw[4 * i];
      const unsigned k = st.adobe_inverted ? p[3] : 255u - p[3];
      for (int c = 0; c < 3; ++c) {
        const unsigned v = st.adobe_inverted ? p[c] : 255u - p[c];
        img.pixels[3 * i + c] = static_cast<uint8_t>((v * k + 127) / 255);
      }
    }
  }
  return img;
}

}  // namespace mt
