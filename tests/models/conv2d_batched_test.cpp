// Host twin of the task-batched conv and linear head (models/conv2d_batched_index.h: the MT_HD
// im2col / col2im bodies, the GemmCalls and the pass sequences the CUDA forms run) in float64
// against Conv2d<double> / Linear<double> run task by task, for every pass incl. the R-passes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <ostream>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/rng.h"
#include "models/conv2d.h"
#include "models/conv2d_batched_index.h"
#include "models/gemm_tiled.h"
#include "models/linear.h"
#include "tests/support/gemm_calls.h"
#include "tests/support/near_ref.h"

namespace mt {
namespace {

using Vec = std::vector<double>;

Vec random_vec(int64_t n, uint64_t seed) {
  Rng rng(seed, 0, 0, Stream::kTest);
  Vec v(static_cast<size_t>(n));
  for (double& x : v) x = rng.uniform(-1, 1);
  return v;
}

Vec poison(int64_t n) { return Vec(static_cast<size_t>(n), std::nan("")); }

// Batched activations [n, T·C, P] <-> task t's [n, C, P].
Vec task_slice(const Vec& a, int n, int T, int C, int64_t P, int t) {
  Vec s(static_cast<size_t>(n) * C * P);
  for (int i = 0; i < n; ++i)
    std::copy(a.begin() + ((static_cast<int64_t>(i) * T + t) * C) * P,
              a.begin() + ((static_cast<int64_t>(i) * T + t + 1) * C) * P,
              s.begin() + static_cast<int64_t>(i) * C * P);
  return s;
}
void put_task_slice(const Vec& s, int n, int T, int C, int64_t P, int t, Vec& a) {
  for (int i = 0; i < n; ++i)
    std::copy(s.begin() + static_cast<int64_t>(i) * C * P,
              s.begin() + static_cast<int64_t>(i + 1) * C * P,
              a.begin() + ((static_cast<int64_t>(i) * T + t) * C) * P);
}

// Only summation order differs between the twin (naive column-major loops, col2im as a gather
// in tap order) and the CPU layers (OpenBLAS dgemm, col2im as a scatter-add): with |entries| ≤ 1
// and at most a few hundred terms per sum the float64 differences stay near 1e-15 relative, so
// 1e-12 relative to the largest reference entry leaves a wide margin and catches any indexing
// error, which is O(1).
constexpr double kTol = 1e-12;

void expect_close(const std::string& what, const Vec& ref, const Vec& got) {
  testing::expect_near_ref(what, ref, got, kTol);
}

// ----------------------------------------------------------------------------------------------
// The GEMM reference and the argument checks.

// Row-major [r, c] product C = A·B computed naively.
Vec matmul(const Vec& A, const Vec& B, int r, int k, int c) {
  Vec C(static_cast<size_t>(r) * c, 0.0);
  for (int i = 0; i < r; ++i)
    for (int j = 0; j < c; ++j)
      for (int l = 0; l < k; ++l) C[i * c + j] += A[i * k + l] * B[l * c + j];
  return C;
}

Vec transpose(const Vec& A, int r, int c) {
  Vec T(A.size());
  for (int i = 0; i < r; ++i)
    for (int j = 0; j < c; ++j) T[j * r + i] = A[i * c + j];
  return T;
}

TEST(BatchedGemmHost, ExecutesTheCallColumnMajorAsCublasDefinesIt) {
  // Column-major C (m×n) = op(A)·op(B) per batch; with row-major storage a column-major
  // [m, n] matrix with ld = m is the row-major [n, m] matrix, i.e. Cᵀ.
  const int m = 3, n = 2, k = 4, batch = 2;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      GemmCall call;
      call.transa = ta;
      call.transb = tb;
      call.m = m;
      call.n = n;
      call.k = k;
      call.lda = ta ? k : m;
      call.ldb = tb ? n : k;
      call.ldc = m;
      call.stride_a = m * k;
      call.stride_b = k * n;
      call.stride_c = m * n;
      call.batch = batch;
      const Vec A = random_vec(batch * m * k, 1), B = random_vec(batch * k * n, 2);
      Vec C = poison(batch * m * n);  // beta = 0: C is not read
      run_gemm_call_host(call, A.data(), B.data(), C.data());
      Vec C1 = random_vec(batch * m * n, 3), C0 = C1;
      call.beta = 1;
      run_gemm_call_host(call, A.data(), B.data(), C1.data());
      for (int p = 0; p < batch; ++p) {
        // op(A) as a row-major m×k matrix, op(B) as k×n.
        Vec Ap(A.begin() + p * m * k, A.begin() + (p + 1) * m * k);
        Vec Bp(B.begin() + p * k * n, B.begin() + (p + 1) * k * n);
        const Vec opA = ta ? Ap /* col-major k×m = row-major m×k */ : transpose(Ap, k, m);
        const Vec opB = tb ? Bp : transpose(Bp, n, k);
        const Vec ref = transpose(matmul(opA, opB, m, k, n), m, n);  // back to column-major
        for (int e = 0; e < m * n; ++e) {
          EXPECT_NEAR(C[p * m * n + e], ref[e], 1e-14) << ta << tb << " batch " << p;
          EXPECT_NEAR(C1[p * m * n + e], ref[e] + C0[p * m * n + e], 1e-14) << ta << tb;
        }
      }
    }
}

// The GPU kernel's own steps (gemm_tiled.h), run block by block on the host, give every element
// the bits of gemm_call_element: both transposes, beta 0 and 1, sizes off the 64×64 tiles and
// the 16-wide k slices, leading dimensions and strides with padding, k = 0, and the calls of a
// real conv and head. This is what makes the GPU's bits those of the host twin and independent
// of the batch: checked here without a GPU (the gpu test PinnedGemmCuda.* runs the kernel).
std::vector<float> random_floats(int64_t n, uint64_t seed) {
  Rng rng(seed, 0, 0, Stream::kTest);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = static_cast<float>(rng.uniform(-1, 1));
  return v;
}

void expect_tiled_equals_element(const GemmCall& c, uint64_t seed, const std::string& what) {
  const int64_t a_rows = c.transa ? c.k : c.m, a_cols = c.transa ? c.m : c.k;
  const int64_t b_rows = c.transb ? c.n : c.k, b_cols = c.transb ? c.k : c.n;
  const int64_t a_size = (c.batch - 1) * c.stride_a + c.lda * std::max<int64_t>(a_cols, 1) + a_rows;
  const int64_t b_size = (c.batch - 1) * c.stride_b + c.ldb * std::max<int64_t>(b_cols, 1) + b_rows;
  const int64_t c_size = (c.batch - 1) * c.stride_c + static_cast<int64_t>(c.ldc) * c.n;
  const std::vector<float> A = random_floats(a_size, seed), B = random_floats(b_size, seed + 1),
                           C0 = random_floats(c_size, seed + 2);
  std::vector<float> element = C0, tiled = C0;
  run_gemm_call_host(c, A.data(), B.data(), element.data());
  run_gemm_call_tiled_host(c, A.data(), B.data(), tiled.data());
  int64_t differ = 0, first = -1;
  for (int64_t e = 0; e < c_size; ++e)
    if (std::memcmp(&element[e], &tiled[e], sizeof(float)) != 0) {
      if (first < 0) first = e;
      ++differ;
    }
  EXPECT_EQ(differ, 0) << what << ": first differing element " << first;
}

TEST(BatchedGemmHost, TheKernelsTiledStepsGiveEveryElementItsOwnBits) {
  uint64_t seed = 40;
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (double beta : {0.0, 1.0})
        for (int k : {0, 1, 16, 37}) {
          const GemmCall c = testing::padded_gemm_call(ta, tb, beta, k);
          expect_tiled_equals_element(c, seed += 3,
                                      "transa " + std::to_string(ta) + " transb " +
                                          std::to_string(tb) + " beta " + std::to_string(beta) +
                                          " k " + std::to_string(k));
        }
  const BatchedConvGeom g = make_batched_conv_geom(Shape{8, 9, 9}, 12, 1, 3);
  const BatchedLinearGeom h{3, 40, 5};
  for (double beta : {0.0, 1.0}) {
    expect_tiled_equals_element(conv_forward_gemm(g, 2, beta), 90, "conv forward");
    expect_tiled_equals_element(conv_backward_data_gemm(g, 2, beta), 91, "conv backward data");
    expect_tiled_equals_element(conv_backward_filter_gemm(g, 2, beta), 92, "conv backward filter");
    expect_tiled_equals_element(linear_forward_gemm(h, 7, beta), 93, "linear forward");
    expect_tiled_equals_element(linear_backward_data_gemm(h, 7, beta), 94, "linear backward data");
    expect_tiled_equals_element(linear_backward_filter_gemm(h, 7, beta), 95,
                                "linear backward filter");
  }
}

TEST(BatchedGemmHost, RejectsArgumentsCublasWouldRefuse) {
  const BatchedConvGeom g = make_batched_conv_geom(Shape{2, 7, 7}, 4, 1, 3);
  const GemmCall good = conv_forward_gemm(g, 3, 0.0);
  EXPECT_NO_THROW(check_gemm_call(good));
  GemmCall bad = good;
  bad.lda = good.m - 1;
  EXPECT_THROW(check_gemm_call(bad), Error);
  bad = good;
  bad.ldc = 0;
  EXPECT_THROW(check_gemm_call(bad), Error);
  bad = good;
  bad.stride_c = 0;
  EXPECT_THROW(check_gemm_call(bad), Error);
  bad = good;
  bad.c = bad.a;
  EXPECT_THROW(check_gemm_call(bad), Error);
  EXPECT_THROW(make_batched_conv_geom(Shape{2, 7, 7}, 4, 3, 3), Error);
  EXPECT_THROW(make_batched_conv_geom(Shape{2, 7, 7}, 4, 1, 0), Error);
}

TEST(BatchedGemmHost, ConvCallsNameTheLayoutOfConv2d) {
  // T = 3, C = 2, O = 4, 7×7 stride 2 -> 4×4: P = 16, n = 3: nP = 48, C·9 = 18.
  const BatchedConvGeom g = make_batched_conv_geom(Shape{2, 7, 7}, 4, 2, 3);
  EXPECT_EQ(g.out_h, 4);
  EXPECT_EQ(g.out_w, 4);
  const GemmCall f = conv_forward_gemm(g, 3, 0.0);
  EXPECT_FALSE(f.transa);
  EXPECT_FALSE(f.transb);
  EXPECT_EQ(f.m, 48);
  EXPECT_EQ(f.n, 4);
  EXPECT_EQ(f.k, 18);
  EXPECT_EQ(f.stride_a, 18 * 48);
  EXPECT_EQ(f.stride_b, 4 * 18);
  EXPECT_EQ(f.stride_c, 4 * 48);
  EXPECT_EQ(f.batch, 3);
  EXPECT_EQ(f.c, GemmOperand::kOutput);
  const GemmCall d = conv_backward_data_gemm(g, 3, 1.0);
  EXPECT_TRUE(d.transb);
  EXPECT_EQ(d.c, GemmOperand::kInput);
  EXPECT_EQ(d.beta, 1.0);
  const GemmCall w = conv_backward_filter_gemm(g, 3, 0.0);
  EXPECT_TRUE(w.transa);
  EXPECT_EQ(w.k, 48);
  EXPECT_EQ(w.c, GemmOperand::kWeightGrad);
  // The per-task linear head of CUDA_NOTES.md: T = 3, F = 7, K = 4.
  const GemmCall l = linear_forward_gemm(BatchedLinearGeom{3, 7, 4}, 5, 1.0);
  EXPECT_TRUE(l.transa);
  EXPECT_FALSE(l.transb);
  EXPECT_EQ(l.m, 4);
  EXPECT_EQ(l.n, 5);
  EXPECT_EQ(l.k, 7);
  EXPECT_EQ(l.lda, 7);
  EXPECT_EQ(l.ldb, 21);
  EXPECT_EQ(l.ldc, 12);
  EXPECT_EQ(l.stride_a, 28);
  EXPECT_EQ(l.stride_b, 7);
  EXPECT_EQ(l.stride_c, 4);
}

// ----------------------------------------------------------------------------------------------
// Convolution: host twin vs Conv2d<double> task by task.

struct ConvCase {
  int c, hw, stride;
};

void PrintTo(const ConvCase& c, std::ostream* os) {
  *os << "C=" << c.c << " H=W=" << c.hw << " stride " << c.stride;
}

class BatchedConvTwin : public ::testing::TestWithParam<ConvCase> {};

TEST_P(BatchedConvTwin, EveryPassMatchesConv2dTaskByTask) {
  const ConvCase cc = GetParam();
  const int T = 3, n = 3, O = 4, C = cc.c, max_n = n + 2;
  const Shape in{C, cc.hw, cc.hw};
  const BatchedConvGeom g = make_batched_conv_geom(in, O, cc.stride, T);
  const int64_t Pin = g.in_plane(), P = g.out_plane(), wsize = static_cast<int64_t>(O) * C * 9;

  const Vec x = random_vec(g.in_size(n), 11), R_x = random_vec(g.in_size(n), 12);
  const Vec W = random_vec(g.weight_size(), 13), R_W = random_vec(g.weight_size(), 14);
  const Vec dy = random_vec(g.out_size(n), 15), R_dy = random_vec(g.out_size(n), 16);

  // Reference: one Conv2d<double> per task on that task's slices and filter set.
  Conv2d<double> conv(in, O, cc.stride);
  ASSERT_EQ(conv.out_shape().h, g.out_h);
  ASSERT_EQ(conv.out_shape().w, g.out_w);
  Vec y_ref(g.out_size(n)), dx_ref(g.in_size(n)), dW_ref(g.weight_size());
  Vec R_y_ref(g.out_size(n)), R_y0_ref(g.out_size(n));
  Vec R_dx_ref(g.in_size(n)), R_dx0_ref(g.in_size(n));
  Vec R_dW_ref(g.weight_size()), R_dW0_ref(g.weight_size());
  for (int t = 0; t < T; ++t) {
    const Vec xt = task_slice(x, n, T, C, Pin, t), R_xt = task_slice(R_x, n, T, C, Pin, t);
    const Vec dyt = task_slice(dy, n, T, O, P, t), R_dyt = task_slice(R_dy, n, T, O, P, t);
    const double* Wt = W.data() + t * wsize;
    const double* R_Wt = R_W.data() + t * wsize;
    LayerContext<double> ctx;
    Vec yt(static_cast<size_t>(n) * O * P), dxt(xt.size()), R_yt(yt.size()), R_dxt(xt.size());
    conv.forward(n, Wt, xt.data(), yt.data(), ctx);
    put_task_slice(yt, n, T, O, P, t, y_ref);
    conv.backward(n, Wt, xt.data(), ctx, dyt.data(), dxt.data(), dW_ref.data() + t * wsize);
    put_task_slice(dxt, n, T, C, Pin, t, dx_ref);
    conv.r_forward(n, Wt, R_Wt, xt.data(), R_xt.data(), ctx, R_yt.data());
    put_task_slice(R_yt, n, T, O, P, t, R_y_ref);
    conv.r_forward(n, Wt, R_Wt, xt.data(), nullptr, ctx, R_yt.data());
    put_task_slice(R_yt, n, T, O, P, t, R_y0_ref);
    conv.r_backward(n, Wt, R_Wt, xt.data(), R_xt.data(), ctx, dyt.data(), R_dyt.data(),
                    R_dxt.data(), R_dW_ref.data() + t * wsize);
    put_task_slice(R_dxt, n, T, C, Pin, t, R_dx_ref);
    conv.r_backward(n, Wt, R_Wt, xt.data(), nullptr, ctx, dyt.data(), R_dyt.data(), R_dxt.data(),
                    R_dW0_ref.data() + t * wsize);
    put_task_slice(R_dxt, n, T, C, Pin, t, R_dx0_ref);
  }

  // Twin: the CUDA GEMM form's pass sequences on the host executor, workspaces poisoned so that
  // every read entry must have been written first, outputs poisoned so that passes overwrite.
  HostGemmExec<double> ex;
  Vec col = poison(g.col_size(max_n)), gy = poison(g.out_size(max_n)),
      R_gy = poison(g.out_size(max_n));
  const ConvGemmWorkspace<double> ws{col.data(), gy.data(), R_gy.data()};
  const std::string where = "C=" + std::to_string(C) + " H=W=" + std::to_string(cc.hw) +
                            " stride " + std::to_string(cc.stride) + ": ";

  Vec y = poison(g.out_size(n));
  conv_gemm_forward(ex, g, n, W.data(), x.data(), y.data(), ws);
  expect_close(where + "forward", y_ref, y);

  Vec dx = poison(g.in_size(n));
  conv_gemm_backward_data(ex, g, n, W.data(), dy.data(), dx.data(), ws);
  expect_close(where + "backward data", dx_ref, dx);

  Vec dW = poison(g.weight_size());  // backward with a null dx is backward filter alone
  conv_gemm_backward_filter(ex, g, n, x.data(), dy.data(), dW.data(), ws);
  expect_close(where + "backward filter", dW_ref, dW);

  Vec R_y = poison(g.out_size(n));
  conv_gemm_r_forward(ex, g, n, W.data(), R_W.data(), x.data(), R_x.data(), R_y.data(), ws);
  expect_close(where + "r_forward", R_y_ref, R_y);
  R_y = poison(g.out_size(n));
  conv_gemm_r_forward(ex, g, n, W.data(), R_W.data(), x.data(), nullptr, R_y.data(), ws);
  expect_close(where + "r_forward, R_x = 0", R_y0_ref, R_y);

  Vec R_dx = poison(g.in_size(n)), R_dW = poison(g.weight_size());
  conv_gemm_r_backward(ex, g, n, W.data(), R_W.data(), x.data(), R_x.data(), dy.data(), R_dy.data(),
                       R_dx.data(), R_dW.data(), ws);
  expect_close(where + "r_backward R_dx", R_dx_ref, R_dx);
  expect_close(where + "r_backward R_dW", R_dW_ref, R_dW);
  R_dx = poison(g.in_size(n));
  R_dW = poison(g.weight_size());
  conv_gemm_r_backward(ex, g, n, W.data(), R_W.data(), x.data(), nullptr, dy.data(), R_dy.data(),
                       R_dx.data(), R_dW.data(), ws);
  expect_close(where + "r_backward R_dx, R_x = 0", R_dx0_ref, R_dx);
  expect_close(where + "r_backward R_dW, R_x = 0", R_dW0_ref, R_dW);
  R_dW = poison(g.weight_size());  // null R_dx: R_dW alone
  conv_gemm_r_backward(ex, g, n, W.data(), R_W.data(), x.data(), R_x.data(), dy.data(), R_dy.data(),
                       static_cast<double*>(nullptr), R_dW.data(), ws);
  expect_close(where + "r_backward R_dW, no R_dx", R_dW_ref, R_dW);
}

INSTANTIATE_TEST_SUITE_P(Shapes, BatchedConvTwin,
                         ::testing::Values(ConvCase{2, 7, 1}, ConvCase{2, 7, 2}, ConvCase{3, 7, 1},
                                           ConvCase{3, 7, 2}, ConvCase{2, 6, 1}, ConvCase{2, 6, 2},
                                           ConvCase{3, 6, 1}, ConvCase{3, 6, 2}),
                         [](const ::testing::TestParamInfo<ConvCase>& info) {
                           return "C" + std::to_string(info.param.c) + "_H" +
                                  std::to_string(info.param.hw) + "_S" +
                                  std::to_string(info.param.stride);
                         });

TEST(BatchedConvTwin, Col2imIsTheAdjointOfIm2col) {
  // <im2col(x), c> = <x, col2im(c)> for random x, c: checks the two bodies against each other
  // independently of Conv2d.
  for (int stride : {1, 2}) {
    const BatchedConvGeom g = make_batched_conv_geom(Shape{3, 7, 6}, 4, stride, 3);
    const int n = 2;
    const Vec x = random_vec(g.in_size(n), 21), c = random_vec(g.col_size(n), 22);
    HostGemmExec<double> ex;
    Vec col(g.col_size(n)), xt(g.in_size(n));
    ex.im2col(g, n, x.data(), col.data());
    ex.col2im(g, n, c.data(), xt.data());
    double lhs = 0, rhs = 0;
    for (size_t k = 0; k < col.size(); ++k) lhs += col[k] * c[k];
    for (size_t k = 0; k < x.size(); ++k) rhs += x[k] * xt[k];
    EXPECT_NEAR(lhs, rhs, 1e-12 * (1 + std::fabs(lhs))) << "stride " << stride;
  }
}

// ----------------------------------------------------------------------------------------------
// Linear head: host twin vs Linear<double> task by task.

TEST(BatchedLinearTwin, EveryPassMatchesLinearTaskByTask) {
  const int T = 3, F = 7, K = 4;
  const BatchedLinearGeom g{T, F, K};
  for (int n : {3, 5}) {
    const Vec x = random_vec(n * T * F, 31), R_x = random_vec(n * T * F, 32);
    const Vec W = random_vec(T * K * F, 33), R_W = random_vec(T * K * F, 34);
    const Vec b = random_vec(T * K, 35), R_b = random_vec(T * K, 36);
    const Vec dy = random_vec(n * T * K, 37), R_dy = random_vec(n * T * K, 38);

    Linear<double> lin(Shape{F, 1, 1}, K);
    const int64_t d = lin.num_params();  // K·F weights then K biases
    ASSERT_EQ(d, K * F + K);
    Vec y_ref(n * T * K), dx_ref(n * T * F), dW_ref(T * K * F), db_ref(T * K);
    Vec R_y_ref(n * T * K), R_y0_ref(n * T * K), R_dx_ref(n * T * F), R_dx0_ref(n * T * F);
    Vec R_dW_ref(T * K * F), R_db_ref(T * K), R_dW0_ref(T * K * F);
    for (int t = 0; t < T; ++t) {
      auto params = [&](const Vec& w, const Vec& bias) {
        Vec p(static_cast<size_t>(d));
        std::copy(w.begin() + t * K * F, w.begin() + (t + 1) * K * F, p.begin());
        std::copy(bias.begin() + t * K, bias.begin() + (t + 1) * K, p.begin() + K * F);
        return p;
      };
      const Vec Wt = params(W, b), R_Wt = params(R_W, R_b);
      const Vec xt = task_slice(x, n, T, F, 1, t), R_xt = task_slice(R_x, n, T, F, 1, t);
      const Vec dyt = task_slice(dy, n, T, K, 1, t), R_dyt = task_slice(R_dy, n, T, K, 1, t);
      LayerContext<double> ctx;
      Vec yt(n * K), dxt(n * F), gt(d), R_gt(d);
      lin.forward(n, Wt.data(), xt.data(), yt.data(), ctx);
      put_task_slice(yt, n, T, K, 1, t, y_ref);
      lin.backward(n, Wt.data(), xt.data(), ctx, dyt.data(), dxt.data(), gt.data());
      put_task_slice(dxt, n, T, F, 1, t, dx_ref);
      std::copy(gt.begin(), gt.begin() + K * F, dW_ref.begin() + t * K * F);
      std::copy(gt.begin() + K * F, gt.end(), db_ref.begin() + t * K);
      lin.r_forward(n, Wt.data(), R_Wt.data(), xt.data(), R_xt.data(), ctx, yt.data());
      put_task_slice(yt, n, T, K, 1, t, R_y_ref);
      lin.r_forward(n, Wt.data(), R_Wt.data(), xt.data(), nullptr, ctx, yt.data());
      put_task_slice(yt, n, T, K, 1, t, R_y0_ref);
      lin.r_backward(n, Wt.data(), R_Wt.data(), xt.data(), R_xt.data(), ctx, dyt.data(),
                     R_dyt.data(), dxt.data(), R_gt.data());
      put_task_slice(dxt, n, T, F, 1, t, R_dx_ref);
      std::copy(R_gt.begin(), R_gt.begin() + K * F, R_dW_ref.begin() + t * K * F);
      std::copy(R_gt.begin() + K * F, R_gt.end(), R_db_ref.begin() + t * K);
      lin.r_backward(n, Wt.data(), R_Wt.data(), xt.data(), nullptr, ctx, dyt.data(), R_dyt.data(),
                     dxt.data(), R_gt.data());
      put_task_slice(dxt, n, T, F, 1, t, R_dx0_ref);
      std::copy(R_gt.begin(), R_gt.begin() + K * F, R_dW0_ref.begin() + t * K * F);
    }

    HostGemmExec<double> ex;
    const std::string where = "n=" + std::to_string(n) + ": ";
    Vec y = poison(n * T * K);
    linear_gemm_forward(ex, g, n, W.data(), b.data(), x.data(), y.data());
    expect_close(where + "forward", y_ref, y);

    Vec dx = poison(n * T * F), dW = poison(T * K * F), db = poison(T * K);
    linear_gemm_backward(ex, g, n, W.data(), x.data(), dy.data(), dx.data(), dW.data(), db.data());
    expect_close(where + "backward dx", dx_ref, dx);
    expect_close(where + "backward dW", dW_ref, dW);
    expect_close(where + "backward db", db_ref, db);
    dW = poison(T * K * F);
    db = poison(T * K);
    linear_gemm_backward(ex, g, n, W.data(), x.data(), dy.data(), static_cast<double*>(nullptr),
                         dW.data(), db.data());
    expect_close(where + "backward dW, no dx", dW_ref, dW);
    expect_close(where + "backward db, no dx", db_ref, db);

    Vec R_y = poison(n * T * K);
    linear_gemm_r_forward(ex, g, n, W.data(), R_W.data(), R_b.data(), x.data(), R_x.data(),
                          R_y.data());
    expect_close(where + "r_forward", R_y_ref, R_y);
    R_y = poison(n * T * K);
    linear_gemm_r_forward(ex, g, n, W.data(), R_W.data(), R_b.data(), x.data(),
                          static_cast<const double*>(nullptr), R_y.data());
    expect_close(where + "r_forward, R_x = 0", R_y0_ref, R_y);

    Vec R_dx = poison(n * T * F), R_dW = poison(T * K * F), R_db = poison(T * K);
    linear_gemm_r_backward(ex, g, n, W.data(), R_W.data(), x.data(), R_x.data(), dy.data(),
                           R_dy.data(), R_dx.data(), R_dW.data(), R_db.data());
    expect_close(where + "r_backward R_dx", R_dx_ref, R_dx);
    expect_close(where + "r_backward R_dW", R_dW_ref, R_dW);
    expect_close(where + "r_backward R_db", R_db_ref, R_db);
    R_dx = poison(n * T * F);
    R_dW = poison(T * K * F);
    linear_gemm_r_backward(ex, g, n, W.data(), R_W.data(), x.data(),
                           static_cast<const double*>(nullptr), dy.data(), R_dy.data(), R_dx.data(),
                           R_dW.data(), R_db.data());
    expect_close(where + "r_backward R_dx, R_x = 0", R_dx0_ref, R_dx);
    expect_close(where + "r_backward R_dW, R_x = 0", R_dW0_ref, R_dW);
    R_dW = poison(T * K * F);
    linear_gemm_r_backward(ex, g, n, W.data(), R_W.data(), x.data(), R_x.data(), dy.data(),
                           R_dy.data(), static_cast<double*>(nullptr), R_dW.data(), R_db.data());
    expect_close(where + "r_backward R_dW, no R_dx", R_dW_ref, R_dW);
  }
}

}  // namespace
}  // namespace mt
