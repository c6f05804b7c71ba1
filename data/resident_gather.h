// The conversion of a stored pixel into the float a model sees, and the per-element body of the
// gather that serves resident images: MT_HD, so the HDF5 file path, the host-resident path and
// the CUDA kernel (data/resident_images_cuda.cu) give the same floats bit for bit. No CUDA header.
#pragma once

#include <cstdint>

#include "core/host_device.h"

namespace mt {

// A stored byte v as the models see it: v · (1/255) in float, one rounding. Every path converts
// through this function.
MT_HD inline float resident_pixel(uint8_t v) { return static_cast<float>(v) * (1.0f / 255.0f); }

// One image as stored, [H, W, C] bytes (pixels = H·W, channels = C), served channel-first as
// item() = C·H·W floats.
struct ResidentShape {
  int64_t pixels = 0;
  int channels = 0;
  MT_HD int64_t item() const { return pixels * channels; }
};

// Element e of a gather of rows (the device kernel's body): out[e] for e in [0, rows · item),
// row r = e / item is image index_of_row[r] of `images` ([n, H, W, C] bytes), element
// j = e mod item is channel j / pixels of pixel j mod pixels.
MT_HD inline float gather_element(const uint8_t* images, ResidentShape s,
                                  const int64_t* index_of_row, int64_t e) {
  const int64_t item = s.item();
  const int64_t r = e / item, j = e - r * item;
  const int64_t ch = j / s.pixels, p = j - ch * s.pixels;
  return resident_pixel(images[index_of_row[r] * item + p * s.channels + ch]);
}

// One image, [H, W, C] bytes → out [C, H, W] floats through resident_pixel: the host paths'
// converter (file and resident), row-wise and vectorised; equal to gather_element's values.
void convert_image(const uint8_t* image, ResidentShape s, float* out);

// The host-resident gather: out[i · item ..] = convert_image of image index[i], i < count. An
// output of kStreamingBytes or more (a Mini-ImageNet episode: 6.8 MB) is written with
// non-temporal stores, which skip reading each line before writing it: the same floats, about
// twice the rate once the outputs no longer fit the caches.
constexpr int64_t kStreamingBytes = int64_t{1} << 21;
void gather_images(const uint8_t* images, ResidentShape s, const int64_t* index, int64_t count,
                   float* out);

// The host twin of the device gather: x[e] = gather_element(images, s, index_of_row, e) for
// every e in [0, rows · item), element by element, as the kernel computes it.
void gather_rows_host(const uint8_t* images, ResidentShape s, const int64_t* index_of_row,
                      int64_t rows, float* x);

}  // namespace mt
