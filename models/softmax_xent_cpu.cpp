// CPU kernels of SoftmaxCrossEntropy (models/softmax_xent.h).
#include <cmath>

#include "models/softmax_xent.h"

namespace mt {

template <typename T>
double SoftmaxCrossEntropy<T>::forward(int m, int n, const T* z, const int32_t* y, T* p,
                                       int* correct) {
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
    loss += -(static_cast<double>(zi[y[i]] - zi[best]) - std::log(static_cast<double>(sum)));
    hits += best == y[i];
  }
  if (correct) *correct = hits;
  return m > 0 ? loss / m : 0.0;
}

template <typename T>
void SoftmaxCrossEntropy<T>::backward(int m, int n, const T* p, const int32_t* y, T* dz) {
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      const int64_t k = static_cast<int64_t>(i) * n + j;
      dz[k] = (p[k] - (j == y[i] ? T(1) : T(0))) / m;
    }
}

template <typename T>
void SoftmaxCrossEntropy<T>::r_backward(int m, int n, const T* p, const T* R_z, T* R_dz) {
  for (int i = 0; i < m; ++i) {
    const int64_t row = static_cast<int64_t>(i) * n;
    T p_dot = 0;
    for (int j = 0; j < n; ++j) p_dot += p[row + j] * R_z[row + j];
    for (int j = 0; j < n; ++j) R_dz[row + j] = p[row + j] * (R_z[row + j] - p_dot) / m;
  }
}

template struct SoftmaxCrossEntropy<float>;
template struct SoftmaxCrossEntropy<double>;

}  // namespace mt
