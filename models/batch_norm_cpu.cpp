// CPU kernels of BatchNorm (models/batch_norm.h). Derivation of the R-passes (per channel,
// means over the N = m·h·w values, s = mean(x̂ R_x)):
//   R{x̂} = (R_x − mean(R_x) − x̂ s) / σ,  R{σ}/σ = s / σ
//   dx = (g − mean(g) − x̂ mean(g x̂)) / σ with g = γ dy
//   R{dx} = −(s/σ) dx + (R{g} − mean(R{g}) − R{x̂} mean(g x̂) − x̂ mean(R{g} x̂ + g R{x̂})) / σ,
//   R{g} = R_γ dy + γ R{dy};  R{dγ} = Σ(R{dy} x̂ + dy R{x̂});  R{dβ} = Σ R{dy}.
#include <cmath>

#include "core/cpu_kernels.h"
#include "models/batch_norm.h"

namespace mt {

namespace {
// The channel loops below carry every pass; each is compiled per instruction set and picked at
// run time (MT_DISPATCH_CLONES), with f inlined into it.
// Calls f(index) for every value of channel c in an [m, C, HW] tensor.
template <typename F>
MT_DISPATCH_CLONES void for_channel(int m, int C, int HW, int c, F f) {
  for (int i = 0; i < m; ++i) {
    const int64_t base = (static_cast<int64_t>(i) * C + c) * HW;
    for (int p = 0; p < HW; ++p) f(base + p);
  }
}

// Σ of f(index) over channel c: vectorised in T along each example's h·w values, then
// accumulated in double across examples.
template <typename T, typename F>
MT_DISPATCH_CLONES T channel_sum(int m, int C, int HW, int c, F f) {
  double total = 0;
  for (int i = 0; i < m; ++i) {
    const int64_t base = (static_cast<int64_t>(i) * C + c) * HW;
    T s = 0;
#pragma omp simd reduction(+ : s)
    for (int p = 0; p < HW; ++p) s += f(base + p);
    total += s;
  }
  return static_cast<T>(total);
}
}  // namespace

template <typename T>
void BatchNorm<T>::init(T* W, Rng& rng) const {
  (void)rng;
  for (int c = 0; c < shape_.c; ++c) {
    W[c] = T(1);
    W[shape_.c + c] = T(0);
  }
}

template <typename T>
void BatchNorm<T>::forward(int m, const T* W, const T* x, T* y, LayerContext<T>& ctx) const {
  const int C = shape_.c, HW = shape_.h * shape_.w;
  const double N = static_cast<double>(m) * HW;
  const T* gamma = W;
  const T* beta = W + C;
  ensure_size(ctx.saved, static_cast<size_t>(m) * shape_.size() + C);
  T* xhat = ctx.saved.data();
  T* sigma = xhat + static_cast<int64_t>(m) * shape_.size();
  for (int c = 0; c < C; ++c) {
    const T mu = static_cast<T>(channel_sum<T>(m, C, HW, c, [&](int64_t k) { return x[k]; }) / N);
    const double var =
        channel_sum<T>(m, C, HW, c, [&](int64_t k) { return (x[k] - mu) * (x[k] - mu); }) / N;
    const T s = static_cast<T>(std::sqrt(var + kEps));
    sigma[c] = s;
    const T g = gamma[c], b = beta[c];
    for_channel(m, C, HW, c, [&](int64_t k) {
      xhat[k] = (x[k] - mu) / s;
      y[k] = g * xhat[k] + b;
    });
  }
}

template <typename T>
void BatchNorm<T>::backward(int m, const T* W, const T* x, const LayerContext<T>& ctx, const T* dy,
                            T* dx, T* dW) const {
  (void)x;
  const int C = shape_.c, HW = shape_.h * shape_.w;
  const T N = static_cast<T>(m) * HW;
  const T* gamma = W;
  const T* xhat = ctx.saved.data();
  const T* sigma = xhat + static_cast<int64_t>(m) * shape_.size();
  for (int c = 0; c < C; ++c) {
    const T sum_dy = channel_sum<T>(m, C, HW, c, [&](int64_t k) { return dy[k]; });
    const T sum_dy_xhat = channel_sum<T>(m, C, HW, c, [&](int64_t k) { return dy[k] * xhat[k]; });
    dW[c] = sum_dy_xhat;
    dW[C + c] = sum_dy;
    if (!dx) continue;
    const T mean_g = gamma[c] * sum_dy / N, mean_g_xhat = gamma[c] * sum_dy_xhat / N;
    for_channel(m, C, HW, c, [&](int64_t k) {
      dx[k] = (gamma[c] * dy[k] - mean_g - xhat[k] * mean_g_xhat) / sigma[c];
    });
  }
}

template <typename T>
void BatchNorm<T>::r_forward(int m, const T* W, const T* R_W, const T* x, const T* R_x,
                             const LayerContext<T>& ctx, T* R_y) const {
  (void)x;
  const int C = shape_.c, HW = shape_.h * shape_.w;
  const T N = static_cast<T>(m) * HW;
  const T* gamma = W;
  const T* xhat = ctx.saved.data();
  const T* sigma = xhat + static_cast<int64_t>(m) * shape_.size();
  for (int c = 0; c < C; ++c) {
    T mean_rx = 0, mean_xhat_rx = 0;
    if (R_x) {
      mean_rx = channel_sum<T>(m, C, HW, c, [&](int64_t k) { return R_x[k]; }) / N;
      mean_xhat_rx = channel_sum<T>(m, C, HW, c, [&](int64_t k) { return xhat[k] * R_x[k]; }) / N;
    }
    for_channel(m, C, HW, c, [&](int64_t k) {
      const T R_xhat = R_x ? (R_x[k] - mean_rx - xhat[k] * mean_xhat_rx) / sigma[c] : T(0);
      R_y[k] = R_W[c] * xhat[k] + gamma[c] * R_xhat + R_W[C + c];
    });
  }
}

template <typename T>
void BatchNorm<T>::r_backward(int m, const T* W, const T* R_W, const T* x, const T* R_x,
                              const LayerContext<T>& ctx, const T* dy, const T* R_dy, T* R_dx,
                              T* R_dW) const {
  (void)x;
  const int C = shape_.c, HW = shape_.h * shape_.w;
  const T N = static_cast<T>(m) * HW;
  const T* gamma = W;
  const T* xhat = ctx.saved.data();
  const T* sigma = xhat + static_cast<int64_t>(m) * shape_.size();
  for (int c = 0; c < C; ++c) {
    const T g_c = gamma[c], Rg_c = R_W[c], s_c = sigma[c];
    T mean_rx = 0, s = 0;  // mean(R_x), mean(x̂ R_x)
    if (R_x) {
      mean_rx = channel_sum<T>(m, C, HW, c, [&](int64_t k) { return R_x[k]; }) / N;
      s = channel_sum<T>(m, C, HW, c, [&](int64_t k) { return xhat[k] * R_x[k]; }) / N;
    }
    auto R_xhat = [&](int64_t k) { return R_x ? (R_x[k] - mean_rx - xhat[k] * s) / s_c : T(0); };
    // Channel sums: a1 = mean(g), a2 = mean(g x̂), b1 = mean(R{g}), b2 = mean(R{g} x̂ + g R{x̂}).
    auto sum = [&](auto f) { return channel_sum<T>(m, C, HW, c, f); };
    const T sum_dy = sum([&](int64_t k) { return dy[k]; });
    const T sum_dy_xhat = sum([&](int64_t k) { return dy[k] * xhat[k]; });
    const T sum_rdy = sum([&](int64_t k) { return R_dy[k]; });
    const T sum_rdy_xhat = sum([&](int64_t k) { return R_dy[k] * xhat[k]; });
    const T sum_dy_rxhat = sum([&](int64_t k) { return dy[k] * R_xhat(k); });
    R_dW[c] = sum_rdy_xhat + sum_dy_rxhat;
    R_dW[C + c] = sum_rdy;
    if (!R_dx) continue;
    const T a1 = g_c * sum_dy / N, a2 = g_c * sum_dy_xhat / N;
    const T b1 = (Rg_c * sum_dy + g_c * sum_rdy) / N;
    const T b2 = (Rg_c * sum_dy_xhat + g_c * sum_rdy_xhat + g_c * sum_dy_rxhat) / N;
    for_channel(m, C, HW, c, [&](int64_t k) {
      const T g = g_c * dy[k];
      const T Rg = Rg_c * dy[k] + g_c * R_dy[k];
      const T dx = (g - a1 - xhat[k] * a2) / s_c;
      R_dx[k] = -(s / s_c) * dx + (Rg - b1 - R_xhat(k) * a2 - xhat[k] * b2) / s_c;
    });
  }
}

template class BatchNorm<float>;
template class BatchNorm<double>;

}  // namespace mt
