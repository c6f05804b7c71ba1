// JPEG to 8-bit RGB through libjpeg(-turbo), for the Mini-ImageNet packer. Any baseline or
// progressive JPEG is accepted: grayscale is replicated to RGB, CMYK and YCCK are converted.
// A corrupt or truncated file becomes a UsageError; libjpeg never gets to call exit().
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace mt {

struct RgbImage {
  int height = 0, width = 0;
  std::vector<uint8_t> pixels;  // [height, width, 3], row-major, channels interleaved
};

// Decoding uses libjpeg's defaults (islow IDCT, fancy upsampling), so the pixels equal those of
// any other default libjpeg decode. Conversions: gray g -> (g, g, g); CMYK (and YCCK, which
// libjpeg turns into CMYK) -> R = round(C' * K' / 255) with C', K' the ink complements, where
// files carrying an Adobe marker store the complements directly (Photoshop's inverted CMYK).
// Throws UsageError "'<what>' is a corrupt JPEG (libjpeg: ...)" for data libjpeg rejects or
// warns about (a truncated file is a warning: "premature end of data"), and a UsageError naming
// `what` for an image with a side over 16384 pixels (rejected before any pixel is decoded).
RgbImage decode_jpeg_rgb(const uint8_t* data, size_t size, const std::string& what);

}  // namespace mt
