// Antialiased image downscaling by area averaging (a box filter over each output pixel's exact
// fractional footprint), in integer arithmetic so the result is exact and reproducible anywhere.
#pragma once

#include <cstdint>
#include <vector>

namespace mt {

// Resizes `src` [in_h, in_w, channels] (uint8, row-major, channels interleaved) to
// [out_h, out_w, channels]. The rule, per channel:
//   Output pixel (oy, ox) covers the source rectangle
//     [oy * in_h / out_h, (oy + 1) * in_h / out_h) x [ox * in_w / out_w, (ox + 1) * in_w / out_w)
//   in continuous source coordinates, where source pixel (iy, ix) is the unit square
//   [iy, iy + 1) x [ix, ix + 1). Its value is the average of the source over that rectangle:
//     v = sum_{iy, ix} area(pixel (iy, ix) ∩ rectangle) * src(iy, ix) / area(rectangle),
//   rounded half up: out = floor(v + 1/2).
// Computed exactly with integers: in coordinates multiplied by out_h (rows) and out_w (columns)
// the overlaps are integers w_y = |[iy*out_h, (iy+1)*out_h) ∩ [oy*in_h, (oy+1)*in_h)| (same for
// x), and out = floor((2 * sum w_y w_x src + D) / (2 D)) with D = in_h * in_w.
// Works for upscaling too (then it blends only where a source edge cuts an output pixel).
// Requires all sizes >= 1 (MT_CHECK).
std::vector<uint8_t> resize_area(const uint8_t* src, int in_h, int in_w, int channels, int out_h,
                                 int out_w);

}  // namespace mt
