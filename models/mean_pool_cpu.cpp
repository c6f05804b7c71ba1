// CPU kernels of GlobalMeanPool (models/mean_pool.h).
#include <algorithm>

#include "models/mean_pool.h"

namespace mt {

template <typename T>
void GlobalMeanPool<T>::average(int m, const T* x, T* y) const {
  const int HW = in_.h * in_.w;
  for (int64_t k = 0; k < static_cast<int64_t>(m) * in_.c; ++k) {
    T s = 0;
    for (int p = 0; p < HW; ++p) s += x[k * HW + p];
    y[k] = s / HW;
  }
}

template <typename T>
void GlobalMeanPool<T>::spread(int m, const T* dy, T* dx) const {
  const int HW = in_.h * in_.w;
  for (int64_t k = 0; k < static_cast<int64_t>(m) * in_.c; ++k)
    std::fill(dx + k * HW, dx + (k + 1) * HW, dy[k] / HW);
}

template <typename T>
void GlobalMeanPool<T>::forward(int m, const T*, const T* x, T* y, LayerContext<T>&) const {
  average(m, x, y);
}

template <typename T>
void GlobalMeanPool<T>::backward(int m, const T*, const T*, const LayerContext<T>&, const T* dy,
                                 T* dx, T*) const {
  if (dx) spread(m, dy, dx);
}

template <typename T>
void GlobalMeanPool<T>::r_forward(int m, const T*, const T*, const T*, const T* R_x,
                                  const LayerContext<T>&, T* R_y) const {
  if (R_x)
    average(m, R_x, R_y);
  else
    std::fill(R_y, R_y + static_cast<int64_t>(m) * in_.c, T(0));
}

template <typename T>
void GlobalMeanPool<T>::r_backward(int m, const T*, const T*, const T*, const T*,
                                   const LayerContext<T>&, const T*, const T* R_dy, T* R_dx,
                                   T*) const {
  if (R_dx) spread(m, R_dy, R_dx);
}

template class GlobalMeanPool<float>;
template class GlobalMeanPool<double>;

}  // namespace mt
