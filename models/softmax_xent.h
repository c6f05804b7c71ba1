// Softmax cross-entropy over m examples and n classes, the loss of every model:
// L = mean_i −log p[i, y_i], p = softmax(z). dz = (p − onehot(y))/m and its R-pass
// R{dz} = (p ⊙ R_z − p (pᵀ R_z))/m per row (the Hessian of L in z applied to R_z).
#pragma once

#include <cstdint>

namespace mt {

template <typename T>
struct SoftmaxCrossEntropy {
  // Overwrites p [m, n]; returns the mean loss; *correct = number of argmax hits (if non-null).
  static double forward(int m, int n, const T* z, const int32_t* y, T* p, int* correct);
  // Overwrites dz [m, n].
  static void backward(int m, int n, const T* p, const int32_t* y, T* dz);
  // Overwrites R_dz [m, n].
  static void r_backward(int m, int n, const T* p, const T* R_z, T* R_dz);
};

}  // namespace mt
