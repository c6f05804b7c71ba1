// Dense linear algebra on the CPU: a row-major GEMM templated on float/double over OpenBLAS,
// and the switch that keeps BLAS single-threaded inside a task (we parallelise over tasks).
#pragma once

#include <cstdint>

namespace mt {

// C = alpha * op(A) * op(B) + beta * C, row-major; op(A) is [M, K], op(B) is [K, N].
template <typename T>
void gemm(bool trans_a, bool trans_b, int M, int N, int K, T alpha, const T* A, int lda, const T* B,
          int ldb, T beta, T* C, int ldc);

// Floating-point operations (2·M·N·K per call) done by gemm since start-up, over all threads;
// the benchmarks' FLOP count (GEMMs are nearly all of the arithmetic of a conv net).
uint64_t gemm_flops();

// Call once at start-up: BLAS runs one thread per call; parallelism comes from tasks.
void blas_use_single_thread();

}  // namespace mt
