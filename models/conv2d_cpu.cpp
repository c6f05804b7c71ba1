// CPU passes of Conv2d (models/conv2d.h): float on oneDNN (models/conv2d_dnnl.h); double on
// im2col + GEMM, the reference the float path is tested against.
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "core/blas.h"
#include "core/check.h"
#include "models/conv2d.h"
#include "models/conv2d_dnnl.h"

namespace mt {

namespace {

// Per-thread scratch (layers are stateless and shared by threads): 0 and 2 hold outputs or
// output gradients in GEMM layout, 1 holds im2col of tangents or column gradients.
template <typename T>
std::vector<T>& scratch(int which, size_t n) {
  thread_local std::vector<T> buf[3];
  ensure_size(buf[which], n);
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
Conv2d<T>::Conv2d(Shape in, int out_channels, int stride, int kernel)
    : in_(in), stride_(stride), kernel_(kernel) {
  MT_CHECK(stride == 1 || stride == 2, "conv stride must be 1 or 2, got ", stride);
  MT_CHECK(kernel == 1 || kernel == 3, "conv kernel must be 1 or 3, got ", kernel);
  MT_CHECK(in.c > 0 && in.h > 0 && in.w > 0 && out_channels > 0, "bad conv shape");
  out_ = {out_channels, (in.h - 1) / stride + 1, (in.w - 1) / stride + 1};
}

template <typename T>
void Conv2d<T>::init(T* W, Rng& rng) const {
  const double sd = std::sqrt(2.0 / (in_.c * taps()));
  for (int64_t i = 0; i < this->num_params(); ++i) W[i] = static_cast<T>(sd * rng.normal());
}

template <typename T>
void Conv2d<T>::im2col(const T* x, T* col, int64_t ld) const {
  const int pad = kernel_ / 2;
  for (int c = 0; c < in_.c; ++c)
    for (int k = 0; k < taps(); ++k) {
      const int ky = k / kernel_ - pad, kx = k % kernel_ - pad;
      int lo, hi;
      valid_columns(out_.w, in_.w, stride_, kx, lo, hi);
      T* row = col + (static_cast<int64_t>(c) * taps() + k) * ld;
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
void Conv2d<T>::col2im(const T* col, int64_t ld, T* x) const {
  std::fill(x, x + in_.size(), T(0));
  const int pad = kernel_ / 2;
  for (int c = 0; c < in_.c; ++c)
    for (int k = 0; k < taps(); ++k) {
      const int ky = k / kernel_ - pad, kx = k % kernel_ - pad;
      int lo, hi;
      valid_columns(out_.w, in_.w, stride_, kx, lo, hi);
      const T* row = col + (static_cast<int64_t>(c) * taps() + k) * ld;
      T* plane = x + static_cast<int64_t>(c) * in_.h * in_.w;
      for (int oy = 0; oy < out_.h; ++oy) {
        const int iy = oy * stride_ + ky;
        if (iy < 0 || iy >= in_.h) continue;
        const T* src = row + oy * out_.w;
        T* dst = plane + iy * in_.w + kx;
        if (stride_ == 1) {
          for (int ox = lo; ox < hi; ++ox) dst[ox] += src[ox];
        } else {
          for (int ox = lo; ox < hi; ++ox) dst[ox * 2] += src[ox];
        }
      }
    }
}

template <typename T>
void Conv2d<T>::im2col_batch(int m, const T* x, T* col) const {
  const int64_t P = out_.h * out_.w;
  for (int i = 0; i < m; ++i) im2col(x + i * in_.size(), col + i * P, m * P);
}

template <typename T>
void Conv2d<T>::col2im_batch(int m, const T* col, T* x) const {
  const int64_t P = out_.h * out_.w;
  for (int i = 0; i < m; ++i) col2im(col + i * P, m * P, x + i * in_.size());
}

namespace {
template <typename T>
constexpr bool kOnDnnl = std::is_same_v<T, float>;

// [m, F, P] (NCHW) <-> [F, m·P] (the GEMM layout: one row per channel over all examples).
template <typename T>
void to_gemm_layout(int m, int F, int64_t P, const T* src, T* dst) {
  for (int i = 0; i < m; ++i)
    for (int f = 0; f < F; ++f)
      std::copy(src + (static_cast<int64_t>(i) * F + f) * P,
                src + (static_cast<int64_t>(i) * F + f + 1) * P, dst + (f * m + i) * P);
}
template <typename T>
void from_gemm_layout(int m, int F, int64_t P, const T* src, T* dst) {
  for (int i = 0; i < m; ++i)
    for (int f = 0; f < F; ++f)
      std::copy(src + (static_cast<int64_t>(f) * m + i) * P,
                src + (static_cast<int64_t>(f) * m + i + 1) * P, dst + (i * F + f) * P);
}
}  // namespace

template <typename T>
dnnl_conv::Geometry Conv2d<T>::geometry() const {
  return {in_.c, in_.h, in_.w, out_.c, out_.h, out_.w, stride_, kernel_};
}

template <typename T>
void Conv2d<T>::forward(int m, const T* W, const T* x, T* y, LayerContext<T>& ctx) const {
  if constexpr (kOnDnnl<T>) {
    (void)ctx;  // the later passes read x itself
    dnnl_conv::forward(geometry(), m, W, x, y, false);
    return;
  }
  const int F = out_.c, K = in_.c * taps();
  const int64_t N = static_cast<int64_t>(m) * out_.h * out_.w;
  ensure_size(ctx.saved, static_cast<size_t>(m) * col_size());
  im2col_batch(m, x, ctx.saved.data());
  T* Y = scratch<T>(0, F * N).data();
  gemm<T>(false, false, F, N, K, T(1), W, K, ctx.saved.data(), N, T(0), Y, N);
  from_gemm_layout(m, F, out_.h * out_.w, Y, y);
}

template <typename T>
void Conv2d<T>::backward(int m, const T* W, const T* x, const LayerContext<T>& ctx, const T* dy,
                         T* dx, T* dW) const {
  if constexpr (kOnDnnl<T>) {
    if (dW) dnnl_conv::backward_weights(geometry(), m, x, dy, dW, false);
    if (dx) dnnl_conv::backward_data(geometry(), m, W, dy, dx, false);
    return;
  }
  const int F = out_.c, K = in_.c * taps();
  const int64_t N = static_cast<int64_t>(m) * out_.h * out_.w;
  T* dY = scratch<T>(0, F * N).data();
  to_gemm_layout(m, F, out_.h * out_.w, dy, dY);
  if (dW) gemm<T>(false, true, F, K, N, T(1), dY, N, ctx.saved.data(), N, T(0), dW, K);
  if (dx) {
    T* dcol = scratch<T>(1, K * N).data();
    gemm<T>(true, false, K, N, F, T(1), W, K, dY, N, T(0), dcol, N);
    col2im_batch(m, dcol, dx);
  }
}

template <typename T>
void Conv2d<T>::r_forward(int m, const T* W, const T* R_W, const T* x, const T* R_x,
                          const LayerContext<T>& ctx, T* R_y) const {
  if constexpr (kOnDnnl<T>) {
    dnnl_conv::forward(geometry(), m, R_W, x, R_y, false);
    if (R_x) dnnl_conv::forward(geometry(), m, W, R_x, R_y, true);
    return;
  }
  const int F = out_.c, K = in_.c * taps();
  const int64_t N = static_cast<int64_t>(m) * out_.h * out_.w;
  T* RY = scratch<T>(0, F * N).data();
  gemm<T>(false, false, F, N, K, T(1), R_W, K, ctx.saved.data(), N, T(0), RY, N);
  if (R_x) {
    T* rcol = scratch<T>(1, K * N).data();
    im2col_batch(m, R_x, rcol);
    gemm<T>(false, false, F, N, K, T(1), W, K, rcol, N, T(1), RY, N);
  }
  from_gemm_layout(m, F, out_.h * out_.w, RY, R_y);
}

template <typename T>
void Conv2d<T>::r_backward(int m, const T* W, const T* R_W, const T* x, const T* R_x,
                           const LayerContext<T>& ctx, const T* dy, const T* R_dy, T* R_dx,
                           T* R_dW) const {
  if constexpr (kOnDnnl<T>) {
    // R{dW} = corr(x, R{dy}) + corr(R_x, dy); R{dx} = convᵀ(dy, R_W) + convᵀ(R{dy}, W).
    dnnl_conv::backward_weights(geometry(), m, x, R_dy, R_dW, false);
    if (R_x) dnnl_conv::backward_weights(geometry(), m, R_x, dy, R_dW, true);
    if (R_dx) {
      dnnl_conv::backward_data(geometry(), m, R_W, dy, R_dx, false);
      dnnl_conv::backward_data(geometry(), m, W, R_dy, R_dx, true);
    }
    return;
  }
  const int F = out_.c, K = in_.c * taps();
  const int64_t P = out_.h * out_.w, N = m * P;
  T* dY = scratch<T>(0, F * N).data();
  T* R_dY = scratch<T>(2, F * N).data();
  to_gemm_layout(m, F, P, dy, dY);
  to_gemm_layout(m, F, P, R_dy, R_dY);
  // R{dW} = R{dY} colᵀ + dY col(R_x)ᵀ
  gemm<T>(false, true, F, K, N, T(1), R_dY, N, ctx.saved.data(), N, T(0), R_dW, K);
  if (R_x) {
    T* rcol = scratch<T>(1, K * N).data();
    im2col_batch(m, R_x, rcol);
    gemm<T>(false, true, F, K, N, T(1), dY, N, rcol, N, T(1), R_dW, K);
  }
  // R{dx} = col2im(R_Wᵀ dY + Wᵀ R{dY})
  if (R_dx) {
    T* dcol = scratch<T>(1, K * N).data();
    gemm<T>(true, false, K, N, F, T(1), R_W, K, dY, N, T(0), dcol, N);
    gemm<T>(true, false, K, N, F, T(1), W, K, R_dY, N, T(1), dcol, N);
    col2im_batch(m, dcol, R_dx);
  }
}

template class Conv2d<float>;
template class Conv2d<double>;

}  // namespace mt
