// OpenBLAS-backed implementation of core/blas.h.
#include "core/blas.h"

#include <cblas.h>

#include <atomic>
#include <cstring>

#include "core/cpu_kernels.h"

namespace mt {

namespace {
std::atomic<uint64_t> flops{0};
void count(int M, int N, int K) { flops.fetch_add(2ull * M * N * K, std::memory_order_relaxed); }

// Before main in every binary that multiplies matrices (this file is linked whenever gemm is),
// and before this binary's other static constructors: OpenBLAS chose its kernels when it was
// loaded; replace a slow choice now, before any thread, MPI or CUDA start.
__attribute__((constructor(101))) void choose_kernels_before_main() { choose_blas_kernels(); }
}  // namespace

uint64_t gemm_flops() { return flops.load(); }
void add_dense_flops(uint64_t n) { flops.fetch_add(n, std::memory_order_relaxed); }

template <>
void gemm<float>(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda,
                 const float* B, int ldb, float beta, float* C, int ldc) {
  count(M, N, K);
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N,
              K, alpha, A, lda, B, ldb, beta, C, ldc);
}

template <>
void gemm<double>(bool ta, bool tb, int M, int N, int K, double alpha, const double* A, int lda,
                  const double* B, int ldb, double beta, double* C, int ldc) {
  count(M, N, K);
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N,
              K, alpha, A, lda, B, ldb, beta, C, ldc);
}

std::string blas_core_name() { return openblas_get_corename(); }

bool blas_honours_coretype() {
  return std::strstr(openblas_get_config(), "DYNAMIC_ARCH") != nullptr;
}

void blas_use_single_thread() { openblas_set_num_threads(1); }

}  // namespace mt
