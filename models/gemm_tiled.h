// The tiled GEMM of the GPU (gemm_pinned_cuda.cu) as MT_HD steps, so that the host can run the
// very same code: a block computes a 64×64 tile of C_p, staging k in slices of 16 through
// shared memory; thread tid owns a 4×4 grid of elements and fuses their products in order
// l = 0 … k−1 from zero, exactly as gemm_call_element — which makes each element's bits
// independent of the tiling, the batch count and the leading dimensions.
// run_gemm_call_tiled_host (batched_gemm_host.cpp) executes the steps block by block on the
// host, every thread's stage before any thread's accumulation (what __syncthreads orders on the
// GPU), so CI checks the kernel's index arithmetic against gemm_call_element without a GPU.
#pragma once

#include "models/conv2d_batched_index.h"

namespace mt {

struct GemmTiling {
  static constexpr int kTile = 64;   // rows (i) and columns (j) of C per block
  static constexpr int kSlice = 16;  // k per shared-memory stage
  static constexpr int kSide = 16;   // threads per tile side
  static constexpr int kThreads = kSide * kSide;
  static constexpr int kPer = kTile / kSide;  // elements per thread and side
};

// The shared memory of one block: op(A)[i0 .., l0 ..] and op(B)[l0 .., j0 ..] of one slice
// (+1 column so that the transposed stores hit distinct banks).
struct GemmTileStage {
  float a[GemmTiling::kSlice][GemmTiling::kTile + 1];
  float b[GemmTiling::kSlice][GemmTiling::kTile + 1];
};

// Thread tid's share of staging slice [l0, l0 + slice) of the block at (i0, j0), reading each
// matrix along its contiguous index. Entries outside the matrices are staged as 0 and never
// accumulated.
MT_HD inline void gemm_tile_stage(const GemmCall& c, const float* Ap, const float* Bp, int i0,
                                  int j0, int l0, int slice, int tid, GemmTileStage& s) {
  using G = GemmTiling;
  for (int e = tid; e < G::kSlice * G::kTile; e += G::kThreads) {
    const int ii = c.transa ? e / G::kSlice : e % G::kTile;
    const int kk = c.transa ? e % G::kSlice : e / G::kTile;
    const int i = i0 + ii, l = l0 + kk;
    float v = 0.0f;
    if (i < c.m && kk < slice)
      v = c.transa ? Ap[l + static_cast<int64_t>(i) * c.lda]
                   : Ap[i + static_cast<int64_t>(l) * c.lda];
    s.a[kk][ii] = v;
  }
  for (int e = tid; e < G::kSlice * G::kTile; e += G::kThreads) {
    const int jj = c.transb ? e % G::kTile : e / G::kSlice;
    const int kk = c.transb ? e / G::kTile : e % G::kSlice;
    const int j = j0 + jj, l = l0 + kk;
    float v = 0.0f;
    if (j < c.n && kk < slice)
      v = c.transb ? Bp[j + static_cast<int64_t>(l) * c.ldb]
                   : Bp[l + static_cast<int64_t>(j) * c.ldb];
    s.b[kk][jj] = v;
  }
}

// Thread tid's elements (i0 + tx + 16r, j0 + ty + 16s), tx = tid mod 16, ty = tid / 16: the
// slice's products fused in l order into acc.
MT_HD inline void gemm_tile_accumulate(const GemmTileStage& s, int slice, int tid,
                                       float (&acc)[GemmTiling::kPer][GemmTiling::kPer]) {
  using G = GemmTiling;
  const int tx = tid % G::kSide, ty = tid / G::kSide;
  for (int kk = 0; kk < slice; ++kk) {
    float a[G::kPer], b[G::kPer];
    for (int r = 0; r < G::kPer; ++r) {
      a[r] = s.a[kk][tx + G::kSide * r];
      b[r] = s.b[kk][ty + G::kSide * r];
    }
    for (int r = 0; r < G::kPer; ++r)
      for (int q = 0; q < G::kPer; ++q) acc[r][q] = fused_multiply_add(a[r], b[q], acc[r][q]);
  }
}

// Thread tid's elements inside C_p: alpha·sum, plus beta·C (fused) when beta ≠ 0.
MT_HD inline void gemm_tile_store(const GemmCall& c, float* Cp, int i0, int j0, int tid,
                                  const float (&acc)[GemmTiling::kPer][GemmTiling::kPer]) {
  using G = GemmTiling;
  const int tx = tid % G::kSide, ty = tid / G::kSide;
  const float alpha = static_cast<float>(c.alpha), beta = static_cast<float>(c.beta);
  for (int r = 0; r < G::kPer; ++r)
    for (int q = 0; q < G::kPer; ++q) {
      const int i = i0 + tx + G::kSide * r, j = j0 + ty + G::kSide * q;
      if (i >= c.m || j >= c.n) continue;
      float& out = Cp[i + static_cast<int64_t>(j) * c.ldc];
      const float scaled = alpha * acc[r][q];
      out = c.beta == 0 ? scaled : fused_multiply_add(beta, out, scaled);
    }
}

// The kernel's steps run on the host, block by block (see above). Tests only: it is slow.
void run_gemm_call_tiled_host(const GemmCall& call, const float* A, const float* B, float* C);

}  // namespace mt
