// Task-batched linear head on the GPU (DESIGN §5.1): y_t = x_t W_tᵀ + b_t for T tasks at once,
// each GEMM one cublasSgemmStridedBatched over the tasks (FP32, no TF32), the bias by a small
// kernel over an MT_HD body (conv2d_batched_index.h). No CUDA header: CPU code may include it.
//
// Buffers (device, float), T ≤ max_tasks tasks, n ≤ max_n examples per task:
//   x, R_x, dx, R_dx [n, T·F] (task t's features of example i at (i·T + t)·F);
//   y, R_y, dy, R_dy [n, T·K]; W, R_W, dW, R_dW [T, K, F]; b, R_b, db, R_db [T, K].
// In the batched parameter layout the bias follows the weights: b = W + T·K·F.
// Every pass OVERWRITES its outputs; R_x null means a zero direction in x, a null dx / R_dx is
// not computed. Asynchronous on `stream`; nothing is allocated after construction.
#pragma once

#include <memory>

#include "models/conv2d_batched_index.h"

struct CUstream_st;  // cudaStream_t is CUstream_st*

namespace mt {

class BatchedLinearCuda {
 public:
  BatchedLinearCuda(int in_features, int out_features, int max_tasks, int max_n);
  BatchedLinearCuda(const BatchedLinearCuda&) = delete;
  BatchedLinearCuda& operator=(const BatchedLinearCuda&) = delete;

  const BatchedLinearGeom& geom() const { return g_; }  // at max_tasks
  int max_n() const { return max_n_; }

  // y = x Wᵀ + b. Overwrites y.
  void forward(int tasks, int n, const float* W, const float* b, const float* x, float* y,
               CUstream_st* stream);
  // dW = dyᵀ x, db = Σ_i dy, dx = dy W (when dx is not null). Overwrites dW, db, dx.
  void backward(int tasks, int n, const float* W, const float* x, const float* dy, float* dx,
                float* dW, float* db, CUstream_st* stream);
  // R_y = x R_Wᵀ + R_x Wᵀ + R_b. Overwrites R_y.
  void r_forward(int tasks, int n, const float* W, const float* R_W, const float* R_b,
                 const float* x, const float* R_x, float* R_y, CUstream_st* stream);
  // R_dW = R_dyᵀ x + dyᵀ R_x, R_db = Σ_i R_dy, R_dx = dy R_W + R_dy W (when R_dx is not
  // null). Overwrites R_dW, R_db, R_dx.
  void r_backward(int tasks, int n, const float* W, const float* R_W, const float* x,
                  const float* R_x, const float* dy, const float* R_dy, float* R_dx, float* R_dW,
                  float* R_db, CUstream_st* stream);

 private:
  BatchedLinearGeom at(int tasks, int n) const;  // the call's geometry, checked
  BatchedLinearGeom g_;
  int max_n_;
};

}  // namespace mt
