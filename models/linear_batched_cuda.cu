// CUDA kernels of the task-batched linear head (models/linear_batched.h): the pass sequences of
// conv2d_batched_index.h on a CUDA executor, GEMMs by the batch-invariant kernel over the tasks
// (run_gemm_call_pinned) and the bias broadcast / bias gradient by kernels over the shared MT_HD
// bodies.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>

#include "core/check.h"
#include "core/cuda_check.h"
#include "models/linear_batched.h"

namespace mt {

namespace {

constexpr int kThreads = 256;

int blocks_for(int64_t n) {
  return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, 65535));
}

__global__ void bias_rows_kernel(int64_t size, int64_t tk, const float* __restrict__ b,
                                 float* __restrict__ y) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < size; e += step)
    y[e] = b[bias_index(tk, e)];
}

// One thread per bias entry, summing over the n examples in order (deterministic).
__global__ void bias_grad_kernel(int n, int64_t tk, const float* __restrict__ dy,
                                 float* __restrict__ db) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < tk; j += step)
    db[j] = bias_grad_sum(n, tk, dy, j);
}

struct CudaLinearExec {
  cudaStream_t stream;

  void gemm(const GemmCall& call, const float* A, const float* B, float* C) const {
    run_gemm_call_pinned(call, A, B, C, stream);
  }
  void bias_rows(int n, int64_t tk, const float* b, float* y) const {
    const int64_t size = static_cast<int64_t>(n) * tk;
    bias_rows_kernel<<<blocks_for(size), kThreads, 0, stream>>>(size, tk, b, y);
    MT_CUDA_CHECK_LAUNCH();
  }
  void bias_grad(int n, int64_t tk, const float* dy, float* db) const {
    bias_grad_kernel<<<blocks_for(tk), kThreads, 0, stream>>>(n, tk, dy, db);
    MT_CUDA_CHECK_LAUNCH();
  }
};

}  // namespace

BatchedLinearCuda::BatchedLinearCuda(int in_features, int out_features, int max_tasks, int max_n)
    : max_n_(max_n) {
  MT_CHECK(in_features > 0 && out_features > 0 && max_tasks >= 1 && max_n >= 1,
           "batched linear head ", in_features, " -> ", out_features, ", ", max_tasks,
           " tasks, max_n ", max_n);
  g_ = {max_tasks, in_features, out_features};
}

BatchedLinearGeom BatchedLinearCuda::at(int tasks, int n) const {
  MT_CHECK(n >= 1 && n <= max_n_, "batched linear head: n = ", n, " outside [1, ", max_n_, "]");
  MT_CHECK(tasks >= 1 && tasks <= g_.tasks, "batched linear head: ", tasks, " tasks outside [1, ",
           g_.tasks, "]");
  return g_.at_tasks(tasks);
}

void BatchedLinearCuda::forward(int tasks, int n, const float* W, const float* b, const float* x,
                                float* y, CUstream_st* stream) {
  const BatchedLinearGeom g = at(tasks, n);
  MT_CHECK(W && b && x && y, "batched linear forward: null device pointer");
  CudaLinearExec ex{stream};
  linear_gemm_forward(ex, g, n, W, b, x, y);
}

void BatchedLinearCuda::backward(int tasks, int n, const float* W, const float* x, const float* dy,
                                 float* dx, float* dW, float* db, CUstream_st* stream) {
  const BatchedLinearGeom g = at(tasks, n);
  MT_CHECK(W && x && dy && dW && db, "batched linear backward: null device pointer");
  CudaLinearExec ex{stream};
  linear_gemm_backward(ex, g, n, W, x, dy, dx, dW, db);
}

void BatchedLinearCuda::r_forward(int tasks, int n, const float* W, const float* R_W,
                                  const float* R_b, const float* x, const float* R_x, float* R_y,
                                  CUstream_st* stream) {
  const BatchedLinearGeom g = at(tasks, n);
  MT_CHECK(W && R_W && R_b && x && R_y, "batched linear r_forward: null device pointer");
  CudaLinearExec ex{stream};
  linear_gemm_r_forward(ex, g, n, W, R_W, R_b, x, R_x, R_y);
}

void BatchedLinearCuda::r_backward(int tasks, int n, const float* W, const float* R_W,
                                   const float* x, const float* R_x, const float* dy,
                                   const float* R_dy, float* R_dx, float* R_dW, float* R_db,
                                   CUstream_st* stream) {
  const BatchedLinearGeom g = at(tasks, n);
  MT_CHECK(W && R_W && x && dy && R_dy && R_dW && R_db,
           "batched linear r_backward: null device pointer");
  CudaLinearExec ex{stream};
  linear_gemm_r_backward(ex, g, n, W, R_W, x, R_x, dy, R_dy, R_dx, R_dW, R_db);
}

}  // namespace mt
