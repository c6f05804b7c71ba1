// Host twins of the task-batched kernels (models/batched_kernels.h) against the CPU layers run
// task by task on each task's slice of the [n, T·C, H, W] batch: every pass of batch norm, ReLU,
// max-pool, mean-pool and softmax cross-entropy, the optional-null cases included. Batch norm
// runs at sizes where n·H·W is below, equal to and above kBnReduceThreads (empty lanes, one value
// per lane, strided lanes with a ragged last round), with H·W above it and with H·W = 1; and its
// sums are checked bit for bit against an independent run of the documented block decomposition.
//
// Tolerances. float64: both sides evaluate the same formulas; they differ only in summation
// order (the CPU's `omp simd` reductions in T per example vs the twin's strided lanes in double
// and tree) and FMA contraction, so agreement is ~1e-15 relative; we require 1e-12 relative to
// max(1, max |reference|). float32 (host twin float vs CPU float): the CPU sums each example's
// H·W ≤ 323 values in float (relative error ≲ √(H·W)·2^-24 ≈ 1e-6 typical), the twin in double;
// elementwise the same differences at 2^-24 ≈ 6e-8 per operation, amplified by the cancellations
// in batch norm's R-backward (terms of size |R{g}|/σ cancel to the result): we require 2e-5
// relative to max(1, max |reference|).
// Integer outputs (argmax index, correct counts) must match exactly. Tasks get different
// inputs and parameters, so any index bug that mixes tasks fails by O(1).
#include "models/batched_kernels.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "core/rng.h"
#include "models/batch_norm.h"
#include "models/max_pool.h"
#include "models/mean_pool.h"
#include "models/relu.h"
#include "models/softmax_xent.h"

namespace mt {
namespace {

constexpr double kTolDouble = 1e-12;
constexpr double kTolFloat = 2e-5;

template <typename T>
constexpr double tol() {
  return sizeof(T) == sizeof(double) ? kTolDouble : kTolFloat;
}

template <typename T>
std::vector<T> poisoned(size_t n) {
  return std::vector<T>(n, std::numeric_limits<T>::quiet_NaN());
}

// Batched buffer [n, T·S] whose task t's values are uniform in (shift_t − scale_t, shift_t +
// scale_t), shift_t = 0.7 t − 0.5, scale_t = 1 + t: every task has its own statistics.
template <typename T>
std::vector<T> task_varied(int n, int tasks, int64_t S, Rng& rng) {
  std::vector<T> v(static_cast<size_t>(n) * tasks * S);
  for (int i = 0; i < n; ++i)
    for (int t = 0; t < tasks; ++t)
      for (int64_t s = 0; s < S; ++s)
        v[(static_cast<int64_t>(i) * tasks + t) * S + s] =
            static_cast<T>((0.7 * t - 0.5) + (1.0 + t) * rng.uniform(-1, 1));
  return v;
}

template <typename T>
std::vector<T> uniform(size_t count, Rng& rng, double lo, double hi) {
  std::vector<T> v(count);
  for (T& e : v) e = static_cast<T>(rng.uniform(lo, hi));
  return v;
}

// Task t's [n, S] slice of a batched [n, T·S] buffer, and the reverse.
template <typename V>
V slice(const V& b, int n, int tasks, int64_t S, int t) {
  V s(static_cast<size_t>(n) * S);
  for (int i = 0; i < n; ++i)
    std::copy_n(b.begin() + (static_cast<int64_t>(i) * tasks + t) * S, S, s.begin() + i * S);
  return s;
}

// |got − ref| ≤ tol · max(1, max |ref|) element-wise (a NaN, i.e. an unwritten entry, fails).
template <typename T>
::testing::AssertionResult close(const std::vector<T>& got, const std::vector<T>& ref,
                                 double tolerance, const std::string& what) {
  if (got.size() != ref.size())
    return ::testing::AssertionFailure() << what << ": size " << got.size() << " vs " << ref.size();
  double scale = 1;
  for (T r : ref) scale = std::max(scale, std::fabs(static_cast<double>(r)));
  for (size_t k = 0; k < got.size(); ++k) {
    const double d = std::fabs(static_cast<double>(got[k]) - static_cast<double>(ref[k]));
    if (!(d <= tolerance * scale))
      return ::testing::AssertionFailure()
             << what << "[" << k << "] = " << got[k] << ", reference " << ref[k] << " (|diff| " << d
             << " > " << tolerance << " * " << scale << ")";
  }
  return ::testing::AssertionSuccess();
}

// Per-task [C] slice of a [T·C] parameter vector.
template <typename T>
std::vector<T> param_slice(const std::vector<T>& p, int C, int t) {
  return std::vector<T>(p.begin() + t * C, p.begin() + (t + 1) * C);
}
// BatchNorm's W = [γ_t, β_t] of task t.
template <typename T>
std::vector<T> bn_params(const std::vector<T>& gamma, const std::vector<T>& beta, int C, int t) {
  std::vector<T> W = param_slice(gamma, C, t);
  const std::vector<T> b = param_slice(beta, C, t);
  W.insert(W.end(), b.begin(), b.end());
  return W;
}

struct BnSizes {
  int n, tasks, C, H, W;
};

template <typename T>
void check_batch_norm(BnSizes z, uint64_t seed) {
  const int n = z.n, tasks = z.tasks, C = z.C, HW = z.H * z.W, TC = tasks * C;
  const int64_t S = static_cast<int64_t>(C) * HW;
  const size_t count = static_cast<size_t>(n) * tasks * S;
  Rng rng(seed, 0, 0, Stream::kTest);
  const std::vector<T> x = task_varied<T>(n, tasks, S, rng);
  const std::vector<T> gamma = uniform<T>(TC, rng, 0.5, 1.5), beta = uniform<T>(TC, rng, -1, 1);
  const std::vector<T> R_gamma = uniform<T>(TC, rng, -1, 1), R_beta = uniform<T>(TC, rng, -1, 1);
  const std::vector<T> dy = task_varied<T>(n, tasks, S, rng);
  const std::vector<T> R_x = task_varied<T>(n, tasks, S, rng);
  const std::vector<T> R_dy = task_varied<T>(n, tasks, S, rng);

  std::vector<T> y = poisoned<T>(count), xhat = poisoned<T>(count), sigma = poisoned<T>(TC);
  bn_forward_host(n, tasks, C, HW, x.data(), gamma.data(), beta.data(), y.data(), xhat.data(),
                  sigma.data());
  std::vector<T> dx = poisoned<T>(count), dgamma = poisoned<T>(TC), dbeta = poisoned<T>(TC);
  bn_backward_host(n, tasks, C, HW, gamma.data(), xhat.data(), sigma.data(), dy.data(), dx.data(),
                   dgamma.data(), dbeta.data());
  std::vector<T> dgamma0 = poisoned<T>(TC), dbeta0 = poisoned<T>(TC);  // dx = null
  bn_backward_host(n, tasks, C, HW, gamma.data(), xhat.data(), sigma.data(), dy.data(),
                   static_cast<T*>(nullptr), dgamma0.data(), dbeta0.data());
  EXPECT_TRUE(close(dgamma0, dgamma, 0, "dgamma without dx"));
  EXPECT_TRUE(close(dbeta0, dbeta, 0, "dbeta without dx"));

  std::vector<T> work(bn_work_size(tasks, C));
  std::vector<T> R_y = poisoned<T>(count), R_y0 = poisoned<T>(count);
  bn_r_forward_host(n, tasks, C, HW, gamma.data(), R_gamma.data(), R_beta.data(), xhat.data(),
                    sigma.data(), R_x.data(), R_y.data(), work.data());
  bn_r_forward_host(n, tasks, C, HW, gamma.data(), R_gamma.data(), R_beta.data(), xhat.data(),
                    sigma.data(), static_cast<const T*>(nullptr), R_y0.data(), work.data());

  // r_backward: with R_x, without R_x (null), and without R_dx (null).
  std::vector<T> R_dx = poisoned<T>(count), R_dg = poisoned<T>(TC), R_db = poisoned<T>(TC);
  bn_r_backward_host(n, tasks, C, HW, gamma.data(), R_gamma.data(), xhat.data(), sigma.data(),
                     R_x.data(), dy.data(), R_dy.data(), R_dx.data(), R_dg.data(), R_db.data(),
                     work.data());
  std::vector<T> R_dx0 = poisoned<T>(count), R_dg0 = poisoned<T>(TC), R_db0 = poisoned<T>(TC);
  bn_r_backward_host(n, tasks, C, HW, gamma.data(), R_gamma.data(), xhat.data(), sigma.data(),
                     static_cast<const T*>(nullptr), dy.data(), R_dy.data(), R_dx0.data(),
                     R_dg0.data(), R_db0.data(), work.data());
  std::vector<T> R_dg1 = poisoned<T>(TC), R_db1 = poisoned<T>(TC);
  bn_r_backward_host(n, tasks, C, HW, gamma.data(), R_gamma.data(), xhat.data(), sigma.data(),
                     R_x.data(), dy.data(), R_dy.data(), static_cast<T*>(nullptr), R_dg1.data(),
                     R_db1.data(), work.data());
  EXPECT_TRUE(close(R_dg1, R_dg, 0, "R_dgamma without R_dx"));
  EXPECT_TRUE(close(R_db1, R_db, 0, "R_dbeta without R_dx"));

  const double eps = tol<T>();
  BatchNorm<T> layer({C, z.H, z.W});
  for (int t = 0; t < tasks; ++t) {
    SCOPED_TRACE("task " + std::to_string(t));
    const std::vector<T> W = bn_params(gamma, beta, C, t), R_W = bn_params(R_gamma, R_beta, C, t);
    const std::vector<T> x_t = slice(x, n, tasks, S, t), dy_t = slice(dy, n, tasks, S, t);
    const std::vector<T> R_x_t = slice(R_x, n, tasks, S, t), R_dy_t = slice(R_dy, n, tasks, S, t);
    const size_t m = static_cast<size_t>(n) * S;
    LayerContext<T> ctx;
    std::vector<T> y_t(m);
    layer.forward(n, W.data(), x_t.data(), y_t.data(), ctx);
    EXPECT_TRUE(close(slice(y, n, tasks, S, t), y_t, eps, "y"));
    const std::vector<T> xhat_t(ctx.saved.begin(), ctx.saved.begin() + m);
    const std::vector<T> sigma_t(ctx.saved.begin() + m, ctx.saved.begin() + m + C);
    EXPECT_TRUE(close(slice(xhat, n, tasks, S, t), xhat_t, eps, "xhat"));
    EXPECT_TRUE(close(param_slice(sigma, C, t), sigma_t, eps, "sigma"));

    std::vector<T> dx_t(m), dW_t(2 * C);
    layer.backward(n, W.data(), x_t.data(), ctx, dy_t.data(), dx_t.data(), dW_t.data());
    EXPECT_TRUE(close(slice(dx, n, tasks, S, t), dx_t, eps, "dx"));
    EXPECT_TRUE(close(bn_params(dgamma, dbeta, C, t), dW_t, eps, "dgamma, dbeta"));

    std::vector<T> R_y_t(m), R_y0_t(m);
    layer.r_forward(n, W.data(), R_W.data(), x_t.data(), R_x_t.data(), ctx, R_y_t.data());
    layer.r_forward(n, W.data(), R_W.data(), x_t.data(), nullptr, ctx, R_y0_t.data());
    EXPECT_TRUE(close(slice(R_y, n, tasks, S, t), R_y_t, eps, "R_y"));
    EXPECT_TRUE(close(slice(R_y0, n, tasks, S, t), R_y0_t, eps, "R_y with R_x = null"));

    std::vector<T> R_dx_t(m), R_dW_t(2 * C), R_dx0_t(m), R_dW0_t(2 * C);
    layer.r_backward(n, W.data(), R_W.data(), x_t.data(), R_x_t.data(), ctx, dy_t.data(),
                     R_dy_t.data(), R_dx_t.data(), R_dW_t.data());
    layer.r_backward(n, W.data(), R_W.data(), x_t.data(), nullptr, ctx, dy_t.data(), R_dy_t.data(),
                     R_dx0_t.data(), R_dW0_t.data());
    EXPECT_TRUE(close(slice(R_dx, n, tasks, S, t), R_dx_t, eps, "R_dx"));
    EXPECT_TRUE(close(bn_params(R_dg, R_db, C, t), R_dW_t, eps, "R_dgamma, R_dbeta"));
    EXPECT_TRUE(close(slice(R_dx0, n, tasks, S, t), R_dx0_t, eps, "R_dx with R_x = null"));
    EXPECT_TRUE(
        close(bn_params(R_dg0, R_db0, C, t), R_dW0_t, eps, "R_dgamma, R_dbeta with R_x = null"));
  }
}

TEST(BatchedKernels, BatchNormDouble) { check_batch_norm<double>({5, 3, 2, 3, 3}, 1); }
TEST(BatchedKernels, BatchNormNoSpatialDouble) { check_batch_norm<double>({4, 3, 4, 1, 1}, 2); }
TEST(BatchedKernels, BatchNormFloat) { check_batch_norm<float>({5, 3, 2, 3, 3}, 3); }

// The sizes around the block of kBnReduceThreads = 256 lanes (n·H·W per channel in comments).
static_assert(kBnReduceThreads == 256, "the sizes below are chosen for 256 lanes");
TEST(BatchedKernels, BatchNormFewerValuesThanLanesDouble) {
  check_batch_norm<double>({3, 2, 2, 5, 7}, 31);  // 105: lanes 105..255 stay empty
}
TEST(BatchedKernels, BatchNormOneValuePerLaneDouble) {
  check_batch_norm<double>({4, 2, 2, 8, 8}, 32);  // 256
}
TEST(BatchedKernels, BatchNormStridedLanesDouble) {
  check_batch_norm<double>({5, 2, 2, 9, 11}, 33);  // 495: lanes < 239 take two values, the rest one
}
TEST(BatchedKernels, BatchNormStridedLanesFloat) { check_batch_norm<float>({5, 2, 2, 9, 11}, 34); }
TEST(BatchedKernels, BatchNormWideImageDouble) {
  check_batch_norm<double>({3, 2, 2, 17, 19}, 35);  // 969, H·W = 323 > 256: a lane's stride stays
}  // inside an example or crosses one boundary
TEST(BatchedKernels, BatchNormManyExamplesNoSpatialDouble) {
  check_batch_norm<double>({300, 2, 2, 1, 1}, 36);  // 300 with H·W = 1: a stride of 256 examples
}

// The documented decomposition of a channel sum over values v[j], j = i·HW + p: lane k adds the
// v[j] with j ≡ k (mod L) in increasing j, in double; then for half = L/2, …, 1 lane k < half adds
// lane k + half. Written here from the description, independently of batched_kernels.h.
double documented_block_sum(const std::vector<double>& v) {
  const int L = kBnReduceThreads;
  std::vector<double> lanes(L, 0.0);
  for (size_t j = 0; j < v.size(); ++j) lanes[j % L] += v[j];
  for (int half = L / 2; half >= 1; half /= 2)
    for (int k = 0; k < half; ++k) lanes[k] += lanes[k + half];
  return lanes[0];
}

// Channel values that make the order of additions visible, [n, TC, HW]: full mantissas spread
// over 2^±10 with random signs, and in every channel ±2^70 at j = 0 and j = 128 (lanes 0 and
// 128, which the tree's first level pairs). The documented order cancels the two exactly and loses
// only the values that share their lanes; left to right, or a tree pairing neighbours, absorbs
// a hundred values into 2^70 (its ulp is 2^18) — which the test confirms.
std::vector<double> order_revealing(int n, int TC, int HW, Rng& rng) {
  std::vector<double> v(static_cast<size_t>(n) * TC * HW);
  for (double& e : v)
    e = std::ldexp(rng.uniform(1, 2), static_cast<int>(rng.below(21)) - 10) *
        (rng.below(2) ? 1 : -1);
  for (int tc = 0; tc < TC; ++tc)
    for (int j : {0, 128})
      v[(static_cast<size_t>(j / HW) * TC + tc) * HW + j % HW] =
          std::ldexp(j == 0 ? 1.0 : -1.0, 70);
  return v;
}

// dβ = Σ dy (bn_backward) and R{dβ} = Σ R_dy (bn_r_backward, with and without R_x) are single
// sums rounded nowhere else, so in float64 they must equal the documented decomposition bit for
// bit: this pins the stride, the order within a lane and the tree's pairing, which the
// comparisons with the CPU layers (any order passes) cannot see.
TEST(BatchedKernels, BatchNormSumsFollowTheBlockDecomposition) {
  const int n = 8, tasks = 2, C = 2, HW = 9 * 11, TC = tasks * C;  // 792: 3 or 4 per lane
  const size_t count = static_cast<size_t>(n) * TC * HW;
  Rng rng(37, 0, 0, Stream::kTest);
  const std::vector<double> xhat = uniform<double>(count, rng, -2, 2);
  const std::vector<double> R_x = uniform<double>(count, rng, -1, 1);
  const std::vector<double> sigma = uniform<double>(TC, rng, 0.5, 2);
  const std::vector<double> gamma = uniform<double>(TC, rng, 0.5, 1.5);
  const std::vector<double> R_gamma = uniform<double>(TC, rng, -1, 1);
  const std::vector<double> dy = order_revealing(n, TC, HW, rng);
  const std::vector<double> R_dy = order_revealing(n, TC, HW, rng);

  std::vector<double> dgamma(TC), dbeta(TC), R_dg(TC), R_db(TC), R_db0(TC);
  std::vector<double> work(bn_work_size(tasks, C));
  bn_backward_host(n, tasks, C, HW, gamma.data(), xhat.data(), sigma.data(), dy.data(),
                   static_cast<double*>(nullptr), dgamma.data(), dbeta.data());
  bn_r_backward_host(n, tasks, C, HW, gamma.data(), R_gamma.data(), xhat.data(), sigma.data(),
                     R_x.data(), dy.data(), R_dy.data(), static_cast<double*>(nullptr), R_dg.data(),
                     R_db.data(), work.data());
  bn_r_backward_host(n, tasks, C, HW, gamma.data(), R_gamma.data(), xhat.data(), sigma.data(),
                     static_cast<const double*>(nullptr), dy.data(), R_dy.data(),
                     static_cast<double*>(nullptr), R_dg.data(), R_db0.data(), work.data());

  for (int tc = 0; tc < TC; ++tc) {
    SCOPED_TRACE("channel " + std::to_string(tc));
    std::vector<double> dy_c, R_dy_c;  // the channel's values in j order
    for (int i = 0; i < n; ++i)
      for (int p = 0; p < HW; ++p) {
        dy_c.push_back(dy[(static_cast<size_t>(i) * TC + tc) * HW + p]);
        R_dy_c.push_back(R_dy[(static_cast<size_t>(i) * TC + tc) * HW + p]);
      }
    const double want = documented_block_sum(dy_c), want_r = documented_block_sum(R_dy_c);
    // The data discriminates: left to right and a neighbour-pairing tree give other bits.
    double serial = 0;
    for (double e : dy_c) serial += e;
    EXPECT_NE(serial, want) << "inputs too tame to pin the order";
    std::vector<double> lanes(kBnReduceThreads, 0.0);
    for (size_t j = 0; j < dy_c.size(); ++j) lanes[j % kBnReduceThreads] += dy_c[j];
    for (int width = 1; width < kBnReduceThreads; width *= 2)
      for (int k = 0; k < kBnReduceThreads; k += 2 * width) lanes[k] += lanes[k + width];
    EXPECT_NE(lanes[0], want) << "inputs too tame to pin the tree";

    EXPECT_EQ(dbeta[tc], want);
    EXPECT_EQ(work[2 * TC + tc], want) << "work slot 2 (Σ dy) of r_backward";
    EXPECT_EQ(R_db[tc], want_r);
    EXPECT_EQ(R_db0[tc], want_r) << "R_x = null";
  }
}

template <typename T>
void check_relu(uint64_t seed) {
  const int n = 4, tasks = 3, C = 2, H = 3, W = 3;
  const int64_t S = static_cast<int64_t>(C) * H * W;
  const int64_t count = n * tasks * S;
  Rng rng(seed, 0, 0, Stream::kTest);
  std::vector<T> x = task_varied<T>(n, tasks, S, rng);
  for (int64_t k = 0; k < count; k += 7) x[k] = T(0);  // the mask at exactly 0: x > 0 is false
  const std::vector<T> dy = task_varied<T>(n, tasks, S, rng);
  const std::vector<T> R_x = task_varied<T>(n, tasks, S, rng);
  const std::vector<T> R_dy = task_varied<T>(n, tasks, S, rng);
  std::vector<T> y = poisoned<T>(count), dx = poisoned<T>(count), R_y = poisoned<T>(count),
                 R_y0 = poisoned<T>(count), R_dx = poisoned<T>(count);
  relu_forward_host(count, T(0), x.data(), y.data());
  relu_backward_host(count, T(0), x.data(), dy.data(), dx.data());
  relu_r_forward_host(count, T(0), x.data(), R_x.data(), R_y.data());
  relu_r_forward_host(count, T(0), x.data(), static_cast<const T*>(nullptr), R_y0.data());
  relu_r_backward_host(count, T(0), x.data(), R_dy.data(), R_dx.data());
  // Null optional outputs are accepted and write nothing.
  relu_backward_host(count, T(0), x.data(), dy.data(), static_cast<T*>(nullptr));
  relu_r_backward_host(count, T(0), x.data(), R_dy.data(), static_cast<T*>(nullptr));

  Relu<T> layer({C, H, W});
  LayerContext<T> ctx;
  for (int t = 0; t < tasks; ++t) {
    SCOPED_TRACE("task " + std::to_string(t));
    const std::vector<T> x_t = slice(x, n, tasks, S, t);
    std::vector<T> y_t(n * S), dx_t(n * S), R_y_t(n * S), R_y0_t(n * S), R_dx_t(n * S);
    layer.forward(n, nullptr, x_t.data(), y_t.data(), ctx);
    layer.backward(n, nullptr, x_t.data(), ctx, slice(dy, n, tasks, S, t).data(), dx_t.data(),
                   nullptr);
    layer.r_forward(n, nullptr, nullptr, x_t.data(), slice(R_x, n, tasks, S, t).data(), ctx,
                    R_y_t.data());
    layer.r_forward(n, nullptr, nullptr, x_t.data(), nullptr, ctx, R_y0_t.data());
    layer.r_backward(n, nullptr, nullptr, x_t.data(), nullptr, ctx, nullptr,
                     slice(R_dy, n, tasks, S, t).data(), R_dx_t.data(), nullptr);
    // Pure routing: exact equality.
    EXPECT_TRUE(close(slice(y, n, tasks, S, t), y_t, 0, "y"));
    EXPECT_TRUE(close(slice(dx, n, tasks, S, t), dx_t, 0, "dx"));
    EXPECT_TRUE(close(slice(R_y, n, tasks, S, t), R_y_t, 0, "R_y"));
    EXPECT_TRUE(close(slice(R_y0, n, tasks, S, t), R_y0_t, 0, "R_y with R_x = null"));
    EXPECT_TRUE(close(slice(R_dx, n, tasks, S, t), R_dx_t, 0, "R_dx"));
  }
  EXPECT_EQ(dx[0], T(0)) << "x = 0 must route no gradient";
}

TEST(BatchedKernels, ReluDouble) { check_relu<double>(4); }
TEST(BatchedKernels, ReluFloat) { check_relu<float>(5); }

// ties: inputs drawn from {0, 1, 2} so that most windows have tied maxima.
template <typename T>
void check_max_pool(int H, int W, bool ties, uint64_t seed) {
  const int n = 4, tasks = 3, C = 2;
  const int OH = H / 2, OW = W / 2;
  const int64_t S = static_cast<int64_t>(C) * H * W, So = static_cast<int64_t>(C) * OH * OW;
  const int64_t count = n * tasks * S, count_out = n * tasks * So;
  Rng rng(seed, 0, 0, Stream::kTest);
  std::vector<T> x = task_varied<T>(n, tasks, S, rng);
  if (ties)
    for (T& v : x) v = static_cast<T>(rng.below(3));
  const std::vector<T> dy = task_varied<T>(n, tasks, So, rng);
  const std::vector<T> R_x = task_varied<T>(n, tasks, S, rng);
  const std::vector<T> R_dy = task_varied<T>(n, tasks, So, rng);
  std::vector<T> y = poisoned<T>(count_out), R_y = poisoned<T>(count_out),
                 R_y0 = poisoned<T>(count_out), dx = poisoned<T>(count), R_dx = poisoned<T>(count);
  std::vector<int32_t> index(count_out, -1);
  max_pool_forward_host(n, tasks, C, H, W, x.data(), y.data(), index.data());
  max_pool_backward_host(n, tasks, C, H, W, index.data(), dy.data(), dx.data());
  max_pool_r_forward_host(n, tasks, C, H, W, index.data(), R_x.data(), R_y.data());
  max_pool_r_forward_host(n, tasks, C, H, W, index.data(), static_cast<const T*>(nullptr),
                          R_y0.data());
  max_pool_r_backward_host(n, tasks, C, H, W, index.data(), R_dy.data(), R_dx.data());
  max_pool_backward_host(n, tasks, C, H, W, index.data(), dy.data(), static_cast<T*>(nullptr));

  MaxPool2<T> layer({C, H, W});
  for (int t = 0; t < tasks; ++t) {
    SCOPED_TRACE("task " + std::to_string(t));
    const std::vector<T> x_t = slice(x, n, tasks, S, t);
    LayerContext<T> ctx;
    std::vector<T> y_t(n * So), R_y_t(n * So), R_y0_t(n * So), dx_t(n * S), R_dx_t(n * S);
    layer.forward(n, nullptr, x_t.data(), y_t.data(), ctx);
    layer.backward(n, nullptr, x_t.data(), ctx, slice(dy, n, tasks, So, t).data(), dx_t.data(),
                   nullptr);
    layer.r_forward(n, nullptr, nullptr, x_t.data(), slice(R_x, n, tasks, S, t).data(), ctx,
                    R_y_t.data());
    layer.r_forward(n, nullptr, nullptr, x_t.data(), nullptr, ctx, R_y0_t.data());
    layer.r_backward(n, nullptr, nullptr, x_t.data(), nullptr, ctx, nullptr,
                     slice(R_dy, n, tasks, So, t).data(), R_dx_t.data(), nullptr);
    // The batched index is an offset into the example's [T·C, H, W] slab: t·C·H·W + the layer's.
    const std::vector<int32_t> index_t = slice(index, n, tasks, So, t);
    for (int64_t j = 0; j < n * So; ++j)
      ASSERT_EQ(index_t[j], t * S + ctx.index[j]) << "output " << j;
    EXPECT_TRUE(close(slice(y, n, tasks, So, t), y_t, 0, "y"));
    EXPECT_TRUE(close(slice(dx, n, tasks, S, t), dx_t, 0, "dx"));
    EXPECT_TRUE(close(slice(R_y, n, tasks, So, t), R_y_t, 0, "R_y"));
    EXPECT_TRUE(close(slice(R_y0, n, tasks, So, t), R_y0_t, 0, "R_y with R_x = null"));
    EXPECT_TRUE(close(slice(R_dx, n, tasks, S, t), R_dx_t, 0, "R_dx"));
  }
}

TEST(BatchedKernels, MaxPoolOddSizesDouble) { check_max_pool<double>(5, 7, false, 6); }
TEST(BatchedKernels, MaxPoolTiesDouble) { check_max_pool<double>(4, 6, true, 7); }
TEST(BatchedKernels, MaxPoolOddSizesFloat) { check_max_pool<float>(7, 5, false, 8); }

template <typename T>
void check_mean_pool(uint64_t seed) {
  const int n = 4, tasks = 3, C = 3, H = 3, W = 4, HW = H * W;
  const int64_t S = static_cast<int64_t>(C) * HW;
  const int64_t count = n * tasks * S, count_out = n * tasks * C;
  Rng rng(seed, 0, 0, Stream::kTest);
  const std::vector<T> x = task_varied<T>(n, tasks, S, rng);
  const std::vector<T> dy = task_varied<T>(n, tasks, C, rng);
  const std::vector<T> R_x = task_varied<T>(n, tasks, S, rng);
  const std::vector<T> R_dy = task_varied<T>(n, tasks, C, rng);
  std::vector<T> y = poisoned<T>(count_out), R_y = poisoned<T>(count_out),
                 R_y0 = poisoned<T>(count_out), dx = poisoned<T>(count), R_dx = poisoned<T>(count);
  mean_pool_forward_host(n, tasks, C, HW, x.data(), y.data());
  mean_pool_backward_host(n, tasks, C, HW, dy.data(), dx.data());
  mean_pool_r_forward_host(n, tasks, C, HW, R_x.data(), R_y.data());
  mean_pool_r_forward_host(n, tasks, C, HW, static_cast<const T*>(nullptr), R_y0.data());
  mean_pool_r_backward_host(n, tasks, C, HW, R_dy.data(), R_dx.data());
  mean_pool_backward_host(n, tasks, C, HW, dy.data(), static_cast<T*>(nullptr));

  GlobalMeanPool<T> layer({C, H, W});
  LayerContext<T> ctx;
  const double eps = tol<T>();
  for (int t = 0; t < tasks; ++t) {
    SCOPED_TRACE("task " + std::to_string(t));
    const std::vector<T> x_t = slice(x, n, tasks, S, t);
    std::vector<T> y_t(n * C), R_y_t(n * C), R_y0_t(n * C), dx_t(n * S), R_dx_t(n * S);
    layer.forward(n, nullptr, x_t.data(), y_t.data(), ctx);
    layer.backward(n, nullptr, x_t.data(), ctx, slice(dy, n, tasks, C, t).data(), dx_t.data(),
                   nullptr);
    layer.r_forward(n, nullptr, nullptr, x_t.data(), slice(R_x, n, tasks, S, t).data(), ctx,
                    R_y_t.data());
    layer.r_forward(n, nullptr, nullptr, x_t.data(), nullptr, ctx, R_y0_t.data());
    layer.r_backward(n, nullptr, nullptr, x_t.data(), nullptr, ctx, nullptr,
                     slice(R_dy, n, tasks, C, t).data(), R_dx_t.data(), nullptr);
    EXPECT_TRUE(close(slice(y, n, tasks, C, t), y_t, eps, "y"));
    EXPECT_TRUE(close(slice(dx, n, tasks, S, t), dx_t, eps, "dx"));
    EXPECT_TRUE(close(slice(R_y, n, tasks, C, t), R_y_t, eps, "R_y"));
    EXPECT_TRUE(close(slice(R_y0, n, tasks, C, t), R_y0_t, 0, "R_y with R_x = null"));
    EXPECT_TRUE(close(slice(R_dx, n, tasks, S, t), R_dx_t, eps, "R_dx"));
  }
}

TEST(BatchedKernels, MeanPoolDouble) { check_mean_pool<double>(9); }
TEST(BatchedKernels, MeanPoolFloat) { check_mean_pool<float>(10); }

template <typename T>
void check_softmax_xent(uint64_t seed) {
  const int n = 5, tasks = 3, K = 4;
  const int64_t count = static_cast<int64_t>(n) * tasks * K;
  Rng rng(seed, 0, 0, Stream::kTest);
  std::vector<T> z = task_varied<T>(n, tasks, K, rng);
  // Tied maxima in two rows (task 1 of example 0, task 2 of example 3): the first one wins.
  z[(0 * tasks + 1) * K + 1] = z[(0 * tasks + 1) * K + 3] = T(4);
  z[(3 * tasks + 2) * K + 0] = z[(3 * tasks + 2) * K + 2] = T(5);
  std::vector<int32_t> labels(static_cast<size_t>(n) * tasks);
  for (int32_t& l : labels) l = static_cast<int32_t>(rng.below(K));
  labels[0 * tasks + 1] = 1;  // a hit on the first tied maximum
  labels[3 * tasks + 2] = 2;  // a miss on the second one
  const std::vector<T> R_z = task_varied<T>(n, tasks, K, rng);
  std::vector<T> prob = poisoned<T>(count), loss = poisoned<T>(tasks), dz = poisoned<T>(count),
                 R_dz = poisoned<T>(count);
  std::vector<int32_t> correct(tasks, -1);
  softmax_xent_forward_host(n, tasks, K, z.data(), labels.data(), prob.data(), loss.data(),
                            correct.data());
  softmax_xent_backward_host(n, tasks, K, prob.data(), labels.data(), dz.data());
  softmax_xent_r_backward_host(n, tasks, K, prob.data(), R_z.data(), R_dz.data());

  const double eps = tol<T>();
  std::vector<T> ref_loss(tasks);
  for (int t = 0; t < tasks; ++t) {
    SCOPED_TRACE("task " + std::to_string(t));
    const std::vector<T> z_t = slice(z, n, tasks, K, t);
    const std::vector<int32_t> y_t = slice(labels, n, tasks, 1, t);
    std::vector<T> p_t(n * K), dz_t(n * K), R_dz_t(n * K);
    int hits = -1;
    ref_loss[t] = static_cast<T>(
        SoftmaxCrossEntropy<T>::forward(n, K, z_t.data(), y_t.data(), p_t.data(), &hits));
    SoftmaxCrossEntropy<T>::backward(n, K, p_t.data(), y_t.data(), dz_t.data());
    SoftmaxCrossEntropy<T>::r_backward(n, K, p_t.data(), slice(R_z, n, tasks, K, t).data(),
                                       R_dz_t.data());
    EXPECT_EQ(correct[t], hits);
    EXPECT_TRUE(close(slice(prob, n, tasks, K, t), p_t, eps, "prob"));
    EXPECT_TRUE(close(slice(dz, n, tasks, K, t), dz_t, eps, "dz"));
    EXPECT_TRUE(close(slice(R_dz, n, tasks, K, t), R_dz_t, eps, "R_dz"));
  }
  EXPECT_TRUE(close(loss, ref_loss, eps, "loss"));
  // Different per-task inputs give different per-task losses (guards a collapsed reduction).
  EXPECT_NE(loss[0], loss[1]);
  EXPECT_NE(loss[1], loss[2]);
}

TEST(BatchedKernels, SoftmaxXentDouble) { check_softmax_xent<double>(11); }
TEST(BatchedKernels, SoftmaxXentFloat) { check_softmax_xent<float>(12); }

}  // namespace
}  // namespace mt
