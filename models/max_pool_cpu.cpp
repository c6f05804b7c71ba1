// CPU kernels of MaxPool2 (models/max_pool.h).
#include <algorithm>

#include "models/max_pool.h"

namespace mt {

namespace {
// y[j] = src[index[j]] for each output j of each example.
template <typename T>
void gather(int m, Shape in, Shape out, const int32_t* index, const T* src, T* dst) {
  for (int i = 0; i < m; ++i)
    for (int64_t j = 0; j < out.size(); ++j)
      dst[i * out.size() + j] = src[i * in.size() + index[i * out.size() + j]];
}
// dst = 0; dst[index[j]] += src[j]: the adjoint of gather.
template <typename T>
void scatter(int m, Shape in, Shape out, const int32_t* index, const T* src, T* dst) {
  std::fill(dst, dst + m * in.size(), T(0));
  for (int i = 0; i < m; ++i)
    for (int64_t j = 0; j < out.size(); ++j)
      dst[i * in.size() + index[i * out.size() + j]] += src[i * out.size() + j];
}
}  // namespace

template <typename T>
void MaxPool2<T>::forward(int m, const T*, const T* x, T* y, LayerContext<T>& ctx) const {
  ensure_size(ctx.index, static_cast<size_t>(m) * out_.size());
  const int W = in_.w;
  for (int i = 0; i < m; ++i) {
    const T* xi = x + i * in_.size();
    T* yi = y + i * out_.size();
    int32_t* idx = ctx.index.data() + i * out_.size();
    for (int c = 0; c < in_.c; ++c)
      for (int oy = 0; oy < out_.h; ++oy) {
        const int32_t row = c * in_.h * W + 2 * oy * W;
        const int64_t j0 = (static_cast<int64_t>(c) * out_.h + oy) * out_.w;
        for (int ox = 0; ox < out_.w; ++ox) {
          // The first maximum in the order (0,0), (0,1), (1,0), (1,1) wins ties.
          const int32_t k0 = row + 2 * ox;
          int32_t best = k0;
          if (xi[k0 + 1] > xi[best]) best = k0 + 1;
          if (xi[k0 + W] > xi[best]) best = k0 + W;
          if (xi[k0 + W + 1] > xi[best]) best = k0 + W + 1;
          idx[j0 + ox] = best;
          yi[j0 + ox] = xi[best];
        }
      }
  }
}

template <typename T>
void MaxPool2<T>::backward(int m, const T*, const T*, const LayerContext<T>& ctx, const T* dy,
                           T* dx, T*) const {
  if (dx) scatter(m, in_, out_, ctx.index.data(), dy, dx);
}

template <typename T>
void MaxPool2<T>::r_forward(int m, const T*, const T*, const T*, const T* R_x,
                            const LayerContext<T>& ctx, T* R_y) const {
  if (R_x)
    gather(m, in_, out_, ctx.index.data(), R_x, R_y);
  else
    std::fill(R_y, R_y + m * out_.size(), T(0));
}

template <typename T>
void MaxPool2<T>::r_backward(int m, const T*, const T*, const T*, const T*,
                             const LayerContext<T>& ctx, const T*, const T* R_dy, T* R_dx,
                             T*) const {
  if (R_dx) scatter(m, in_, out_, ctx.index.data(), R_dy, R_dx);
}

template class MaxPool2<float>;
template class MaxPool2<double>;

}  // namespace mt
