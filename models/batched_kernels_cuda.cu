// CUDA kernels of the task-batched element-wise layers (models/batched_kernels_cuda.h). Every
// element kernel is a grid-stride loop calling one MT_HD body of batched_kernels.h. Each
// per-(task, channel) reduction of batch norm is one block of kBnReduceThreads threads per channel
// (thread k = lane k: a strided partial in double, then the fixed shared-memory tree; see
// batched_kernels.h), and each task's softmax loss is a serial loop in one thread (n·K values).
// The host twins (batched_kernels_host.cpp) run exactly this decomposition; only FMA contraction
// and the device's exp/log may differ.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "core/check.h"
#include "core/cuda_check.h"
#include "models/batched_kernels.h"
#include "models/batched_kernels_cuda.h"

namespace mt {

namespace {

constexpr int kThreads = 256;
constexpr int kTaskThreads = 64;  // the softmax loss has few outputs (T): spread them over SMs

int blocks_for(int64_t count, int threads) {
  return static_cast<int>(std::min<int64_t>((count + threads - 1) / threads, 65535));
}

__device__ inline int64_t grid_start() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ inline int64_t grid_stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

// ---- batch norm ----
// The block policy of batched_kernels.h on the device: thread threadIdx.x is the lane; the
// partials live in shared memory. Launched with exactly kBnReduceThreads threads per block.
class DeviceBlock {
 public:
  __device__ explicit DeviceBlock(double* partials) : partials_(partials) {}
  __device__ double* partials() const { return partials_; }
  template <typename F>
  __device__ void sweep(F f) const {
    f(static_cast<int>(threadIdx.x));
    __syncthreads();
  }
  __device__ void tree(double* v, int m) const {
    for (int half = kBnReduceThreads / 2; half > 0; half /= 2) {
      bn_tree_level(v, m, static_cast<int>(threadIdx.x), half);
      __syncthreads();
    }
  }
  __device__ bool lead() const { return threadIdx.x == 0; }

 private:
  double* partials_;
};

// Block tc reduces channel tc.
__global__ void bn_forward_stats_kernel(int n, int TC, int HW, const float* x, float* xhat,
                                        float* sigma) {
  __shared__ double partials[kBnSlots * kBnReduceThreads];
  DeviceBlock b(partials);
  bn_forward_stats_block(b, blockIdx.x, n, TC, HW, x, xhat, sigma);
}
__global__ void bn_forward_kernel(int64_t count, int TC, int HW, const float* gamma,
                                  const float* beta, const float* sigma, float* xhat, float* y) {
  for (int64_t k = grid_start(); k < count; k += grid_stride())
    bn_forward_body(k, TC, HW, gamma, beta, sigma, xhat, y);
}
__global__ void bn_backward_stats_kernel(int n, int TC, int HW, const float* xhat, const float* dy,
                                         float* dgamma, float* dbeta) {
  __shared__ double partials[kBnSlots * kBnReduceThreads];
  DeviceBlock b(partials);
  bn_backward_stats_block(b, blockIdx.x, n, TC, HW, xhat, dy, dgamma, dbeta);
}
__global__ void bn_backward_dx_kernel(int64_t count, int n, int TC, int HW, const float* gamma,
                                      const float* xhat, const float* sigma, const float* dy,
                                      const float* dgamma, const float* dbeta, float* dx) {
  for (int64_t k = grid_start(); k < count; k += grid_stride())
    bn_backward_dx_body(k, n, TC, HW, gamma, xhat, sigma, dy, dgamma, dbeta, dx);
}
__global__ void bn_r_forward_stats_kernel(int n, int TC, int HW, const float* xhat,
                                          const float* R_x, float* work) {
  __shared__ double partials[kBnSlots * kBnReduceThreads];
  DeviceBlock b(partials);
  bn_r_forward_stats_block(b, blockIdx.x, n, TC, HW, xhat, R_x, work);
}
__global__ void bn_r_forward_kernel(int64_t count, int TC, int HW, const float* gamma,
                                    const float* R_gamma, const float* R_beta, const float* xhat,
                                    const float* sigma, const float* R_x, const float* work,
                                    float* R_y) {
  for (int64_t k = grid_start(); k < count; k += grid_stride())
    bn_r_forward_body(k, TC, HW, gamma, R_gamma, R_beta, xhat, sigma, R_x, work, R_y);
}
__global__ void bn_r_backward_stats_kernel(int n, int TC, int HW, const float* xhat,
                                           const float* sigma, const float* R_x, const float* dy,
                                           const float* R_dy, float* R_dgamma, float* R_dbeta,
                                           float* work) {
  __shared__ double partials[kBnSlots * kBnReduceThreads];
  DeviceBlock b(partials);
  bn_r_backward_stats_block(b, blockIdx.x, n, TC, HW, xhat, sigma, R_x, dy, R_dy, R_dgamma, R_dbeta,
                            work);
}
__global__ void bn_r_backward_dx_kernel(int64_t count, int n, int TC, int HW, const float* gamma,
                                        const float* R_gamma, const float* xhat, const float* sigma,
                                        const float* R_x, const float* dy, const float* R_dy,
                                        const float* R_dbeta, const float* work, float* R_dx) {
  for (int64_t k = grid_start(); k < count; k += grid_stride())
    bn_r_backward_dx_body(k, n, TC, HW, gamma, R_gamma, xhat, sigma, R_x, dy, R_dy, R_dbeta, work,
                          R_dx);
}

// ---- (leaky) ReLU, sum ----
__global__ void relu_forward_kernel(int64_t count, float slope, const float* x, float* y) {
  for (int64_t k = grid_start(); k < count; k += grid_stride()) relu_forward_body(k, slope, x, y);
}
__global__ void relu_backward_kernel(int64_t count, float slope, const float* x, const float* dy,
                                     float* dx) {
  for (int64_t k = grid_start(); k < count; k += grid_stride())
    relu_backward_body(k, slope, x, dy, dx);
}
__global__ void relu_r_forward_kernel(int64_t count, float slope, const float* x, const float* R_x,
                                      float* R_y) {
  for (int64_t k = grid_start(); k < count; k += grid_stride())
    relu_r_forward_body(k, slope, x, R_x, R_y);
}
__global__ void add_kernel(int64_t count, const float* a, const float* b, float* y) {
  for (int64_t k = grid_start(); k < count; k += grid_stride()) add_body(k, a, b, y);
}

// ---- max-pool ----
__global__ void max_pool_forward_kernel(int64_t count, int TC, int H, int W, const float* x,
                                        float* y, int32_t* index) {
  for (int64_t j = grid_start(); j < count; j += grid_stride())
    max_pool_forward_body(j, TC, H, W, x, y, index);
}
__global__ void max_pool_gather_kernel(int64_t count, int TC, int H, int W, const int32_t* index,
                                       const float* src, float* dst) {
  for (int64_t j = grid_start(); j < count; j += grid_stride())
    max_pool_gather_body(j, TC, H, W, index, src, dst);
}
__global__ void max_pool_scatter_kernel(int64_t count, int TC, int H, int W, const int32_t* index,
                                        const float* src, float* dst) {
  for (int64_t k = grid_start(); k < count; k += grid_stride())
    max_pool_scatter_body(k, TC, H, W, index, src, dst);
}

// ---- mean-pool ----
__global__ void mean_pool_average_kernel(int64_t count, int HW, const float* x, float* y) {
  for (int64_t k = grid_start(); k < count; k += grid_stride()) mean_pool_average_body(k, HW, x, y);
}
__global__ void mean_pool_spread_kernel(int64_t count, int HW, const float* dy, float* dx) {
  for (int64_t k = grid_start(); k < count; k += grid_stride())
    mean_pool_spread_body(k, HW, dy, dx);
}

// ---- softmax cross-entropy ----
__global__ void softmax_forward_kernel(int n, int tasks, int K, const float* z,
                                       const int32_t* labels, float* prob, float* loss,
                                       int32_t* correct) {
  for (int64_t t = grid_start(); t < tasks; t += grid_stride())
    softmax_forward_task_body(static_cast<int>(t), n, tasks, K, z, labels, prob, loss, correct);
}
__global__ void softmax_backward_kernel(int64_t count, int n, int K, const float* prob,
                                        const int32_t* labels, float* dz) {
  for (int64_t k = grid_start(); k < count; k += grid_stride())
    softmax_backward_body(k, n, K, prob, labels, dz);
}
__global__ void softmax_r_backward_kernel(int64_t rows, int n, int K, const float* prob,
                                          const float* R_z, float* R_dz) {
  for (int64_t r = grid_start(); r < rows; r += grid_stride())
    softmax_r_backward_row_body(r, n, K, prob, R_z, R_dz);
}

int64_t count_of(int n, int tasks, int C, int HW) {
  return static_cast<int64_t>(n) * tasks * C * HW;
}
void check_sizes(int n, int tasks, int C, int HW) {
  MT_CHECK(n >= 0 && tasks >= 1 && C >= 1 && HW >= 1, "batched kernel sizes n=", n,
           " tasks=", tasks, " C=", C, " HW=", HW);
}

}  // namespace

// Launches kernel<<<blocks for count, threads, 0, stream>>>(args...) unless count is 0, then
// checks the launch.
#define MT_LAUNCH(kernel, count, threads, stream, ...)                             \
  do {                                                                             \
    const int64_t mt_count_ = (count);                                             \
    if (mt_count_ > 0) {                                                           \
      kernel<<<blocks_for(mt_count_, threads), threads, 0, stream>>>(__VA_ARGS__); \
      MT_CUDA_CHECK_LAUNCH();                                                      \
    }                                                                              \
  } while (0)
// Launches a batch-norm reduction: one block of kBnReduceThreads threads per channel, TC ≥ 1.
#define MT_LAUNCH_BN_STATS(kernel, TC, stream, ...)             \
  do {                                                          \
    kernel<<<(TC), kBnReduceThreads, 0, stream>>>(__VA_ARGS__); \
    MT_CUDA_CHECK_LAUNCH();                                     \
  } while (0)

void bn_forward_cuda(int n, int tasks, int C, int HW, const float* x, const float* gamma,
                     const float* beta, float* y, float* xhat, float* sigma, CUstream_st* stream) {
  check_sizes(n, tasks, C, HW);
  MT_CHECK(n >= 1, "batch norm needs at least one example");
  const int TC = tasks * C;
  const int64_t count = count_of(n, tasks, C, HW);
  MT_LAUNCH_BN_STATS(bn_forward_stats_kernel, TC, stream, n, TC, HW, x, xhat, sigma);
  MT_LAUNCH(bn_forward_kernel, count, kThreads, stream, count, TC, HW, gamma, beta, sigma, xhat, y);
}

void bn_backward_cuda(int n, int tasks, int C, int HW, const float* gamma, const float* xhat,
                      const float* sigma, const float* dy, float* dx, float* dgamma, float* dbeta,
                      CUstream_st* stream) {
  check_sizes(n, tasks, C, HW);
  const int TC = tasks * C;
  const int64_t count = count_of(n, tasks, C, HW);
  MT_LAUNCH_BN_STATS(bn_backward_stats_kernel, TC, stream, n, TC, HW, xhat, dy, dgamma, dbeta);
  if (dx)
    MT_LAUNCH(bn_backward_dx_kernel, count, kThreads, stream, count, n, TC, HW, gamma, xhat, sigma,
              dy, dgamma, dbeta, dx);
}

void bn_r_forward_cuda(int n, int tasks, int C, int HW, const float* gamma, const float* R_gamma,
                       const float* R_beta, const float* xhat, const float* sigma, const float* R_x,
                       float* R_y, float* work, CUstream_st* stream) {
  check_sizes(n, tasks, C, HW);
  const int TC = tasks * C;
  const int64_t count = count_of(n, tasks, C, HW);
  if (R_x) MT_LAUNCH_BN_STATS(bn_r_forward_stats_kernel, TC, stream, n, TC, HW, xhat, R_x, work);
  MT_LAUNCH(bn_r_forward_kernel, count, kThreads, stream, count, TC, HW, gamma, R_gamma, R_beta,
            xhat, sigma, R_x, work, R_y);
}

void bn_r_backward_cuda(int n, int tasks, int C, int HW, const float* gamma, const float* R_gamma,
                        const float* xhat, const float* sigma, const float* R_x, const float* dy,
                        const float* R_dy, float* R_dx, float* R_dgamma, float* R_dbeta,
                        float* work, CUstream_st* stream) {
  check_sizes(n, tasks, C, HW);
  const int TC = tasks * C;
  const int64_t count = count_of(n, tasks, C, HW);
  MT_LAUNCH_BN_STATS(bn_r_backward_stats_kernel, TC, stream, n, TC, HW, xhat, sigma, R_x, dy, R_dy,
                     R_dgamma, R_dbeta, work);
  if (R_dx)
    MT_LAUNCH(bn_r_backward_dx_kernel, count, kThreads, stream, count, n, TC, HW, gamma, R_gamma,
              xhat, sigma, R_x, dy, R_dy, R_dbeta, work, R_dx);
}

void relu_forward_cuda(int64_t count, float slope, const float* x, float* y, CUstream_st* stream) {
  MT_LAUNCH(relu_forward_kernel, count, kThreads, stream, count, slope, x, y);
}
void relu_backward_cuda(int64_t count, float slope, const float* x, const float* dy, float* dx,
                        CUstream_st* stream) {
  if (dx) MT_LAUNCH(relu_backward_kernel, count, kThreads, stream, count, slope, x, dy, dx);
}
void relu_r_forward_cuda(int64_t count, float slope, const float* x, const float* R_x, float* R_y,
                         CUstream_st* stream) {
  MT_LAUNCH(relu_r_forward_kernel, count, kThreads, stream, count, slope, x, R_x, R_y);
}
void relu_r_backward_cuda(int64_t count, float slope, const float* x, const float* R_dy,
                          float* R_dx, CUstream_st* stream) {
  if (R_dx) MT_LAUNCH(relu_backward_kernel, count, kThreads, stream, count, slope, x, R_dy, R_dx);
}
void add_cuda(int64_t count, const float* a, const float* b, float* y, CUstream_st* stream) {
  MT_LAUNCH(add_kernel, count, kThreads, stream, count, a, b, y);
}

void max_pool_forward_cuda(int n, int tasks, int C, int H, int W, const float* x, float* y,
                           int32_t* index, CUstream_st* stream) {
  check_sizes(n, tasks, C, H * W);
  const int64_t count = count_of(n, tasks, C, (H / 2) * (W / 2));
  MT_LAUNCH(max_pool_forward_kernel, count, kThreads, stream, count, tasks * C, H, W, x, y, index);
}
void max_pool_backward_cuda(int n, int tasks, int C, int H, int W, const int32_t* index,
                            const float* dy, float* dx, CUstream_st* stream) {
  check_sizes(n, tasks, C, H * W);
  const int64_t count = count_of(n, tasks, C, H * W);
  if (dx)
    MT_LAUNCH(max_pool_scatter_kernel, count, kThreads, stream, count, tasks * C, H, W, index, dy,
              dx);
}
void max_pool_r_forward_cuda(int n, int tasks, int C, int H, int W, const int32_t* index,
                             const float* R_x, float* R_y, CUstream_st* stream) {
  check_sizes(n, tasks, C, H * W);
  const int64_t count = count_of(n, tasks, C, (H / 2) * (W / 2));
  MT_LAUNCH(max_pool_gather_kernel, count, kThreads, stream, count, tasks * C, H, W, index, R_x,
            R_y);
}
void max_pool_r_backward_cuda(int n, int tasks, int C, int H, int W, const int32_t* index,
                              const float* R_dy, float* R_dx, CUstream_st* stream) {
  max_pool_backward_cuda(n, tasks, C, H, W, index, R_dy, R_dx, stream);
}

void mean_pool_forward_cuda(int n, int tasks, int C, int HW, const float* x, float* y,
                            CUstream_st* stream) {
  check_sizes(n, tasks, C, HW);
  const int64_t count = count_of(n, tasks, C, 1);
  MT_LAUNCH(mean_pool_average_kernel, count, kThreads, stream, count, HW, x, y);
}
void mean_pool_backward_cuda(int n, int tasks, int C, int HW, const float* dy, float* dx,
                             CUstream_st* stream) {
  check_sizes(n, tasks, C, HW);
  const int64_t count = count_of(n, tasks, C, HW);
  if (dx) MT_LAUNCH(mean_pool_spread_kernel, count, kThreads, stream, count, HW, dy, dx);
}
void mean_pool_r_forward_cuda(int n, int tasks, int C, int HW, const float* R_x, float* R_y,
                              CUstream_st* stream) {
  if (R_x) {
    mean_pool_forward_cuda(n, tasks, C, HW, R_x, R_y, stream);
    return;
  }
  check_sizes(n, tasks, C, HW);
  const int64_t count = count_of(n, tasks, C, 1);
  if (count > 0) MT_CUDA_CHECK(cudaMemsetAsync(R_y, 0, count * sizeof(float), stream));
}
void mean_pool_r_backward_cuda(int n, int tasks, int C, int HW, const float* R_dy, float* R_dx,
                               CUstream_st* stream) {
  mean_pool_backward_cuda(n, tasks, C, HW, R_dy, R_dx, stream);
}

void softmax_xent_forward_cuda(int n, int tasks, int K, const float* z, const int32_t* labels,
                               float* prob, float* loss, int32_t* correct, CUstream_st* stream) {
  check_sizes(n, tasks, K, 1);
  MT_LAUNCH(softmax_forward_kernel, tasks, kTaskThreads, stream, n, tasks, K, z, labels, prob, loss,
            correct);
}
void softmax_xent_backward_cuda(int n, int tasks, int K, const float* prob, const int32_t* labels,
                                float* dz, CUstream_st* stream) {
  check_sizes(n, tasks, K, 1);
  const int64_t count = count_of(n, tasks, K, 1);
  MT_LAUNCH(softmax_backward_kernel, count, kThreads, stream, count, n, K, prob, labels, dz);
}
void softmax_xent_r_backward_cuda(int n, int tasks, int K, const float* prob, const float* R_z,
                                  float* R_dz, CUstream_st* stream) {
  check_sizes(n, tasks, K, 1);
  const int64_t rows = static_cast<int64_t>(n) * tasks;
  MT_LAUNCH(softmax_r_backward_kernel, rows, kThreads, stream, rows, n, K, prob, R_z, R_dz);
}

#undef MT_LAUNCH
#undef MT_LAUNCH_BN_STATS

}  // namespace mt
