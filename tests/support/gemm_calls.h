// GEMM calls that exercise every path of an executor (host twin, tiled steps, GPU kernel): both
// transposes, beta 0 or 1, k as given, sizes off the 64×64 tiles, leading dimensions above the
// rows and batch strides with padding between the matrices.
#pragma once

#include <algorithm>
#include <cstdint>

#include "models/conv2d_batched_index.h"

namespace mt::testing {

inline GemmCall padded_gemm_call(bool transa, bool transb, double beta, int k) {
  GemmCall c;
  c.transa = transa;
  c.transb = transb;
  c.m = 70;
  c.n = 131;
  c.k = k;
  c.lda = std::max(transa ? k : c.m, 1) + 3;
  c.ldb = std::max(transb ? c.n : k, 1) + 5;
  c.ldc = c.m + 2;
  c.stride_a = static_cast<int64_t>(c.lda) * std::max(transa ? c.m : k, 1) + 7;
  c.stride_b = static_cast<int64_t>(c.ldb) * std::max(transb ? k : c.n, 1) + 1;
  c.stride_c = static_cast<int64_t>(c.ldc) * c.n + 9;
  c.batch = 3;
  c.beta = beta;
  return c;
}

}  // namespace mt::testing
