// The batch-invariant GEMM of the task-batched conv and head (conv2d_batched_index.h,
// run_gemm_call_pinned): the tiled steps of gemm_tiled.h, one block per 64×64 tile of C_p, the
// batch on the grid's z. Every output element is computed exactly as gemm_call_element says, so
// its bits do not depend on the batch count, the leading dimensions or the tiling, and equal
// the host twin's (run_gemm_call_tiled_host runs these same steps in CI).
#include <cuda_runtime.h>

#include <algorithm>

#include "core/check.h"
#include "core/cuda_check.h"
#include "models/gemm_tiled.h"

namespace mt {

namespace {

using G = GemmTiling;

__global__ void __launch_bounds__(G::kThreads)
    pinned_gemm_kernel(GemmCall c, const float* __restrict__ A, const float* __restrict__ B,
                       float* __restrict__ C) {
  __shared__ GemmTileStage stage;
  const int64_t p = blockIdx.z;
  const float* Ap = A + p * c.stride_a;
  const float* Bp = B + p * c.stride_b;
  const int i0 = blockIdx.x * G::kTile, j0 = blockIdx.y * G::kTile;
  const int tid = threadIdx.x;
  float acc[G::kPer][G::kPer];
#pragma unroll
  for (int r = 0; r < G::kPer; ++r)
#pragma unroll
    for (int q = 0; q < G::kPer; ++q) acc[r][q] = 0.0f;
  for (int l0 = 0; l0 < c.k; l0 += G::kSlice) {
    const int slice = min(G::kSlice, c.k - l0);
    gemm_tile_stage(c, Ap, Bp, i0, j0, l0, slice, tid, stage);
    __syncthreads();
    gemm_tile_accumulate(stage, slice, tid, acc);
    __syncthreads();
  }
  gemm_tile_store(c, C + p * c.stride_c, i0, j0, tid, acc);
}

}  // namespace

void run_gemm_call_pinned(const GemmCall& c, const float* A, const float* B, float* C,
                          CUstream_st* stream) {
  check_gemm_call(c);
  if (c.m == 0 || c.n == 0 || c.batch == 0) return;
  MT_CHECK(C && (c.k == 0 || (A && B)), "batched GEMM: null device pointer");
  const int64_t tiles_i = (c.m + G::kTile - 1) / G::kTile,
                tiles_j = (c.n + G::kTile - 1) / G::kTile;
  MT_CHECK(tiles_j <= 65535 && c.batch <= 65535, "batched GEMM of ", c.n, " columns and ", c.batch,
           " matrices exceeds the grid (65535 tiles of ", G::kTile,
           " columns, 65535 "
           "matrices)");
  const dim3 grid(static_cast<unsigned>(tiles_i), static_cast<unsigned>(tiles_j),
                  static_cast<unsigned>(c.batch));
  pinned_gemm_kernel<<<grid, G::kThreads, 0, stream>>>(c, A, B, C);
  MT_CUDA_CHECK_LAUNCH();
}

}  // namespace mt
