// CPU kernels of Conv2d (models/conv2d.h): im2col + GEMM, float and double.
#include <algorithm>
#include <cmath>

#include "core/blas.h"
#include "core/check.h"
#include "models/conv2d.h"

namespace mt {

namespace {

// Per-thread scratch for im2col of tangents and of column gradients: layers are stateless
// and shared by threads.
template <typename T>
std::vector<T>& scratch(int which, size_t n) {
  thread_local std::vector<T> buf[2];
  if (buf[which].size() < n) buf[which].resize(n);
  return buf[which];
}

// Output columns [lo, hi) of a row that read inside the input for kernel column offset kx.
void valid_columns(int out_w, int in_w, int stride, int kx, int& lo, int& hi) {
  lo = 0;
  while (lo < out_w && lo * stride + kx < 0) ++lo;
  hi = out_w;
  while (hi > lo && (hi - 1) * stride + kx >= in_w) --hi;
}

}  // namespace

template <typename T>
Conv2d<T>::Conv2d(Shape in, int out_channels, int stride) : in_(in), stride_(stride) {
  MT_CHECK(stride == 1 || stride == 2, "conv stride must be 1 or 2, got ", stride);
  MT_CHECK(in.c > 0 && in.h > 0 && in.w > 0 && out_channels > 0, "bad conv shape");
  out_ = {out_channels, (in.h - 1) / stride + 1, (in.w - 1) / stride + 1};
}

template <typename T>
void Conv2d<T>::init(T* W, Rng& rng) const {
  const double sd = std::sqrt(2.0 / (in_.c * 9));
  for (int64_t i = 0; i < this->num_params(); ++i) W[i] = static_cast<T>(sd * rng.normal());
}

template <typename T>
void Conv2d<T>::im2col(const T* x, T* col) const {
  const int P = out_.h * out_.w;
  for (int c = 0; c < in_.c; ++c)
    for (int k = 0; k < 9; ++k) {
      const int ky = k / 3 - 1, kx = k % 3 - 1;
      int lo, hi;
      valid_columns(out_.w, in_.w, stride_, kx, lo, hi);
      T* row = col + (static_cast<int64_t>(c) * 9 + k) * P;
      const T* plane = x + static_cast<int64_t>(c) * in_.h * in_.w;
      for (int oy = 0; oy < out_.h; ++oy) {
        const int iy = oy * stride_ + ky;
        T* dst = row + oy * out_.w;
        if (iy < 0 || iy >= in_.h) {
          std::fill(dst, dst + out_.w, T(0));
          continue;
        }
        const T* src = plane + iy * in_.w + kx;
        std::fill(dst, dst + lo, T(0));
        if (stride_ == 1) {
          std::copy(src + lo, src + hi, dst + lo);
        } else {
          for (int ox = lo; ox < hi; ++ox) dst[ox] = src[ox * stride_];
        }
        std::fill(dst + hi, dst + out_.w, T(0));
      }
    }
}

template <typename T>
void Conv2d<T>::col2im(const T* col, T* x) const {
  const int P = out_.h * out_.w;
  std::fill(x, x + in_.size(), T(0));
  for (int c = 0; c < in_.c; ++c)
    for (int k = 0; k < 9; ++k) {
      const int ky = k / 3 - 1, kx = k % 3 - 1;
      int lo, hi;
      valid_columns(out_.w, in_.w, stride_, kx, lo, hi);
      const T* row = col + (static_cast<int64_t>(c) * 9 + k) * P;
      T* plane = x + static_cast<int64_t>(c) * in_.h * in_.w;
      for (int oy = 0; oy < out_.h; ++oy) {
        const int iy = oy * stride_ + ky;
        if (iy < 0 || iy >= in_.h) continue;
        const T* src = row + oy * out_.w;
        T* dst = plane + iy * in_.w + kx;
        for (int ox = lo; ox < hi; ++ox) dst[ox * stride_] += src[ox];
      }
    }
}

template <typename T>
void Conv2d<T>::forward(int m, const T* W, const T* x, T* y, LayerContext<T>& ctx) const {
  const int F = out_.c, K = in_.c * 9, P = out_.h * out_.w;
  ctx.saved.resize(static_cast<size_t>(m) * col_size());
  for (int i = 0; i < m; ++i) {
    T* col = ctx.saved.data() + i * col_size();
    im2col(x + i * in_.size(), col);
    gemm<T>(false, false, F, P, K, T(1), W, K, col, P, T(0), y + i * out_.size(), P);
  }
}

template <typename T>
void Conv2d<T>::backward(int m, const T* W, const T* x, const LayerContext<T>& ctx, const T* dy,
                         T* dx, T* dW) const {
  (void)x;
  const int F = out_.c, K = in_.c * 9, P = out_.h * out_.w;
  std::vector<T>& dcol = scratch<T>(0, col_size());
  for (int i = 0; i < m; ++i) {
    const T* col = ctx.saved.data() + i * col_size();
    const T* dy_i = dy + i * out_.size();
    gemm<T>(false, true, F, K, P, T(1), dy_i, P, col, P, i == 0 ? T(0) : T(1), dW, K);
    if (dx) {
      gemm<T>(true, false, K, P, F, T(1), W, K, dy_i, P, T(0), dcol.data(), P);
      col2im(dcol.data(), dx + i * in_.size());
    }
  }
  if (m == 0) std::fill(dW, dW + this->num_params(), T(0));
}

template <typename T>
void Conv2d<T>::r_forward(int m, const T* W, const T* R_W, const T* x, const T* R_x,
                          const LayerContext<T>& ctx, T* R_y) const {
  (void)x;
  const int F = out_.c, K = in_.c * 9, P = out_.h * out_.w;
  std::vector<T>& rcol = scratch<T>(0, col_size());
  for (int i = 0; i < m; ++i) {
    const T* col = ctx.saved.data() + i * col_size();
    T* R_y_i = R_y + i * out_.size();
    gemm<T>(false, false, F, P, K, T(1), R_W, K, col, P, T(0), R_y_i, P);
    if (R_x) {
      im2col(R_x + i * in_.size(), rcol.data());
      gemm<T>(false, false, F, P, K, T(1), W, K, rcol.data(), P, T(1), R_y_i, P);
    }
  }
}

template <typename T>
void Conv2d<T>::r_backward(int m, const T* W, const T* R_W, const T* x, const T* R_x,
                           const LayerContext<T>& ctx, const T* dy, const T* R_dy, T* R_dx,
                           T* R_dW) const {
  (void)x;
  const int F = out_.c, K = in_.c * 9, P = out_.h * out_.w;
  std::vector<T>& rcol = scratch<T>(0, col_size());
  std::vector<T>& dcol = scratch<T>(1, col_size());
  for (int i = 0; i < m; ++i) {
    const T* col = ctx.saved.data() + i * col_size();
    const T* dy_i = dy + i * out_.size();
    const T* R_dy_i = R_dy + i * out_.size();
    // R{dW} = R{dy} colᵀ + dy col(R_x)ᵀ
    gemm<T>(false, true, F, K, P, T(1), R_dy_i, P, col, P, i == 0 ? T(0) : T(1), R_dW, K);
    if (R_x) {
      im2col(R_x + i * in_.size(), rcol.data());
      gemm<T>(false, true, F, K, P, T(1), dy_i, P, rcol.data(), P, T(1), R_dW, K);
    }
    // R{dx} = col2im(R_Wᵀ dy + Wᵀ R{dy})
    if (R_dx) {
      gemm<T>(true, false, K, P, F, T(1), R_W, K, dy_i, P, T(0), dcol.data(), P);
      gemm<T>(true, false, K, P, F, T(1), W, K, R_dy_i, P, T(1), dcol.data(), P);
      col2im(dcol.data(), R_dx + i * in_.size());
    }
  }
  if (m == 0) std::fill(R_dW, R_dW + this->num_params(), T(0));
}

template class Conv2d<float>;
template class Conv2d<double>;

}  // namespace mt
