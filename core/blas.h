// Dense linear algebra on the CPU: a row-major GEMM templated on float/double over OpenBLAS,
// the switch that keeps BLAS single-threaded inside a task (we parallelise over tasks), and
// which of OpenBLAS's kernel sets is loaded.
#pragma once

#include <cstdint>
#include <string>

namespace mt {

// C = alpha * op(A) * op(B) + beta * C, row-major; op(A) is [M, K], op(B) is [K, N].
template <typename T>
void gemm(bool trans_a, bool trans_b, int M, int N, int K, T alpha, const T* A, int lda, const T* B,
          int ldb, T beta, T* C, int ldc);

// Floating-point operations of the dense kernels since start-up, over all threads: gemm (2·M·N·K
// per call) and the float convolutions on oneDNN (each pass counted as its direct GEMM,
// 2·m·O·C·9·P, also when it runs as Winograd); the benchmarks' FLOP count (these are nearly all
// of the arithmetic of a conv net).
uint64_t gemm_flops();
void add_dense_flops(uint64_t flops);

// The kernel set OpenBLAS chose at load ("Haswell", "SkylakeX", ...; openblas_get_corename).
std::string blas_core_name();
// Whether this OpenBLAS chooses among kernel sets at run time (DYNAMIC_ARCH), and so honours
// OPENBLAS_CORETYPE. core/cpu_kernels.h makes the choice the CPU allows before main.
bool blas_honours_coretype();

// Call once at start-up: BLAS runs one thread per call; parallelism comes from tasks.
void blas_use_single_thread();

}  // namespace mt
