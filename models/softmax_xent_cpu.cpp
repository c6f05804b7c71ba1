// CPU kernels of SoftmaxCrossEntropy (models/softmax_xent.h).
#include <algorithm>
#include <cmath>

#include "models/softmax_xent.h"

namespace mt {

template <typename T>
double SoftmaxCrossEntropy<T>::forward(int m, int n, const T* z, const int32_t* y, T* p,
                                       int* correct, const T* w) {
  double loss = 0;
  int hits = 0;
  for (int i = 0; i < m; ++i) {
    const T* zi = z + static_cast<int64_t>(i) * n;
    T* pi = p + static_cast<int64_t>(i) * n;
    int best = 0;
    for (int j = 1; j < n; ++j)
      if (zi[j] > zi[best]) best = j;
    T sum = 0;
    for (int j = 0; j < n; ++j) sum += (pi[j] = std::exp(zi[j] - zi[best]));
    for (int j = 0; j < n; ++j) pi[j] /= sum;
    const double li =
        -(static_cast<double>(zi[y[i]] - zi[best]) - std::log(static_cast<double>(sum)));
    loss += w ? static_cast<double>(w[i]) * li : li;
    hits += best == y[i];
  }
  if (correct) *correct = hits;
  return m > 0 ? loss / m : 0.0;
}

template <typename T>
void SoftmaxCrossEntropy<T>::backward(int m, int n, const T* p, const int32_t* y, T* dz,
                                      const T* w) {
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      const int64_t k = static_cast<int64_t>(i) * n + j;
      const T d = p[k] - (j == y[i] ? T(1) : T(0));
      dz[k] = w ? w[i] * d / m : d / m;
    }
}

template <typename T>
void SoftmaxCrossEntropy<T>::r_backward(int m, int n, const T* p, const T* R_z, T* R_dz,
                                        const T* w) {
  for (int i = 0; i < m; ++i) {
    const int64_t row = static_cast<int64_t>(i) * n;
    T p_dot = 0;
    for (int j = 0; j < n; ++j) p_dot += p[row + j] * R_z[row + j];
    for (int j = 0; j < n; ++j) {
      const T r = p[row + j] * (R_z[row + j] - p_dot);
      R_dz[row + j] = w ? w[i] * r / m : r / m;
    }
  }
}

template <typename T>
void SoftmaxCrossEntropy<T>::example_losses(int m, int n, const T* z, const int32_t* y, T* l) {
  for (int i = 0; i < m; ++i) {
    const T* zi = z + static_cast<int64_t>(i) * n;
    T mx = zi[0];
    for (int j = 1; j < n; ++j) mx = std::max(mx, zi[j]);
    double sum = 0;
    for (int j = 0; j < n; ++j) sum += std::exp(static_cast<double>(zi[j] - mx));
    l[i] = static_cast<T>(std::log(sum) - static_cast<double>(zi[y[i]] - mx));
  }
}

template <typename T>
void SoftmaxCrossEntropy<T>::r_example_losses(int m, int n, const T* p, const int32_t* y,
                                              const T* R_z, T* R_l) {
  for (int i = 0; i < m; ++i) {
    const int64_t row = static_cast<int64_t>(i) * n;
    T s = -R_z[row + y[i]];
    for (int j = 0; j < n; ++j) s += p[row + j] * R_z[row + j];
    R_l[i] = s;
  }
}

template struct SoftmaxCrossEntropy<float>;
template struct SoftmaxCrossEntropy<double>;

}  // namespace mt
