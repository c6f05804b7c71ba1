// Host converters of resident images (data/resident_gather.h): the row-wise image converter of
// the file and host-resident paths, and the element-by-element twin of the device gather.
#include "data/resident_gather.h"

#include <algorithm>

#include "core/cpu_kernels.h"  // MT_DISPATCH_CLONES

#if defined(__SSE2__)
#include <emmintrin.h>  // _mm_stream_ps, _mm_sfence: non-temporal stores (x86-64 baseline)
#endif

namespace mt {

namespace {

// Channel-first planes from interleaved pixels for a channel count C known at compile time, so
// that the compiler unrolls the channel loop into C plane writes per pixel.
template <int C>
MT_DISPATCH_CLONES void convert_fixed(const uint8_t* in, int64_t pixels, float* out) {
  if (C == 1) {
    for (int64_t p = 0; p < pixels; ++p) out[p] = resident_pixel(in[p]);
    return;
  }
  float* plane[C];
  for (int ch = 0; ch < C; ++ch) plane[ch] = out + ch * pixels;
  for (int64_t p = 0; p < pixels; ++p)
    for (int ch = 0; ch < C; ++ch) plane[ch][p] = resident_pixel(in[p * C + ch]);
}

void convert_any(const uint8_t* in, int64_t pixels, int channels, float* out) {
  for (int ch = 0; ch < channels; ++ch)
    for (int64_t p = 0; p < pixels; ++p)
      out[ch * pixels + p] = resident_pixel(in[p * channels + ch]);
}

// Copies n floats to `to` with non-temporal stores where `to` is 16-byte aligned (ordinary
// stores for the unaligned head and the tail); the caller fences.
void stream_floats(const float* from, int64_t n, float* to) {
#if defined(__SSE2__)
  int64_t i = 0;
  for (; i < n && reinterpret_cast<uintptr_t>(to + i) % 16 != 0; ++i) to[i] = from[i];
  for (; i + 4 <= n; i += 4) _mm_stream_ps(to + i, _mm_loadu_ps(from + i));
  for (; i < n; ++i) to[i] = from[i];
#else
  std::copy(from, from + n, to);
#endif
}

// convert_image through an L1-sized block per channel, written out by stream_floats: for
// outputs far larger than the caches, where ordinary stores would first read every line.
void convert_streaming(const uint8_t* image, ResidentShape s, float* out) {
  constexpr int64_t kBlock = 512;  // pixels per block: kBlock · channels floats staged
  constexpr int kMaxChannels = 4;
  float staged[kMaxChannels * kBlock];
  for (int64_t first = 0; first < s.pixels; first += kBlock) {
    const int64_t count = std::min(kBlock, s.pixels - first);
    convert_image(image + first * s.channels, {count, s.channels}, staged);
    for (int ch = 0; ch < s.channels; ++ch)
      stream_floats(staged + ch * count, count, out + ch * s.pixels + first);
  }
}

}  // namespace

void convert_image(const uint8_t* image, ResidentShape s, float* out) {
  switch (s.channels) {
    case 1:
      return convert_fixed<1>(image, s.pixels, out);
    case 3:
      return convert_fixed<3>(image, s.pixels, out);
    default:
      return convert_any(image, s.pixels, s.channels, out);
  }
}

void gather_images(const uint8_t* images, ResidentShape s, const int64_t* index, int64_t count,
                   float* out) {
  const int64_t item = s.item();
  const bool streaming = s.channels <= 4 && count * item * 4 >= kStreamingBytes;
  for (int64_t i = 0; i < count; ++i) {
    if (streaming)
      convert_streaming(images + index[i] * item, s, out + i * item);
    else
      convert_image(images + index[i] * item, s, out + i * item);
  }
#if defined(__SSE2__)
  if (streaming) _mm_sfence();  // the streamed lines are visible before the episode is handed on
#endif
}

void gather_rows_host(const uint8_t* images, ResidentShape s, const int64_t* index_of_row,
                      int64_t rows, float* x) {
  const int64_t total = rows * s.item();
  for (int64_t e = 0; e < total; ++e) x[e] = gather_element(images, s, index_of_row, e);
}

}  // namespace mt
