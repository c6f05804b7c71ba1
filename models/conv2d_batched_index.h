// Arithmetic shared by the task-batched conv / linear head on the GPU and their host twins
// (DESIGN §5.1): the MT_HD index bodies of the batched im2col, col2im and layout permutations,
// the exact cuBLAS arguments of every GEMM (GemmCall), and the GEMM-form pass sequences written
// once over an executor, so that CUDA (conv2d_gemm_cuda.cu, linear_batched_cuda.cu) and the
// host twin tested in CI (batched_gemm_host.cpp) run the same steps with the same arguments.
// No CUDA header: CPU code includes this file.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/episode.h"
#include "core/host_device.h"

struct CUstream_st;  // cudaStream_t is CUstream_st*

namespace mt {

// ---------------------------------------------------------------------------------------------
// Layouts. T tasks, n examples per task, P = out_h·out_w output pixels.
//   activations x [n, T·C, H, W]:  x[((i·T + t)·C + c)·H·W + p]
//   conv weights  [T·O, C, K, K]:  task t's OIHW filter set at t·O·C·K², K = 3 or 1
//   col (im2col)  [T, C·K², n·P]:  col[((t·C·K² + c·K² + k)·n + i)·P + q], tap k = K·(dy+p)+(dx+p)
//                                   with padding p = K/2; task t's block is Conv2d's im2col matrix
//   GEMM layout   [T, F, n·P]:     gm[((t·F + f)·n + i)·P + q] for activations of F channels
//   linear head   x [n, T·F], W [T, K, F], b [T, K], y [n, T·K]

// One task-batched K×K convolution, K = 3 (padding 1) or K = 1 (padding 0), stride 1 or 2,
// no bias.
struct BatchedConvGeom {
  int tasks = 0, in_c = 0, in_h = 0, in_w = 0, out_c = 0, out_h = 0, out_w = 0, stride = 1;
  int kernel = 3;

  MT_HD int taps() const { return kernel * kernel; }
  MT_HD int pad() const { return kernel / 2; }
  MT_HD int64_t in_plane() const { return static_cast<int64_t>(in_h) * in_w; }
  MT_HD int64_t out_plane() const { return static_cast<int64_t>(out_h) * out_w; }
  MT_HD int64_t col_rows() const { return static_cast<int64_t>(in_c) * taps(); }
  int64_t in_size(int n) const { return static_cast<int64_t>(n) * tasks * in_c * in_plane(); }
  int64_t out_size(int n) const { return static_cast<int64_t>(n) * tasks * out_c * out_plane(); }
  int64_t col_size(int n) const {
    return static_cast<int64_t>(tasks) * col_rows() * n * out_plane();
  }
  int64_t weight_size() const { return static_cast<int64_t>(tasks) * out_c * col_rows(); }
  // The same layer for a call of `t` tasks: a plan is built once for its most tasks and every
  // call of t <= that many uses this view (layouts and GEMM batch follow t).
  BatchedConvGeom at_tasks(int t) const {
    BatchedConvGeom g = *this;
    g.tasks = t;
    return g;
  }
};

// Checks the arguments (as Conv2d does) and derives the output size. Throws mt::Error.
BatchedConvGeom make_batched_conv_geom(Shape in, int out_channels, int stride, int tasks,
                                       int kernel = 3);

// ---------------------------------------------------------------------------------------------
// MT_HD element bodies. Each kernel of the GEMM form runs one of them per output element; its
// host twin loops over the same elements.

// Batched im2col: the index in x of what col entry e copies, or -1 where the tap reads padding.
MT_HD inline int64_t im2col_source(const BatchedConvGeom& g, int n, int64_t e) {
  const int64_t P = g.out_plane();
  const int q = static_cast<int>(e % P);
  int64_t r = e / P;
  const int64_t i = r % n;
  r /= n;
  const int k = static_cast<int>(r % g.taps());
  r /= g.taps();
  const int64_t c = r % g.in_c;
  const int64_t t = r / g.in_c;
  const int iy = (q / g.out_w) * g.stride + k / g.kernel - g.pad();
  const int ix = (q % g.out_w) * g.stride + k % g.kernel - g.pad();
  if (iy < 0 || iy >= g.in_h || ix < 0 || ix >= g.in_w) return -1;
  return ((i * g.tasks + t) * g.in_c + c) * g.in_plane() + static_cast<int64_t>(iy) * g.in_w + ix;
}

// Batched col2im, the adjoint of im2col: x entry e is the sum of the col entries that copied it,
// taken in tap order k = 0..K²−1 (a gather: deterministic, no atomics).
template <typename S>
MT_HD S col2im_sum(const BatchedConvGeom& g, int n, const S* col, int64_t e) {
  const int64_t plane = g.in_plane(), P = g.out_plane();
  const int p = static_cast<int>(e % plane);
  int64_t r = e / plane;
  const int64_t c = r % g.in_c;
  r /= g.in_c;
  const int64_t t = r % g.tasks;
  const int64_t i = r / g.tasks;
  const int iy = p / g.in_w, ix = p % g.in_w;
  S sum = S(0);
  for (int k = 0; k < g.taps(); ++k) {
    const int sy = iy - (k / g.kernel - g.pad()), sx = ix - (k % g.kernel - g.pad());
    if (sy < 0 || sx < 0 || sy % g.stride != 0 || sx % g.stride != 0) continue;
    const int oy = sy / g.stride, ox = sx / g.stride;  // sy = oy·stride, sx = ox·stride
    if (oy >= g.out_h || ox >= g.out_w) continue;
    sum += col[(((t * g.in_c + c) * g.taps() + k) * n + i) * P +
               static_cast<int64_t>(oy) * g.out_w + ox];
  }
  return sum;
}

// Activations [n, T·F, P] -> GEMM layout [T, F, n·P]: where activation entry e goes.
MT_HD inline int64_t gemm_layout_index(int tasks, int channels, int n, int64_t P, int64_t e) {
  const int64_t q = e % P;
  int64_t r = e / P;
  const int64_t f = r % channels;
  r /= channels;
  const int64_t t = r % tasks;
  const int64_t i = r / tasks;
  return ((t * channels + f) * n + i) * P + q;
}

// Linear head bias: y entry e ([n, T·K], tk = T·K) receives b[e mod tk] ([T, K] flat).
MT_HD inline int64_t bias_index(int64_t tk, int64_t e) { return e % tk; }

// db[j] = Σ_i dy[i·tk + j], i = 0..n-1 in order.
template <typename S>
MT_HD S bias_grad_sum(int n, int64_t tk, const S* dy, int64_t j) {
  S sum = S(0);
  for (int i = 0; i < n; ++i) sum += dy[static_cast<int64_t>(i) * tk + j];
  return sum;
}

// ---------------------------------------------------------------------------------------------
// GemmCall: the arguments of one cublasSgemmStridedBatched, column-major as cuBLAS defines it:
// for p < batch, C_p = alpha·op(A_p)·op(B_p) + beta·C_p with X_p = X + p·stride_x, op(A) m×k,
// op(B) k×n, C m×n; beta = 0 means C is not read. Row-major [r, c] data with leading
// dimension ld is the column-major [c, r] matrix with the same ld, so each row-major product
// Z = X·Y is issued as Zᵀ = Yᵀ·Xᵀ.
enum class GemmOperand {
  kWeight,      // W or R_W (conv [T·O, C·K²], linear [T, K, F])
  kInput,       // conv: col (im2col of x or R_x, or the column gradient); linear: x, R_x or dx
  kOutput,      // conv: y-side tensor in the GEMM layout; linear: y, dy or R_dy
  kWeightGrad,  // dW or R_dW
};

struct GemmCall {
  bool transa = false, transb = false;
  int m = 0, n = 0, k = 0;
  int lda = 0, ldb = 0, ldc = 0;
  long long stride_a = 0, stride_b = 0, stride_c = 0;
  int batch = 0;
  double alpha = 1, beta = 0;
  GemmOperand a = GemmOperand::kInput, b = GemmOperand::kWeight, c = GemmOperand::kOutput;
};

// Conv, per task t: forward Y = W·col ([O, n·P]); backward data dcol = Wᵀ·dY ([C·K², n·P]);
// backward filter dW = dY·colᵀ ([O, C·K²]). Y and dY are in the GEMM layout.
GemmCall conv_forward_gemm(const BatchedConvGeom& g, int n, double beta);
GemmCall conv_backward_data_gemm(const BatchedConvGeom& g, int n, double beta);
GemmCall conv_backward_filter_gemm(const BatchedConvGeom& g, int n, double beta);

// Linear head of T tasks, F in, K out, per task t: forward y = x·Wᵀ ([n, K], rows of stride
// T·K); backward data dx = dy·W ([n, F]); backward filter dW = dyᵀ·x ([K, F]).
struct BatchedLinearGeom {
  int tasks = 0, in_f = 0, out_f = 0;
  BatchedLinearGeom at_tasks(int t) const { return {t, in_f, out_f}; }
};
GemmCall linear_forward_gemm(const BatchedLinearGeom& g, int n, double beta);
GemmCall linear_backward_data_gemm(const BatchedLinearGeom& g, int n, double beta);
GemmCall linear_backward_filter_gemm(const BatchedLinearGeom& g, int n, double beta);

// cuBLAS's argument rules (dimensions ≥ 0, lda ≥ max(1, rows of A as stored), ...) and
// nonzero strides; throws mt::Error naming the offending field.
void check_gemm_call(const GemmCall& call);

// One element C_p[i, j] of a GemmCall's result as every executor computes it: the k products
// op(A_p)[i, l]·op(B_p)[l, j] accumulated by fused multiply-add in the order l = 0 … k−1,
// starting from zero, then alpha·sum, plus beta·C_p[i, j] (one more fused multiply-add) when
// beta ≠ 0. One fixed order and no split of k: an element's bits depend on its own row and
// column of the operands only — never on the batch count, the leading dimensions, the other
// matrices of the batch or how a kernel tiles the work. This is what makes a task's result
// independent of its batch-mates (DESIGN §6) on the GPU (gemm_pinned_cuda.cu) as on the host.
template <typename S>
MT_HD S gemm_call_element(const GemmCall& c, const S* Ap, const S* Bp, const S* Cp, int i, int j) {
  S sum = S(0);
  for (int l = 0; l < c.k; ++l) {
    const S a = c.transa ? Ap[l + static_cast<int64_t>(i) * c.lda]
                         : Ap[i + static_cast<int64_t>(l) * c.lda];
    const S b = c.transb ? Bp[j + static_cast<int64_t>(l) * c.ldb]
                         : Bp[l + static_cast<int64_t>(j) * c.ldb];
    sum = fused_multiply_add(a, b, sum);
  }
  const S scaled = static_cast<S>(c.alpha) * sum;
  if (c.beta == 0) return scaled;  // beta = 0: C is not read
  return fused_multiply_add(static_cast<S>(c.beta), Cp[i + static_cast<int64_t>(j) * c.ldc],
                            scaled);
}

// Host reference: executes call as cuBLAS defines it, every element by gemm_call_element.
template <typename S>
void run_gemm_call_host(const GemmCall& call, const S* A, const S* B, S* C);

// CUDA build only (gemm_pinned_cuda.cu): the same call by our tiled kernel on `stream`, each
// element's arithmetic exactly gemm_call_element's (so bit-identical to the host twin for
// float, and independent of the batch count). No cuBLAS: cuBLAS chooses kernels, split-K among
// them, from (m, n, k, batch count), which would make a task's bits depend on its batch-mates.
void run_gemm_call_pinned(const GemmCall& call, const float* A, const float* B, float* C,
                          CUstream_st* stream);

// The buffers a GEMM may read, by the operand names of GemmCall.
template <typename S>
struct GemmSources {
  const S* weight = nullptr;
  const S* input = nullptr;
  const S* output = nullptr;
};

template <typename S>
const S* gemm_source(GemmOperand which, const GemmSources<S>& s) {
  switch (which) {
    case GemmOperand::kWeight:
      return s.weight;
    case GemmOperand::kInput:
      return s.input;
    case GemmOperand::kOutput:
      return s.output;
    case GemmOperand::kWeightGrad:
      break;
  }
  return nullptr;  // a weight gradient is only ever written
}

// ---------------------------------------------------------------------------------------------
// GEMM-form pass sequences over an executor `ex` providing (S = float on CUDA, any on host):
//   ex.im2col(g, n, x, col)                          col = im2col(x)
//   ex.col2im(g, n, col, x)                          x = col2im(col)            (overwrites)
//   ex.to_gemm(tasks, channels, n, P, act, gm)       gm = act in the GEMM layout
//   ex.from_gemm(tasks, channels, n, P, gm, act)     act = gm in the activation layout
//   ex.gemm(call, A, B, C)                           the GemmCall
//   ex.bias_rows(n, tk, b, y)                        y[i, :] = b
//   ex.bias_grad(n, tk, dy, db)                      db = Σ_i dy[i, :]
// Steps on one executor run in order (one CUDA stream), so workspaces are reused in turn.

// Optional pointers (R_x, dx, R_dx) take no part in deducing S, so that callers may pass nullptr.
template <typename S>
struct NoDeduce {
  using type = S;
};
template <typename S>
using Opt = typename NoDeduce<S>::type;

// Workspace of the conv GEMM form: col holds col_size(max_n), gy and R_gy out_size(max_n) each.
template <typename S>
struct ConvGemmWorkspace {
  S* col = nullptr;
  S* gy = nullptr;
  S* R_gy = nullptr;
};

// y = conv(x, W). Overwrites y; uses col and gy.
template <typename S, class Exec>
void conv_gemm_forward(Exec& ex, const BatchedConvGeom& g, int n, const S* W, const S* x, S* y,
                       const ConvGemmWorkspace<S>& ws) {
  const GemmCall call = conv_forward_gemm(g, n, 0.0);
  const GemmSources<S> src{W, ws.col, nullptr};
  ex.im2col(g, n, x, ws.col);
  ex.gemm(call, gemm_source(call.a, src), gemm_source(call.b, src), ws.gy);
  ex.from_gemm(g.tasks, g.out_c, n, g.out_plane(), ws.gy, y);
}

// dx = convT(dy, W). Overwrites dx; uses gy and col.
template <typename S, class Exec>
void conv_gemm_backward_data(Exec& ex, const BatchedConvGeom& g, int n, const S* W, const S* dy,
                             S* dx, const ConvGemmWorkspace<S>& ws) {
  const GemmCall call = conv_backward_data_gemm(g, n, 0.0);
  const GemmSources<S> src{W, nullptr, ws.gy};
  ex.to_gemm(g.tasks, g.out_c, n, g.out_plane(), dy, ws.gy);
  ex.gemm(call, gemm_source(call.a, src), gemm_source(call.b, src), ws.col);
  ex.col2im(g, n, ws.col, dx);
}

// dW = corr(x, dy). Overwrites dW; uses col and gy.
template <typename S, class Exec>
void conv_gemm_backward_filter(Exec& ex, const BatchedConvGeom& g, int n, const S* x, const S* dy,
                               S* dW, const ConvGemmWorkspace<S>& ws) {
  const GemmCall call = conv_backward_filter_gemm(g, n, 0.0);
  const GemmSources<S> src{nullptr, ws.col, ws.gy};
  ex.im2col(g, n, x, ws.col);
  ex.to_gemm(g.tasks, g.out_c, n, g.out_plane(), dy, ws.gy);
  ex.gemm(call, gemm_source(call.a, src), gemm_source(call.b, src), dW);
}

// R_y = conv(x, R_W) + conv(R_x, W), R_x null = 0. Overwrites R_y; uses col and gy.
template <typename S, class Exec>
void conv_gemm_r_forward(Exec& ex, const BatchedConvGeom& g, int n, const S* W, const S* R_W,
                         const S* x, const Opt<S>* R_x, S* R_y, const ConvGemmWorkspace<S>& ws) {
  const GemmCall first = conv_forward_gemm(g, n, 0.0);
  const GemmSources<S> src_x{R_W, ws.col, nullptr};
  ex.im2col(g, n, x, ws.col);
  ex.gemm(first, gemm_source(first.a, src_x), gemm_source(first.b, src_x), ws.gy);
  if (R_x) {
    const GemmCall second = conv_forward_gemm(g, n, 1.0);
    const GemmSources<S> src_rx{W, ws.col, nullptr};
    ex.im2col(g, n, R_x, ws.col);
    ex.gemm(second, gemm_source(second.a, src_rx), gemm_source(second.b, src_rx), ws.gy);
  }
  ex.from_gemm(g.tasks, g.out_c, n, g.out_plane(), ws.gy, R_y);
}

// R_dW = corr(x, R_dy) + corr(R_x, dy); R_dx = convT(dy, R_W) + convT(R_dy, W) when R_dx is
// not null. Overwrites R_dW and R_dx; uses col, gy and R_gy.
template <typename S, class Exec>
void conv_gemm_r_backward(Exec& ex, const BatchedConvGeom& g, int n, const S* W, const S* R_W,
                          const S* x, const Opt<S>* R_x, const S* dy, const S* R_dy, Opt<S>* R_dx,
                          S* R_dW, const ConvGemmWorkspace<S>& ws) {
  const int64_t P = g.out_plane();
  ex.to_gemm(g.tasks, g.out_c, n, P, dy, ws.gy);
  ex.to_gemm(g.tasks, g.out_c, n, P, R_dy, ws.R_gy);
  {
    const GemmCall call = conv_backward_filter_gemm(g, n, 0.0);
    const GemmSources<S> src{nullptr, ws.col, ws.R_gy};
    ex.im2col(g, n, x, ws.col);
    ex.gemm(call, gemm_source(call.a, src), gemm_source(call.b, src), R_dW);
  }
  if (R_x) {
    const GemmCall call = conv_backward_filter_gemm(g, n, 1.0);
    const GemmSources<S> src{nullptr, ws.col, ws.gy};
    ex.im2col(g, n, R_x, ws.col);
    ex.gemm(call, gemm_source(call.a, src), gemm_source(call.b, src), R_dW);
  }
  if (R_dx) {
    const GemmCall first = conv_backward_data_gemm(g, n, 0.0);
    const GemmCall second = conv_backward_data_gemm(g, n, 1.0);
    const GemmSources<S> src_dy{R_W, nullptr, ws.gy}, src_rdy{W, nullptr, ws.R_gy};
    ex.gemm(first, gemm_source(first.a, src_dy), gemm_source(first.b, src_dy), ws.col);
    ex.gemm(second, gemm_source(second.a, src_rdy), gemm_source(second.b, src_rdy), ws.col);
    ex.col2im(g, n, ws.col, R_dx);
  }
}

// Linear head passes (no workspace). y = x·Wᵀ + b: overwrites y.
template <typename S, class Exec>
void linear_gemm_forward(Exec& ex, const BatchedLinearGeom& g, int n, const S* W, const S* b,
                         const S* x, S* y) {
  const GemmCall call = linear_forward_gemm(g, n, 1.0);
  const GemmSources<S> src{W, x, nullptr};
  ex.bias_rows(n, static_cast<int64_t>(g.tasks) * g.out_f, b, y);
  ex.gemm(call, gemm_source(call.a, src), gemm_source(call.b, src), y);
}

// dW = Σ_i dy_iᵀ x_i, db = Σ_i dy_i, dx = dy·W (when dx is not null). Overwrites all three.
template <typename S, class Exec>
void linear_gemm_backward(Exec& ex, const BatchedLinearGeom& g, int n, const S* W, const S* x,
                          const S* dy, Opt<S>* dx, S* dW, S* db) {
  const GemmCall filter = linear_backward_filter_gemm(g, n, 0.0);
  const GemmSources<S> src{W, x, dy};
  ex.gemm(filter, gemm_source(filter.a, src), gemm_source(filter.b, src), dW);
  ex.bias_grad(n, static_cast<int64_t>(g.tasks) * g.out_f, dy, db);
  if (dx) {
    const GemmCall data = linear_backward_data_gemm(g, n, 0.0);
    ex.gemm(data, gemm_source(data.a, src), gemm_source(data.b, src), dx);
  }
}

// R_y = x·R_Wᵀ + R_x·Wᵀ + R_b (R_x null = 0). Overwrites R_y.
template <typename S, class Exec>
void linear_gemm_r_forward(Exec& ex, const BatchedLinearGeom& g, int n, const S* W, const S* R_W,
                           const S* R_b, const S* x, const Opt<S>* R_x, S* R_y) {
  const GemmCall call = linear_forward_gemm(g, n, 1.0);
  const GemmSources<S> src_x{R_W, x, nullptr}, src_rx{W, R_x, nullptr};
  ex.bias_rows(n, static_cast<int64_t>(g.tasks) * g.out_f, R_b, R_y);
  ex.gemm(call, gemm_source(call.a, src_x), gemm_source(call.b, src_x), R_y);
  if (R_x) ex.gemm(call, gemm_source(call.a, src_rx), gemm_source(call.b, src_rx), R_y);
}

// R_dW = R_dyᵀ x + dyᵀ R_x, R_db = Σ_i R_dy_i, R_dx = dy·R_W + R_dy·W (when R_dx is not null).
// Overwrites R_dW, R_db and R_dx.
template <typename S, class Exec>
void linear_gemm_r_backward(Exec& ex, const BatchedLinearGeom& g, int n, const S* W, const S* R_W,
                            const S* x, const Opt<S>* R_x, const S* dy, const S* R_dy, Opt<S>* R_dx,
                            S* R_dW, S* R_db) {
  {
    const GemmCall call = linear_backward_filter_gemm(g, n, 0.0);
    const GemmSources<S> src{nullptr, x, R_dy};
    ex.gemm(call, gemm_source(call.a, src), gemm_source(call.b, src), R_dW);
  }
  if (R_x) {
    const GemmCall call = linear_backward_filter_gemm(g, n, 1.0);
    const GemmSources<S> src{nullptr, R_x, dy};
    ex.gemm(call, gemm_source(call.a, src), gemm_source(call.b, src), R_dW);
  }
  ex.bias_grad(n, static_cast<int64_t>(g.tasks) * g.out_f, R_dy, R_db);
  if (R_dx) {
    const GemmCall first = linear_backward_data_gemm(g, n, 0.0);
    const GemmCall second = linear_backward_data_gemm(g, n, 1.0);
    const GemmSources<S> src_dy{R_W, nullptr, dy}, src_rdy{W, nullptr, R_dy};
    ex.gemm(first, gemm_source(first.a, src_dy), gemm_source(first.b, src_dy), R_dx);
    ex.gemm(second, gemm_source(second.a, src_rdy), gemm_source(second.b, src_rdy), R_dx);
  }
}

// ---------------------------------------------------------------------------------------------
// Host twin executor (batched_gemm_host.cpp, float and double): every step loops over the
// same MT_HD bodies as the CUDA kernels and runs GEMMs by run_gemm_call_host.
template <typename S>
struct HostGemmExec {
  void im2col(const BatchedConvGeom& g, int n, const S* x, S* col) const;
  void col2im(const BatchedConvGeom& g, int n, const S* col, S* x) const;
  void to_gemm(int tasks, int channels, int n, int64_t P, const S* act, S* gm) const;
  void from_gemm(int tasks, int channels, int n, int64_t P, const S* gm, S* act) const;
  void gemm(const GemmCall& call, const S* A, const S* B, S* C) const;
  void bias_rows(int n, int64_t tk, const S* b, S* y) const;
  void bias_grad(int n, int64_t tk, const S* dy, S* db) const;
};

extern template struct HostGemmExec<float>;
extern template struct HostGemmExec<double>;

}  // namespace mt
