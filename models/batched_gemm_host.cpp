// Host side of the task-batched conv / linear head (models/conv2d_batched_index.h): the GemmCall
// of every GEMM, cuBLAS's argument rules, the host run of a GemmCall (element by element:
// gemm_call_element) and the host twin executor over the shared MT_HD bodies. float and double.
#include <algorithm>
#include <limits>
#include <vector>

#include "core/check.h"
#include "models/conv2d_batched_index.h"
#include "models/gemm_tiled.h"

namespace mt {

BatchedConvGeom make_batched_conv_geom(Shape in, int out_channels, int stride, int tasks,
                                       int kernel) {
  MT_CHECK(stride == 1 || stride == 2, "conv stride must be 1 or 2, got ", stride);
  MT_CHECK(kernel == 3 || kernel == 1, "conv kernel must be 3 or 1, got ", kernel);
  MT_CHECK(in.c > 0 && in.h > 0 && in.w > 0 && out_channels > 0, "bad conv shape ", in.c, "x", in.h,
           "x", in.w, " -> ", out_channels);
  MT_CHECK(tasks >= 1, "a task batch needs at least one task, got ", tasks);
  BatchedConvGeom g;
  g.tasks = tasks;
  g.in_c = in.c;
  g.in_h = in.h;
  g.in_w = in.w;
  g.out_c = out_channels;
  g.out_h = (in.h - 1) / stride + 1;
  g.out_w = (in.w - 1) / stride + 1;
  g.stride = stride;
  g.kernel = kernel;
  return g;
}

namespace {

int to_int(int64_t v, const char* what) {
  MT_CHECK(v >= 0 && v <= std::numeric_limits<int>::max(), what, " = ", v,
           " does not fit cuBLAS's int arguments");
  return static_cast<int>(v);
}

GemmCall make_call(bool transa, bool transb, int64_t m, int64_t n, int64_t k, int64_t lda,
                   int64_t ldb, int64_t ldc, int64_t sa, int64_t sb, int64_t sc, int batch,
                   double beta, GemmOperand a, GemmOperand b, GemmOperand c) {
  GemmCall call;
  call.transa = transa;
  call.transb = transb;
  call.m = to_int(m, "m");
  call.n = to_int(n, "n");
  call.k = to_int(k, "k");
  call.lda = to_int(lda, "lda");
  call.ldb = to_int(ldb, "ldb");
  call.ldc = to_int(ldc, "ldc");
  call.stride_a = sa;
  call.stride_b = sb;
  call.stride_c = sc;
  call.batch = batch;
  call.alpha = 1.0;
  call.beta = beta;
  call.a = a;
  call.b = b;
  call.c = c;
  check_gemm_call(call);
  return call;
}

}  // namespace

// Row-major per task (C9 = C·K², the im2col rows): Y [O, nP] = W [O, C9] · col [C9, nP];
// column-major Yᵀ = colᵀ · Wᵀ, where col as stored is colᵀ (ld nP) and W as stored is Wᵀ (ld C9).
GemmCall conv_forward_gemm(const BatchedConvGeom& g, int n, double beta) {
  const int64_t nP = n * g.out_plane(), C9 = g.col_rows(), O = g.out_c;
  return make_call(false, false, nP, O, C9, nP, C9, nP, C9 * nP, O * C9, O * nP, g.tasks, beta,
                   GemmOperand::kInput, GemmOperand::kWeight, GemmOperand::kOutput);
}

// dcol [C9, nP] = Wᵀ [C9, O] · dY [O, nP]; column-major dcolᵀ = dYᵀ · W, W as stored is Wᵀ.
GemmCall conv_backward_data_gemm(const BatchedConvGeom& g, int n, double beta) {
  const int64_t nP = n * g.out_plane(), C9 = g.col_rows(), O = g.out_c;
  return make_call(false, true, nP, C9, O, nP, C9, nP, O * nP, O * C9, C9 * nP, g.tasks, beta,
                   GemmOperand::kOutput, GemmOperand::kWeight, GemmOperand::kInput);
}

// dW [O, C9] = dY [O, nP] · colᵀ [nP, C9]; column-major dWᵀ = col · dYᵀ, col as stored is colᵀ.
GemmCall conv_backward_filter_gemm(const BatchedConvGeom& g, int n, double beta) {
  const int64_t nP = n * g.out_plane(), C9 = g.col_rows(), O = g.out_c;
  return make_call(true, false, C9, O, nP, nP, nP, C9, C9 * nP, O * nP, O * C9, g.tasks, beta,
                   GemmOperand::kInput, GemmOperand::kOutput, GemmOperand::kWeightGrad);
}

// y_t [n, K] = x_t [n, F] · W_tᵀ; column-major y_tᵀ (ld T·K) = W_t · x_tᵀ (x_tᵀ: ld T·F),
// W_t as stored is W_tᵀ (ld F). Task t's slices start at t·K, t·F and t·K·F.
GemmCall linear_forward_gemm(const BatchedLinearGeom& g, int n, double beta) {
  const int64_t T = g.tasks, F = g.in_f, K = g.out_f;
  return make_call(true, false, K, n, F, F, T * F, T * K, K * F, F, K, g.tasks, beta,
                   GemmOperand::kWeight, GemmOperand::kInput, GemmOperand::kOutput);
}

// dx_t [n, F] = dy_t [n, K] · W_t; column-major dx_tᵀ = W_tᵀ · dy_tᵀ.
GemmCall linear_backward_data_gemm(const BatchedLinearGeom& g, int n, double beta) {
  const int64_t T = g.tasks, F = g.in_f, K = g.out_f;
  return make_call(false, false, F, n, K, F, T * K, T * F, K * F, K, F, g.tasks, beta,
                   GemmOperand::kWeight, GemmOperand::kOutput, GemmOperand::kInput);
}

// dW_t [K, F] = dy_tᵀ · x_t; column-major dW_tᵀ (ld F) = x_tᵀ · dy_t, dy_t as stored is dy_tᵀ.
GemmCall linear_backward_filter_gemm(const BatchedLinearGeom& g, int n, double beta) {
  const int64_t T = g.tasks, F = g.in_f, K = g.out_f;
  return make_call(false, true, F, K, n, T * F, T * K, F, F, K, K * F, g.tasks, beta,
                   GemmOperand::kInput, GemmOperand::kOutput, GemmOperand::kWeightGrad);
}

void check_gemm_call(const GemmCall& c) {
  MT_CHECK(c.m >= 0 && c.n >= 0 && c.k >= 0, "GEMM dimensions m=", c.m, " n=", c.n, " k=", c.k);
  MT_CHECK(c.batch >= 0, "GEMM batch count ", c.batch);
  const int rows_a = c.transa ? c.k : c.m, rows_b = c.transb ? c.n : c.k;
  MT_CHECK(c.lda >= std::max(1, rows_a), "GEMM lda=", c.lda, " < ", std::max(1, rows_a));
  MT_CHECK(c.ldb >= std::max(1, rows_b), "GEMM ldb=", c.ldb, " < ", std::max(1, rows_b));
  MT_CHECK(c.ldc >= std::max(1, c.m), "GEMM ldc=", c.ldc, " < ", std::max(1, c.m));
  MT_CHECK(c.batch <= 1 || (c.stride_a > 0 && c.stride_b > 0 && c.stride_c > 0),
           "GEMM strides must be positive: ", c.stride_a, ", ", c.stride_b, ", ", c.stride_c);
  MT_CHECK(c.c != c.a && c.c != c.b && c.a != GemmOperand::kWeightGrad &&
               c.b != GemmOperand::kWeightGrad,
           "GEMM operands: C must differ from A and B, and weight gradients are never read");
}

template <typename S>
void run_gemm_call_host(const GemmCall& c, const S* A, const S* B, S* C) {
  check_gemm_call(c);
  MT_CHECK(C && (c.k == 0 || (A && B)), "null GEMM operand");
  for (int p = 0; p < c.batch; ++p) {
    const S* Ap = A + p * c.stride_a;
    const S* Bp = B + p * c.stride_b;
    S* Cp = C + p * c.stride_c;
    for (int j = 0; j < c.n; ++j)
      for (int i = 0; i < c.m; ++i)
        Cp[i + static_cast<int64_t>(j) * c.ldc] = gemm_call_element(c, Ap, Bp, Cp, i, j);
  }
}

void run_gemm_call_tiled_host(const GemmCall& c, const float* A, const float* B, float* C) {
  using G = GemmTiling;
  check_gemm_call(c);
  MT_CHECK(C && (c.k == 0 || (A && B)), "null GEMM operand");
  GemmTileStage stage;
  std::vector<float> acc(static_cast<size_t>(G::kThreads) * G::kPer * G::kPer);
  auto acc_of = [&](int tid) -> float(&)[G::kPer][G::kPer] {
    return *reinterpret_cast<float(*)[G::kPer][G::kPer]>(&acc[tid * G::kPer * G::kPer]);
  };
  for (int p = 0; p < c.batch; ++p)
    for (int i0 = 0; i0 < c.m; i0 += G::kTile)
      for (int j0 = 0; j0 < c.n; j0 += G::kTile) {  // one block
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (int l0 = 0; l0 < c.k; l0 += G::kSlice) {
          const int slice = std::min(G::kSlice, c.k - l0);
          for (int tid = 0; tid < G::kThreads; ++tid)  // then __syncthreads()
            gemm_tile_stage(c, A + p * c.stride_a, B + p * c.stride_b, i0, j0, l0, slice, tid,
                            stage);
          for (int tid = 0; tid < G::kThreads; ++tid)
            gemm_tile_accumulate(stage, slice, tid, acc_of(tid));
        }
        for (int tid = 0; tid < G::kThreads; ++tid)
          gemm_tile_store(c, C + p * c.stride_c, i0, j0, tid, acc_of(tid));
      }
}

template <typename S>
void HostGemmExec<S>::im2col(const BatchedConvGeom& g, int n, const S* x, S* col) const {
  const int64_t size = g.col_size(n);
  for (int64_t e = 0; e < size; ++e) {
    const int64_t src = im2col_source(g, n, e);
    col[e] = src < 0 ? S(0) : x[src];
  }
}

template <typename S>
void HostGemmExec<S>::col2im(const BatchedConvGeom& g, int n, const S* col, S* x) const {
  const int64_t size = g.in_size(n);
  for (int64_t e = 0; e < size; ++e) x[e] = col2im_sum(g, n, col, e);
}

template <typename S>
void HostGemmExec<S>::to_gemm(int tasks, int channels, int n, int64_t P, const S* act,
                              S* gm) const {
  const int64_t size = static_cast<int64_t>(n) * tasks * channels * P;
  for (int64_t e = 0; e < size; ++e) gm[gemm_layout_index(tasks, channels, n, P, e)] = act[e];
}

template <typename S>
void HostGemmExec<S>::from_gemm(int tasks, int channels, int n, int64_t P, const S* gm,
                                S* act) const {
  const int64_t size = static_cast<int64_t>(n) * tasks * channels * P;
  for (int64_t e = 0; e < size; ++e) act[e] = gm[gemm_layout_index(tasks, channels, n, P, e)];
}

template <typename S>
void HostGemmExec<S>::gemm(const GemmCall& call, const S* A, const S* B, S* C) const {
  run_gemm_call_host(call, A, B, C);
}

template <typename S>
void HostGemmExec<S>::bias_rows(int n, int64_t tk, const S* b, S* y) const {
  for (int64_t e = 0; e < n * tk; ++e) y[e] = b[bias_index(tk, e)];
}

template <typename S>
void HostGemmExec<S>::bias_grad(int n, int64_t tk, const S* dy, S* db) const {
  for (int64_t j = 0; j < tk; ++j) db[j] = bias_grad_sum(n, tk, dy, j);
}

template void run_gemm_call_host<float>(const GemmCall&, const float*, const float*, float*);
template void run_gemm_call_host<double>(const GemmCall&, const double*, const double*, double*);
template struct HostGemmExec<float>;
template struct HostGemmExec<double>;

}  // namespace mt
