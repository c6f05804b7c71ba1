// Softmax cross-entropy over m examples and n classes, the loss of every model, with optional
// per-example weights w (null = every w_i = 1): L = Σ_i w_i ℓ_i / m, ℓ_i = −log p[i, y_i],
// p = softmax(z). dz_i = w_i (p_i − onehot(y_i))/m and its R-pass
// R{dz_i} = w_i (p_i ⊙ R_z_i − p_i (p_iᵀ R_z_i))/m (the Hessian of L in z applied to R_z).
#pragma once

#include <cstdint>

namespace mt {

template <typename T>
struct SoftmaxCrossEntropy {
  // Overwrites p [m, n]; returns L; *correct = number of argmax hits (if non-null).
  static double forward(int m, int n, const T* z, const int32_t* y, T* p, int* correct,
                        const T* w = nullptr);
  // Overwrites dz [m, n].
  static void backward(int m, int n, const T* p, const int32_t* y, T* dz, const T* w = nullptr);
  // Overwrites R_dz [m, n].
  static void r_backward(int m, int n, const T* p, const T* R_z, T* R_dz, const T* w = nullptr);
  // Overwrites l [m] with the unweighted per-example losses ℓ_i of logits z.
  static void example_losses(int m, int n, const T* z, const int32_t* y, T* l);
  // Overwrites R_l [m] with R{ℓ_i} = Σ_j (p_ij − onehot_ij) R_z_ij (unweighted).
  static void r_example_losses(int m, int n, const T* p, const int32_t* y, const T* R_z, T* R_l);
};

}  // namespace mt
