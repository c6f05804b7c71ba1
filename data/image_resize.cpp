// Separable area-average resize: rows first into integer partial sums, then columns, so the
// result equals the 2-D overlap-weighted sum of the header's rule exactly.
#include "data/image_resize.h"

#include <algorithm>

#include "core/check.h"

namespace mt {
namespace {

// Nonzero overlaps of output cell o with the source cells along one axis, in units of 1/out.
struct AxisWeights {
  std::vector<int> first;           // [out] first source index with nonzero overlap
  std::vector<std::vector<int>> w;  // [out][k] overlap of source first[o] + k
};

AxisWeights axis_weights(int in, int out) {
  AxisWeights a;
  a.first.resize(out);
  a.w.resize(out);
  for (int o = 0; o < out; ++o) {
    const int64_t lo = int64_t{o} * in, hi = int64_t{o + 1} * in;
    const int i0 = static_cast<int>(lo / out), i1 = static_cast<int>((hi + out - 1) / out);
    a.first[o] = i0;
    for (int i = i0; i < std::min(i1, in); ++i) {
      const int64_t overlap =
          std::min<int64_t>(int64_t{i + 1} * out, hi) - std::max<int64_t>(int64_t{i} * out, lo);
      a.w[o].push_back(static_cast<int>(overlap));
    }
  }
  return a;
}

}  // namespace

std::vector<uint8_t> resize_area(const uint8_t* src, int in_h, int in_w, int channels, int out_h,
                                 int out_w) {
  MT_CHECK(in_h >= 1 && in_w >= 1 && channels >= 1 && out_h >= 1 && out_w >= 1,
           "resize_area: bad sizes ", in_h, "x", in_w, "x", channels, " -> ", out_h, "x", out_w);
  const AxisWeights wy = axis_weights(in_h, out_h), wx = axis_weights(in_w, out_w);
  const int64_t denom = int64_t{in_h} * in_w;
  std::vector<int64_t> rows(static_cast<size_t>(in_w) * channels);
  std::vector<uint8_t> out(static_cast<size_t>(out_h) * out_w * channels);
  for (int oy = 0; oy < out_h; ++oy) {
    std::fill(rows.begin(), rows.end(), 0);
    for (size_t k = 0; k < wy.w[oy].size(); ++k) {
      const uint8_t* line = src + static_cast<size_t>(wy.first[oy] + k) * in_w * channels;
      for (size_t j = 0; j < rows.size(); ++j) rows[j] += int64_t{wy.w[oy][k]} * line[j];
    }
    for (int ox = 0; ox < out_w; ++ox) {
      for (int c = 0; c < channels; ++c) {
        int64_t sum = 0;
        for (size_t k = 0; k < wx.w[ox].size(); ++k)
          sum += wx.w[ox][k] * rows[(wx.first[ox] + k) * channels + c];
        out[(static_cast<size_t>(oy) * out_w + ox) * channels + c] =
            static_cast<uint8_t>((2 * sum + denom) / (2 * denom));
      }
    }
  }
  return out;
}

}  // namespace mt
