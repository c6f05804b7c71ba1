// The batch-invariant GEMM of the task-batched conv and head (conv2d_batched_index.h,
// run_gemm_call_pinned): a tiled kernel whose every output element is computed exactly as
// gemm_call_element says (k products fused in order from zero, then alpha, then beta), so its
// bits do not depend on the batch count, the leading dimensions or the tiling, and equal the
// host twin's. 64×64 tiles of C per block, k in slices of 16 staged in shared memory, 4×4
// elements per thread; the batch is the grid's z.
#include <cuda_runtime.h>

#include <algorithm>

#include "core/check.h"
#include "core/cuda_check.h"
#include "models/conv2d_batched_index.h"

namespace mt {

namespace {

constexpr int kTile = 64;   // rows (i) and columns (j) of C per block
constexpr int kSlice = 16;  // k per shared-memory stage
constexpr int kSide = 16;   // threads per tile side; each thread owns 4×4 elements
constexpr int kThreads = kSide * kSide;
constexpr int kPer = kTile / kSide;

__global__ void __launch_bounds__(kThreads)
    pinned_gemm_kernel(GemmCall c, const float* __restrict__ A, const float* __restrict__ B,
                       float* __restrict__ C) {
  // +1 column: the transposed stores below hit distinct banks.
  __shared__ float As[kSlice][kTile + 1];
  __shared__ float Bs[kSlice][kTile + 1];
  const int64_t p = blockIdx.z;
  const float* Ap = A + p * c.stride_a;
  const float* Bp = B + p * c.stride_b;
  float* Cp = C + p * c.stride_c;
  const int i0 = blockIdx.x * kTile, j0 = blockIdx.y * kTile;
  const int tx = threadIdx.x % kSide, ty = threadIdx.x / kSide;
  float acc[kPer][kPer];
#pragma unroll
  for (int r = 0; r < kPer; ++r)
#pragma unroll
    for (int s = 0; s < kPer; ++s) acc[r][s] = 0.0f;

  for (int l0 = 0; l0 < c.k; l0 += kSlice) {
    const int slice = min(kSlice, c.k - l0);
    // Stage op(A)[i0 .. i0+63, l0 .. l0+slice) and op(B)[l0 .., j0 .. j0+63), reading memory
    // along its contiguous index. Entries outside the matrices are never accumulated.
    for (int e = threadIdx.x; e < kSlice * kTile; e += kThreads) {
      const int ii = c.transa ? e / kSlice : e % kTile;
      const int kk = c.transa ? e % kSlice : e / kTile;
      const int i = i0 + ii, l = l0 + kk;
      float v = 0.0f;
      if (i < c.m && kk < slice)
        v = c.transa ? Ap[l + static_cast<int64_t>(i) * c.lda]
                     : Ap[i + static_cast<int64_t>(l) * c.lda];
      As[kk][ii] = v;
    }
    for (int e = threadIdx.x; e < kSlice * kTile; e += kThreads) {
      const int jj = c.transb ? e % kTile : e / kSlice;
      const int kk = c.transb ? e / kTile : e % kSlice;
      const int j = j0 + jj, l = l0 + kk;
      float v = 0.0f;
      if (j < c.n && kk < slice)
        v = c.transb ? Bp[j + static_cast<int64_t>(l) * c.ldb]
                     : Bp[l + static_cast<int64_t>(j) * c.ldb];
      Bs[kk][jj] = v;
    }
    __syncthreads();
    for (int kk = 0; kk < slice; ++kk) {  // l ascending, as in gemm_call_element
      float a[kPer], b[kPer];
#pragma unroll
      for (int r = 0; r < kPer; ++r) {
        a[r] = As[kk][tx + kSide * r];
        b[r] = Bs[kk][ty + kSide * r];
      }
#pragma unroll
      for (int r = 0; r < kPer; ++r)
#pragma unroll
        for (int s = 0; s < kPer; ++s) acc[r][s] = fused_multiply_add(a[r], b[s], acc[r][s]);
    }
    __syncthreads();
  }

  const float alpha = static_cast<float>(c.alpha), beta = static_cast<float>(c.beta);
#pragma unroll
  for (int r = 0; r < kPer; ++r)
#pragma unroll
    for (int s = 0; s < kPer; ++s) {
      const int i = i0 + tx + kSide * r, j = j0 + ty + kSide * s;
      if (i >= c.m || j >= c.n) continue;
      float& out = Cp[i + static_cast<int64_t>(j) * c.ldc];
      const float scaled = alpha * acc[r][s];
      out = c.beta == 0 ? scaled : fused_multiply_add(beta, out, scaled);
    }
}

}  // namespace

void run_gemm_call_pinned(const GemmCall& c, const float* A, const float* B, float* C,
                          CUstream_st* stream) {
  check_gemm_call(c);
  if (c.m == 0 || c.n == 0 || c.batch == 0) return;
  MT_CHECK(C && (c.k == 0 || (A && B)), "batched GEMM: null device pointer");
  const int64_t tiles_i = (c.m + kTile - 1) / kTile, tiles_j = (c.n + kTile - 1) / kTile;
  MT_CHECK(tiles_j <= 65535 && c.batch <= 65535, "batched GEMM of ", c.n, " columns and ", c.batch,
           " matrices exceeds the grid (65535 tiles of ", kTile,
           " columns, 65535 "
           "matrices)");
  const dim3 grid(static_cast<unsigned>(tiles_i), static_cast<unsigned>(tiles_j),
                  static_cast<unsigned>(c.batch));
  pinned_gemm_kernel<<<grid, kThreads, 0, stream>>>(c, A, B, C);
  MT_CUDA_CHECK_LAUNCH();
}

}  // namespace mt
