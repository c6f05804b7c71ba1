// Device launchers of the task-batched element-wise kernels (models/batched_kernels.h): batch
// norm, (leaky) ReLU, tensor sums, 2×2 max-pool, global mean-pool and softmax cross-entropy;
// float, device pointers, asynchronous on `stream` (null = the default stream). Parameter lists,
// layouts and the buffers each call overwrites are those of the host twins in batched_kernels.h.
// CPU code may include this file (no CUDA header); it links only in the CUDA build. Errors throw
// mt::Error.
#pragma once

#include <cstdint>

struct CUstream_st;  // = cudaStream_t

namespace mt {

// Batch norm with per-(task, channel) batch statistics. work: bn_work_size(tasks, C) floats.
void bn_forward_cuda(int n, int tasks, int C, int HW, const float* x, const float* gamma,
                     const float* beta, float* y, float* xhat, float* sigma, CUstream_st* stream);
void bn_backward_cuda(int n, int tasks, int C, int HW, const float* gamma, const float* xhat,
                      const float* sigma, const float* dy, float* dx, float* dgamma, float* dbeta,
                      CUstream_st* stream);
void bn_r_forward_cuda(int n, int tasks, int C, int HW, const float* gamma, const float* R_gamma,
                       const float* R_beta, const float* xhat, const float* sigma, const float* R_x,
                       float* R_y, float* work, CUstream_st* stream);
void bn_r_backward_cuda(int n, int tasks, int C, int HW, const float* gamma, const float* R_gamma,
                        const float* xhat, const float* sigma, const float* R_x, const float* dy,
                        const float* R_dy, float* R_dx, float* R_dgamma, float* R_dbeta,
                        float* work, CUstream_st* stream);

// (Leaky) ReLU of negative slope `slope` over count elements.
void relu_forward_cuda(int64_t count, float slope, const float* x, float* y, CUstream_st* stream);
void relu_backward_cuda(int64_t count, float slope, const float* x, const float* dy, float* dx,
                        CUstream_st* stream);
void relu_r_forward_cuda(int64_t count, float slope, const float* x, const float* R_x, float* R_y,
                         CUstream_st* stream);
void relu_r_backward_cuda(int64_t count, float slope, const float* x, const float* R_dy,
                          float* R_dx, CUstream_st* stream);

// y = a + b over count elements (a or b null: zero); y may alias a or b.
void add_cuda(int64_t count, const float* a, const float* b, float* y, CUstream_st* stream);

// 2×2 max-pool, stride 2; index: per-example offsets into the [T·C, H, W] input slab.
void max_pool_forward_cuda(int n, int tasks, int C, int H, int W, const float* x, float* y,
                           int32_t* index, CUstream_st* stream);
void max_pool_backward_cuda(int n, int tasks, int C, int H, int W, const int32_t* index,
                            const float* dy, float* dx, CUstream_st* stream);
void max_pool_r_forward_cuda(int n, int tasks, int C, int H, int W, const int32_t* index,
                             const float* R_x, float* R_y, CUstream_st* stream);
void max_pool_r_backward_cuda(int n, int tasks, int C, int H, int W, const int32_t* index,
                              const float* R_dy, float* R_dx, CUstream_st* stream);

// Global mean-pool [n, T·C, H·W] -> [n, T·C].
void mean_pool_forward_cuda(int n, int tasks, int C, int HW, const float* x, float* y,
                            CUstream_st* stream);
void mean_pool_backward_cuda(int n, int tasks, int C, int HW, const float* dy, float* dx,
                             CUstream_st* stream);
void mean_pool_r_forward_cuda(int n, int tasks, int C, int HW, const float* R_x, float* R_y,
                              CUstream_st* stream);
void mean_pool_r_backward_cuda(int n, int tasks, int C, int HW, const float* R_dy, float* R_dx,
                               CUstream_st* stream);

// Softmax cross-entropy per task: loss [T] (float), correct [T].
void softmax_xent_forward_cuda(int n, int tasks, int K, const float* z, const int32_t* labels,
                               float* prob, float* loss, int32_t* correct, CUstream_st* stream);
void softmax_xent_backward_cuda(int n, int tasks, int K, const float* prob, const int32_t* labels,
                                float* dz, CUstream_st* stream);
void softmax_xent_r_backward_cuda(int n, int tasks, int K, const float* prob, const float* R_z,
                                  float* R_dz, CUstream_st* stream);

}  // namespace mt
