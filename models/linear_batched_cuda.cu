// CUDA kernels of the task-batched linear head (models/linear_batched.h): the pass sequences of
// conv2d_batched_index.h on a CUDA executor, GEMMs by strided-batched SGEMM over the tasks and
// the bias broadcast / bias gradient by kernels over the shared MT_HD bodies.
#include <cublas_v2.h>
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
constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;  // CUDA_NOTES: 32 MiB on sm_90

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
  cublasHandle_t handle;
  cudaStream_t stream;

  void gemm(const GemmCall& call, const float* A, const float* B, float* C) const {
    run_gemm_call_cublas(handle, call, A, B, C);
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

struct BatchedLinearCuda::Impl {
  cublasHandle_t handle = nullptr;
  DeviceBuffer<char> workspace;

  Impl() {
    MT_CUBLAS_CHECK(cublasCreate(&handle));
    try {
      MT_CUBLAS_CHECK(cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH));  // FP32, no TF32
      workspace = DeviceBuffer<char>(kCublasWorkspaceBytes);
    } catch (...) {
      cublasDestroy(handle);
      throw;
    }
  }
  ~Impl() {
    const cublasStatus_t s = cublasDestroy(handle);
    if (s != CUBLAS_STATUS_SUCCESS)
      std::fprintf(stderr, "mt::BatchedLinearCuda: cublasDestroy failed: %s\n",
                   cublasGetStatusString(s));
  }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  // cublasSetStream resets the workspace: set it again after every stream change.
  CudaLinearExec exec(CUstream_st* stream) {
    MT_CUBLAS_CHECK(cublasSetStream(handle, stream));
    MT_CUBLAS_CHECK(cublasSetWorkspace(handle, workspace.data(), workspace.size()));
    return CudaLinearExec{handle, stream};
  }
};

BatchedLinearCuda::BatchedLinearCuda(int in_features, int out_features, int tasks, int max_n)
    : max_n_(max_n) {
  MT_CHECK(in_features > 0 && out_features > 0 && tasks >= 1 && max_n >= 1, "batched linear head ",
           in_features, " -> ", out_features, ", ", tasks, " tasks, max_n ", max_n);
  g_.tasks = tasks;
  g_.in_f = in_features;
  g_.out_f = out_features;
  impl_ = std::make_unique<Impl>();
}

BatchedLinearCuda::~BatchedLinearCuda() = default;

namespace {
void check_n(int n, int max_n) {
  MT_CHECK(n >= 1 && n <= max_n, "batched linear head: n = ", n, " outside [1, ", max_n, "]");
}
}  // namespace

void BatchedLinearCuda::forward(int n, const float* W, const float* b, const float* x, float* y,
                                CUstream_st* stream) {
  check_n(n, max_n_);
  MT_CHECK(W && b && x && y, "batched linear forward: null device pointer");
  CudaLinearExec ex = impl_->exec(stream);
  linear_gemm_forward(ex, g_, n, W, b, x, y);
}

void BatchedLinearCuda::backward(int n, const float* W, const float* x, const float* dy, float* dx,
                                 float* dW, float* db, CUstream_st* stream) {
  check_n(n, max_n_);
  MT_CHECK(W && x && dy && dW && db, "batched linear backward: null device pointer");
  CudaLinearExec ex = impl_->exec(stream);
  linear_gemm_backward(ex, g_, n, W, x, dy, dx, dW, db);
}

void BatchedLinearCuda::r_forward(int n, const float* W, const float* R_W, const float* R_b,
                                  const float* x, const float* R_x, float* R_y,
                                  CUstream_st* stream) {
  check_n(n, max_n_);
  MT_CHECK(W && R_W && R_b && x && R_y, "batched linear r_forward: null device pointer");
  CudaLinearExec ex = impl_->exec(stream);
  linear_gemm_r_forward(ex, g_, n, W, R_W, R_b, x, R_x, R_y);
}

void BatchedLinearCuda::r_backward(int n, const float* W, const float* R_W, const float* x,
                                   const float* R_x, const float* dy, const float* R_dy,
                                   float* R_dx, float* R_dW, float* R_db, CUstream_st* stream) {
  check_n(n, max_n_);
  MT_CHECK(W && R_W && x && dy && R_dy && R_dW && R_db,
           "batched linear r_backward: null device pointer");
  CudaLinearExec ex = impl_->exec(stream);
  linear_gemm_r_backward(ex, g_, n, W, R_W, x, R_x, dy, R_dy, R_dx, R_dW, R_db);
}

}  // namespace mt
