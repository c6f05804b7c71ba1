// CPU kernels of Linear (models/linear.h): GEMMs over the batch.
#include <cmath>

#include "core/blas.h"
#include "models/linear.h"

namespace mt {

namespace {
// y[i, :] = b for every row i (the GEMMs then accumulate onto it).
template <typename T>
void fill_rows(int m, int n, const T* b, T* y) {
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) y[static_cast<int64_t>(i) * n + j] = b[j];
}
template <typename T>
void column_sums(int m, int n, const T* a, T* out) {
  for (int j = 0; j < n; ++j) out[j] = 0;
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) out[j] += a[static_cast<int64_t>(i) * n + j];
}
}  // namespace

template <typename T>
void Linear<T>::init(T* W, Rng& rng) const {
  const int I = static_cast<int>(in_.size()), O = out_.c;
  const double a = std::sqrt(6.0 / (I + O));
  for (int64_t k = 0; k < static_cast<int64_t>(I) * O; ++k)
    W[k] = static_cast<T>(rng.uniform(-a, a));
  for (int j = 0; j < O; ++j) W[static_cast<int64_t>(I) * O + j] = T(0);
}

template <typename T>
void Linear<T>::forward(int m, const T* W, const T* x, T* y, LayerContext<T>&) const {
  const int I = static_cast<int>(in_.size()), O = out_.c;
  fill_rows(m, O, W + static_cast<int64_t>(I) * O, y);
  gemm<T>(false, true, m, O, I, T(1), x, I, W, I, T(1), y, O);
}

template <typename T>
void Linear<T>::backward(int m, const T* W, const T* x, const LayerContext<T>&, const T* dy, T* dx,
                         T* dW) const {
  const int I = static_cast<int>(in_.size()), O = out_.c;
  if (dW) {
    gemm<T>(true, false, O, I, m, T(1), dy, O, x, I, T(0), dW, I);
    column_sums(m, O, dy, dW + static_cast<int64_t>(I) * O);
  }
  if (dx) gemm<T>(false, false, m, I, O, T(1), dy, O, W, I, T(0), dx, I);
}

template <typename T>
void Linear<T>::r_forward(int m, const T* W, const T* R_W, const T* x, const T* R_x,
                          const LayerContext<T>&, T* R_y) const {
  const int I = static_cast<int>(in_.size()), O = out_.c;
  fill_rows(m, O, R_W + static_cast<int64_t>(I) * O, R_y);
  gemm<T>(false, true, m, O, I, T(1), x, I, R_W, I, T(1), R_y, O);
  if (R_x) gemm<T>(false, true, m, O, I, T(1), R_x, I, W, I, T(1), R_y, O);
}

template <typename T>
void Linear<T>::r_backward(int m, const T* W, const T* R_W, const T* x, const T* R_x,
                           const LayerContext<T>&, const T* dy, const T* R_dy, T* R_dx,
                           T* R_dW) const {
  const int I = static_cast<int>(in_.size()), O = out_.c;
  gemm<T>(true, false, O, I, m, T(1), R_dy, O, x, I, T(0), R_dW, I);
  if (R_x) gemm<T>(true, false, O, I, m, T(1), dy, O, R_x, I, T(1), R_dW, I);
  column_sums(m, O, R_dy, R_dW + static_cast<int64_t>(I) * O);
  if (R_dx) {
    gemm<T>(false, false, m, I, O, T(1), dy, O, R_W, I, T(0), R_dx, I);
    gemm<T>(false, false, m, I, O, T(1), R_dy, O, W, I, T(1), R_dx, I);
  }
}

template class Linear<float>;
template class Linear<double>;

}  // namespace mt
