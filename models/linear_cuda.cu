// CUDA kernels of Linear (models/linear_cuda.h): the bias is broadcast into every row of y,
// then one cuBLAS SGEMM accumulates x Wᵀ onto it, the same order of operations as the CPU.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>

#include "core/cuda_check.h"
#include "models/linear_cuda.h"

namespace mt {

namespace {
// y[i, j] = b[j] for the n = rows * cols entries of the row-major y.
__global__ void broadcast_rows(int64_t n, int cols, const float* __restrict__ b,
                               float* __restrict__ y) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < n; k += stride)
    y[k] = b[k % cols];
}
}  // namespace

// Owns the cuBLAS handle, so that it is destroyed also when the LinearCuda constructor throws.
struct LinearCuda::Impl {
  Impl() { MT_CUBLAS_CHECK(cublasCreate(&handle)); }
  ~Impl() {
    const cublasStatus_t s = cublasDestroy(handle);
    if (s != CUBLAS_STATUS_SUCCESS)
      std::fprintf(stderr, "mt::LinearCuda: cublasDestroy failed: %s\n", cublasGetStatusString(s));
  }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  cublasHandle_t handle = nullptr;
};

LinearCuda::LinearCuda(int in_features, int out_features) : in_(in_features), out_(out_features) {
  MT_CHECK(in_features > 0 && out_features > 0, "linear layer ", in_features, " -> ", out_features);
  impl_ = std::make_unique<Impl>();
  // Plain FP32 arithmetic, no TF32 tensor-op math: results match the CPU to FP32 rounding.
  MT_CUBLAS_CHECK(cublasSetMathMode(impl_->handle, CUBLAS_DEFAULT_MATH));
}

LinearCuda::~LinearCuda() = default;

void LinearCuda::forward(int m, const float* dW, const float* dx, float* dy) const {
  MT_CHECK(m >= 0, "batch size ", m);
  if (m == 0) return;
  MT_CHECK(dW && dx && dy, "null device pointer");
  const int64_t n = static_cast<int64_t>(m) * out_;
  constexpr int kThreads = 256;
  const int blocks = static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, 4096));
  broadcast_rows<<<blocks, kThreads>>>(n, out_, dW + static_cast<int64_t>(in_) * out_, dy);
  MT_CUDA_CHECK_LAUNCH();

  // cuBLAS is column-major: row-major y [m, out] is column-major yᵀ [out, m], and
  // yᵀ = W xᵀ, where row-major W [out, in] is column-major Wᵀ (hence OP_T) and row-major
  // x [m, in] is column-major xᵀ (OP_N).
  const float one = 1.0f;
  MT_CUBLAS_CHECK(cublasSgemm(impl_->handle, CUBLAS_OP_T, CUBLAS_OP_N, out_, m, in_, &one, dW, in_,
                              dx, in_, &one, dy, out_));
}

}  // namespace mt
