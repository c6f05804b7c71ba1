// CPU kernels of Relu (models/relu.h).
#include "models/relu.h"

namespace mt {

template <typename T>
void Relu<T>::forward(int m, const T*, const T* x, T* y, LayerContext<T>&) const {
  const int64_t n = m * shape_.size();
  for (int64_t k = 0; k < n; ++k) y[k] = x[k] > T(0) ? x[k] : T(0);
}

template <typename T>
void Relu<T>::backward(int m, const T*, const T* x, const LayerContext<T>&, const T* dy, T* dx,
                       T*) const {
  if (!dx) return;
  const int64_t n = m * shape_.size();
  for (int64_t k = 0; k < n; ++k) dx[k] = x[k] > T(0) ? dy[k] : T(0);
}

template <typename T>
void Relu<T>::r_forward(int m, const T*, const T*, const T* x, const T* R_x, const LayerContext<T>&,
                        T* R_y) const {
  const int64_t n = m * shape_.size();
  for (int64_t k = 0; k < n; ++k) R_y[k] = (R_x && x[k] > T(0)) ? R_x[k] : T(0);
}

template <typename T>
void Relu<T>::r_backward(int m, const T*, const T*, const T* x, const T*, const LayerContext<T>&,
                         const T*, const T* R_dy, T* R_dx, T*) const {
  if (!R_dx) return;
  const int64_t n = m * shape_.size();
  for (int64_t k = 0; k < n; ++k) R_dx[k] = x[k] > T(0) ? R_dy[k] : T(0);
}

template class Relu<float>;
template class Relu<double>;

}  // namespace mt
