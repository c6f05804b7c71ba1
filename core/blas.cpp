// OpenBLAS-backed implementation of core/blas.h.
#include "core/blas.h"

#include <cblas.h>

#include <atomic>

namespace mt {

namespace {
std::atomic<uint64_t> flops{0};
void count(int M, int N, int K) { flops.fetch_add(2ull * M * N * K, std::memory_order_relaxed); }
}  // namespace

uint64_t gemm_flops() { return flops.load(); }

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

void blas_use_single_thread() { openblas_set_num_threads(1); }

}  // namespace mt
