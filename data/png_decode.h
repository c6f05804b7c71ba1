// PNG to 8-bit grayscale through libpng, for the Omniglot packer (whose images are 105x105
// 1-bit grayscale). Any PNG is accepted: colour is converted to gray, alpha composited on white.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

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

}  // namespace mt
