// PNG to 8-bit grayscale (the Omniglot packer, whose images are 105x105 1-bit grayscale) or to
// 8-bit RGB (the folder packer) through libpng. Any PNG is accepted: palette, bit depth and gray
// or colour are converted, alpha composited on white.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "data/jpeg_decode.h"  // RgbImage

namespace mt {

struct GrayImage {
  int height = 0, width = 0;
  std::vector<uint8_t> pixels;  // [height, width], row-major
};

// Conversions: bit depths 1/2/4 are scaled to 0..255 (1-bit: 0 -> 0, 1 -> 255); 16-bit is
// scaled to 8 bits with rounding; palette and tRNS are expanded; RGB is reduced to gray with
// libpng's default weights (rgb_to_gray); an alpha channel a is composited on a white
// background, gray' = (gray * a + 255 * (255 - a) + 127) / 255 (integer division).
// Throws UsageError naming `what` (e.g. "archive.zip:dir/file.png") if the bytes are not a
// valid PNG (bad signature, bad CRC, truncated or corrupt data).
GrayImage decode_png_gray(const uint8_t* data, size_t size, const std::string& what);

// The same PNG as RGB, [height, width, 3]. Conversions as above but for colour: bit depths,
// 16-bit, palette and tRNS likewise; gray g -> (g, g, g); each colour channel c with alpha a is
// composited on white, c' = (c * a + 255 * (255 - a) + 127) / 255. No gamma correction. Errors
// as decode_png_gray's.
RgbImage decode_png_rgb(const uint8_t* data, size_t size, const std::string& what);

}  // namespace mt
