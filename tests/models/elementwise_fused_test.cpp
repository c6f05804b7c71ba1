// The fused, channel-blocked batch norm and the single-pass max-pool against the obvious form
// written here: one sweep per channel sum, then one per output (batch norm); argmax by
// comparisons, gather by index, zero-fill then scatter-add (max-pool). Max-pool must give the same
// bits; batch norm agrees to kReassocTol (see there), and how often bit for bit is printed.
// The batch norm that ends in its activation agrees with BatchNorm then Relu to kReassocTol.
// Float and double, every pass, odd h and w, m = 1, channels in several blocks, null optionals.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "core/cpu_kernels.h"
#include "models/batch_norm.h"
#include "models/max_pool.h"
#include "models/relu.h"

namespace mt {
namespace {

// ---- Reference batch norm: each channel sum in a sweep of its own. A sum is a T partial over
// one example's h·w values (vectorised the way the layers vectorise) added in double across the
// examples in order; it is returned rounded to T.
template <typename T, typename F>
MT_DISPATCH_CLONES T ref_sum(int m, int C, int HW, int c, F f) {
  double total = 0;
  for (int i = 0; i < m; ++i) {
    const int64_t at = (static_cast<int64_t>(i) * C + c) * HW;
    T part = 0;
#pragma omp simd reduction(+ : part)
    for (int p = 0; p < HW; ++p) part += f(at + p);
    total += part;
  }
  return static_cast<T>(total);
}
template <typename F>
MT_DISPATCH_CLONES void ref_each(int m, int C, int HW, int c, F f) {
  for (int i = 0; i < m; ++i)
    for (int p = 0; p < HW; ++p) f((static_cast<int64_t>(i) * C + c) * HW + p);
}

template <typename T>
struct RefBatchNorm {
  int m, C, HW;
  std::vector<T> xhat, sigma;

  void forward(const T* W, const T* x, T* y) {
    const double N = static_cast<double>(m) * HW;
    xhat.assign(static_cast<size_t>(m) * C * HW, 0);
    sigma.assign(C, 0);
    for (int c = 0; c < C; ++c) {
      const T mu = static_cast<T>(ref_sum<T>(m, C, HW, c, [&](int64_t k) { return x[k]; }) / N);
      const double var =
          ref_sum<T>(m, C, HW, c, [&](int64_t k) { return (x[k] - mu) * (x[k] - mu); }) / N;
      sigma[c] = static_cast<T>(std::sqrt(var + BatchNorm<T>::kEps));
      ref_each(m, C, HW, c, [&](int64_t k) {
        xhat[k] = (x[k] - mu) / sigma[c];
        y[k] = W[c] * xhat[k] + W[C + c];
      });
    }
  }
  void backward(const T* W, const T* dy, T* dx, T* dW) const {
    const T N = static_cast<T>(m) * HW;
    for (int c = 0; c < C; ++c) {
      const T sdy = ref_sum<T>(m, C, HW, c, [&](int64_t k) { return dy[k]; });
      const T sdyx = ref_sum<T>(m, C, HW, c, [&](int64_t k) { return dy[k] * xhat[k]; });
      dW[c] = sdyx;
      dW[C + c] = sdy;
      if (!dx) continue;
      const T a1 = W[c] * sdy / N, a2 = W[c] * sdyx / N;
      ref_each(m, C, HW, c,
               [&](int64_t k) { dx[k] = (W[c] * dy[k] - a1 - xhat[k] * a2) / sigma[c]; });
    }
  }
  // mean(R_x) and mean(x̂ R_x) of channel c (0 when R_x is null), and R{x̂} at k.
  void r_means(const T* R_x, int c, T& mean_rx, T& s) const {
    const T N = static_cast<T>(m) * HW;
    mean_rx = s = 0;
    if (!R_x) return;
    mean_rx = ref_sum<T>(m, C, HW, c, [&](int64_t k) { return R_x[k]; }) / N;
    s = ref_sum<T>(m, C, HW, c, [&](int64_t k) { return xhat[k] * R_x[k]; }) / N;
  }
  T R_xhat(const T* R_x, T mean_rx, T s, int c, int64_t k) const {
    return R_x ? (R_x[k] - mean_rx - xhat[k] * s) / sigma[c] : T(0);
  }
  void r_forward(const T* W, const T* R_W, const T* R_x, T* R_y) const {
    for (int c = 0; c < C; ++c) {
      T mean_rx, s;
      r_means(R_x, c, mean_rx, s);
      ref_each(m, C, HW, c, [&](int64_t k) {
        R_y[k] = R_W[c] * xhat[k] + W[c] * R_xhat(R_x, mean_rx, s, c, k) + R_W[C + c];
      });
    }
  }
  void r_backward(const T* W, const T* R_W, const T* R_x, const T* dy, const T* R_dy, T* R_dx,
                  T* R_dW) const {
    const T N = static_cast<T>(m) * HW;
    for (int c = 0; c < C; ++c) {
      T mean_rx, s;
      r_means(R_x, c, mean_rx, s);
      auto sum = [&](auto f) { return ref_sum<T>(m, C, HW, c, f); };
      const T sdy = sum([&](int64_t k) { return dy[k]; });
      const T sdyx = sum([&](int64_t k) { return dy[k] * xhat[k]; });
      const T srdy = sum([&](int64_t k) { return R_dy[k]; });
      const T srdyx = sum([&](int64_t k) { return R_dy[k] * xhat[k]; });
      const T sdyrx = sum([&](int64_t k) { return dy[k] * R_xhat(R_x, mean_rx, s, c, k); });
      R_dW[c] = srdyx + sdyrx;
      R_dW[C + c] = srdy;
      if (!R_dx) continue;
      const T g_c = W[c], Rg_c = R_W[c], s_c = sigma[c];
      const T a1 = g_c * sdy / N, a2 = g_c * sdyx / N;
      const T b1 = (Rg_c * sdy + g_c * srdy) / N;
      const T b2 = (Rg_c * sdyx + g_c * srdyx + g_c * sdyrx) / N;
      ref_each(m, C, HW, c, [&](int64_t k) {
        const T dx = (g_c * dy[k] - a1 - xhat[k] * a2) / s_c;
        const T Rg = Rg_c * dy[k] + g_c * R_dy[k];
        R_dx[k] =
            -(s / s_c) * dx + (Rg - b1 - R_xhat(R_x, mean_rx, s, c, k) * a2 - xhat[k] * b2) / s_c;
      });
    }
  }
};

// ---- Reference max-pool 2×2, stride 2.
template <typename T>
struct RefMaxPool {
  int m;
  Shape in, out;
  std::vector<int32_t> index;

  void forward(const T* x, T* y) {
    index.assign(static_cast<size_t>(m) * out.size(), 0);
    for (int i = 0; i < m; ++i)
      for (int c = 0; c < in.c; ++c)
        for (int oy = 0; oy < out.h; ++oy)
          for (int ox = 0; ox < out.w; ++ox) {
            const T* xi = x + i * in.size();
            const int32_t tl = (c * in.h + 2 * oy) * in.w + 2 * ox;
            const int32_t cand[4] = {tl, tl + 1, tl + in.w, tl + in.w + 1};
            int32_t best = cand[0];
            for (int32_t k : cand)
              if (xi[k] > xi[best]) best = k;
            const int64_t j = i * out.size() + (c * out.h + oy) * out.w + ox;
            index[j] = best;
            y[j] = xi[best];
          }
  }
  void gather(const T* src, T* dst) const {
    for (int i = 0; i < m; ++i)
      for (int64_t j = 0; j < out.size(); ++j)
        dst[i * out.size() + j] = src[i * in.size() + index[i * out.size() + j]];
  }
  void scatter(const T* src, T* dst) const {
    std::fill(dst, dst + m * in.size(), T(0));
    for (int i = 0; i < m; ++i)
      for (int64_t j = 0; j < out.size(); ++j)
        dst[i * in.size() + index[i * out.size() + j]] += src[i * out.size() + j];
  }
};

// ---- Helpers.
template <typename T>
std::vector<T> random_values(size_t n, Rng& rng, double scale, double offset = 0) {
  std::vector<T> v(n);
  for (T& e : v) e = static_cast<T>(offset + scale * rng.normal());
  return v;
}

// Empty when a and b hold the same bits, else the first differing index and both values.
template <typename T>
std::string bit_diff(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return "sizes differ";
  for (size_t k = 0; k < a.size(); ++k)
    if (std::memcmp(&a[k], &b[k], sizeof(T)) != 0)
      return "first difference at " + std::to_string(k) + ": " + std::to_string(a[k]) + " vs " +
             std::to_string(b[k]);
  return "";
}
#define EXPECT_SAME_BITS(a, b, what) EXPECT_EQ(bit_diff(a, b), "") << (what)

// max |a − b| / max(max |b|, 1).
template <typename T>
double scaled_diff(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return INFINITY;
  double d = 0, scale = 1;
  for (size_t k = 0; k < b.size(); ++k) {
    d = std::max(d, std::abs(static_cast<double>(a[k]) - static_cast<double>(b[k])));
    scale = std::max(scale, std::abs(static_cast<double>(b[k])));
  }
  return d / scale;
}
// Batch norm: a fused sweep takes every sum over the same elements in the same order, but GCC
// vectorises a loop carrying several reductions (or capturing its pointers by value) differently
// from the lone-sum loop here (how an example's h·w values are spread over the vector lanes), so
// the T partials are reassociated. Measured on AVX-512 (Zen 4): at most 5 ulps of the output's
// scale, in float and double. The bound, 64 ulps of that scale (7.6e-6 float, 1.4e-14 double),
// covers reassociating sums of a few thousand O(1) terms; a wrong term is ≥ 1e-3.
template <typename T>
constexpr double kReassocTol = 64 * std::numeric_limits<T>::epsilon();
#define EXPECT_CLOSE(a, b, what)                                              \
  do {                                                                        \
    const double e_ = scaled_diff(a, b);                                      \
    EXPECT_LE(e_, kReassocTol<T>) << (what) << " (" << bit_diff(a, b) << ")"; \
    same_bits = same_bits && bit_diff(a, b).empty();                          \
  } while (0)

struct Case {
  int m, c, h, w;
  std::string name() const {
    return "m=" + std::to_string(m) + " [" + std::to_string(c) + "," + std::to_string(h) + "," +
           std::to_string(w) + "]";
  }
};
// Odd and even h·w (vector remainders), m = 1, 1×1, and channel counts that split into several
// blocks with a short last one (8 channels of 28×28 at m = 5: blocks of 6 + 2 in float).
const Case kCases[] = {{1, 3, 5, 7},  {4, 2, 3, 3},   {6, 5, 1, 1},    {5, 8, 28, 28},
                       {3, 64, 7, 7}, {2, 3, 13, 11}, {75, 2, 14, 14}, {1, 1, 1, 2}};

template <typename T>
bool check_batch_norm(const Case& cs, uint64_t seed) {
  SCOPED_TRACE(cs.name() + (sizeof(T) == 4 ? " float" : " double"));
  const Shape s{cs.c, cs.h, cs.w};
  const int m = cs.m, C = cs.c, HW = cs.h * cs.w;
  const size_t n = static_cast<size_t>(m) * s.size();
  Rng rng(seed, 0, 0, Stream::kTest);
  // Off-centre, unevenly scaled inputs so that the means and the variance matter.
  const auto x = random_values<T>(n, rng, 2.0, 0.7), dy = random_values<T>(n, rng, 1.0),
             R_x = random_values<T>(n, rng, 0.5), R_dy = random_values<T>(n, rng, 0.3);
  auto W = random_values<T>(2 * C, rng, 0.3, 1.0);
  const auto R_W = random_values<T>(2 * C, rng, 0.2);

  BatchNorm<T> bn(s);
  RefBatchNorm<T> ref{m, C, HW, {}, {}};
  LayerContext<T> ctx;
  std::vector<T> y(n), y_ref(n);
  bn.forward(m, W.data(), x.data(), y.data(), ctx);
  ref.forward(W.data(), x.data(), y_ref.data());
  bool same_bits = true;  // in every pass, reported by the caller
  EXPECT_CLOSE(y, y_ref, "forward y");
  std::vector<T> saved_ref(ref.xhat);
  saved_ref.insert(saved_ref.end(), ref.sigma.begin(), ref.sigma.end());
  EXPECT_CLOSE(std::vector<T>(ctx.saved.begin(), ctx.saved.begin() + n + C), saved_ref,
               "forward x̂ and σ");

  for (const bool with_dx : {true, false}) {
    std::vector<T> dx(n, T(7)), dx_ref(n, T(7)), dW(2 * C), dW_ref(2 * C);
    bn.backward(m, W.data(), x.data(), ctx, dy.data(), with_dx ? dx.data() : nullptr, dW.data());
    ref.backward(W.data(), dy.data(), with_dx ? dx_ref.data() : nullptr, dW_ref.data());
    EXPECT_CLOSE(dx, dx_ref, with_dx ? "backward dx" : "backward dx untouched when null");
    EXPECT_CLOSE(dW, dW_ref, "backward dW");
  }
  for (const bool with_rx : {true, false}) {
    const T* rx = with_rx ? R_x.data() : nullptr;
    std::vector<T> R_y(n), R_y_ref(n);
    bn.r_forward(m, W.data(), R_W.data(), x.data(), rx, ctx, R_y.data());
    ref.r_forward(W.data(), R_W.data(), rx, R_y_ref.data());
    EXPECT_CLOSE(R_y, R_y_ref, with_rx ? "r_forward" : "r_forward, R_x null");
    for (const bool with_rdx : {true, false}) {
      std::vector<T> R_dx(n, T(7)), R_dx_ref(n, T(7)), R_dW(2 * C), R_dW_ref(2 * C);
      bn.r_backward(m, W.data(), R_W.data(), x.data(), rx, ctx, dy.data(), R_dy.data(),
                    with_rdx ? R_dx.data() : nullptr, R_dW.data());
      ref.r_backward(W.data(), R_W.data(), rx, dy.data(), R_dy.data(),
                     with_rdx ? R_dx_ref.data() : nullptr, R_dW_ref.data());
      const std::string tag = with_rx ? "" : ", R_x null";
      EXPECT_CLOSE(R_dx, R_dx_ref, "r_backward R_dx" + tag);
      EXPECT_CLOSE(R_dW, R_dW_ref, "r_backward R_dW" + tag);
    }
  }
  return same_bits;
}

template <typename T>
void check_max_pool(const Case& cs, uint64_t seed) {
  SCOPED_TRACE(cs.name() + (sizeof(T) == 4 ? " float" : " double"));
  const Shape s{cs.c, cs.h, cs.w};
  MaxPool2<T> pool(s);
  const Shape o = pool.out_shape();
  const int m = cs.m;
  const size_t n = static_cast<size_t>(m) * s.size(), no = static_cast<size_t>(m) * o.size();
  Rng rng(seed, 0, 0, Stream::kTest);
  // Inputs on a coarse grid so windows hold ties (the first maximum must win); some upstream
  // values are −0, which the zero-fill-then-add reference turns into +0.
  std::vector<T> x(n);
  for (T& e : x) e = static_cast<T>(static_cast<int>(rng.below(5)) - 2);
  auto dy = random_values<T>(no, rng, 1.0), R_dy = random_values<T>(no, rng, 1.0);
  for (size_t j = 0; j < no; j += 3) dy[j] = R_dy[j] = -T(0);
  const auto R_x = random_values<T>(n, rng, 1.0);

  RefMaxPool<T> ref{m, s, o, {}};
  LayerContext<T> ctx;
  std::vector<T> y(no), y_ref(no);
  pool.forward(m, nullptr, x.data(), y.data(), ctx);
  ref.forward(x.data(), y_ref.data());
  EXPECT_SAME_BITS(y, y_ref, "forward y");
  EXPECT_EQ(std::vector<int32_t>(ctx.index.begin(), ctx.index.begin() + no), ref.index)
      << "forward argmax";

  std::vector<T> dx(n, T(7)), dx_ref(n);
  pool.backward(m, nullptr, x.data(), ctx, dy.data(), dx.data(), nullptr);
  ref.scatter(dy.data(), dx_ref.data());
  EXPECT_SAME_BITS(dx, dx_ref, "backward dx");

  std::vector<T> R_y(no), R_y_ref(no);
  pool.r_forward(m, nullptr, nullptr, x.data(), R_x.data(), ctx, R_y.data());
  ref.gather(R_x.data(), R_y_ref.data());
  EXPECT_SAME_BITS(R_y, R_y_ref, "r_forward");
  std::vector<T> R_y0(no, T(7));
  pool.r_forward(m, nullptr, nullptr, x.data(), nullptr, ctx, R_y0.data());
  EXPECT_SAME_BITS(R_y0, std::vector<T>(no, T(0)), "r_forward, R_x null");

  std::vector<T> R_dx(n, T(7)), R_dx_ref(n);
  pool.r_backward(m, nullptr, nullptr, x.data(), R_x.data(), ctx, dy.data(), R_dy.data(),
                  R_dx.data(), nullptr);
  ref.scatter(R_dy.data(), R_dx_ref.data());
  EXPECT_SAME_BITS(R_dx, R_dx_ref, "r_backward R_dx");
}

// Every pass within kReassocTol; on how many shapes every pass gave the same bits too is printed
// (and recorded in the test's XML output).
template <typename T>
void check_batch_norm_cases(uint64_t seed) {
  int same = 0;
  for (const Case& cs : kCases) same += check_batch_norm<T>(cs, ++seed);
  const std::string note = std::to_string(same) + " of " + std::to_string(std::size(kCases)) +
                           " shapes bit-identical in every pass";
  ::testing::Test::RecordProperty("bit_identical_shapes", note);
  std::printf("%s batch norm: %s\n", sizeof(T) == 4 ? "float" : "double", note.c_str());
}
// BatchNorm(s, slope), the batch norm that ends in its activation, against a BatchNorm layer
// then a Relu layer: the same values summed in the same order, so within kReassocTol in every
// pass (GCC contracts and vectorises each loop on its own; measured here: forward and backward
// bit for bit, the R-passes up to an ulp); returns whether every pass gave the same bits.
// γ near 1 and β near 0, so that about half of the outputs are negative.
template <typename T>
bool check_batch_norm_act(const Case& cs, uint64_t seed, double slope) {
  SCOPED_TRACE(cs.name() + (sizeof(T) == 4 ? " float" : " double") +
               " slope=" + std::to_string(slope));
  const Shape s{cs.c, cs.h, cs.w};
  const int m = cs.m, C = cs.c;
  const size_t n = static_cast<size_t>(m) * s.size();
  Rng rng(seed, 0, 0, Stream::kTest);
  const auto x = random_values<T>(n, rng, 2.0, 0.7), dy = random_values<T>(n, rng, 1.0),
             R_x = random_values<T>(n, rng, 0.5), R_dy = random_values<T>(n, rng, 0.3);
  auto W = random_values<T>(2 * C, rng, 0.3);
  for (int c = 0; c < C; ++c) W[c] += T(1);
  const auto R_W = random_values<T>(2 * C, rng, 0.2);
  const BatchNorm<T> fused(s, slope), bn(s);
  const Relu<T> act(s, slope);

  bool same_bits = true;
  LayerContext<T> ctx, ctx_bn, ctx_act;
  std::vector<T> y(n), u(n), y_ref(n);
  fused.forward(m, W.data(), x.data(), y.data(), ctx);
  bn.forward(m, W.data(), x.data(), u.data(), ctx_bn);
  act.forward(m, nullptr, u.data(), y_ref.data(), ctx_act);
  EXPECT_CLOSE(y, y_ref, "forward y");
  EXPECT_CLOSE(ctx.saved, ctx_bn.saved, "forward x̂ and σ");

  std::vector<T> d(n);  // the gradient at the batch norm's output
  act.backward(m, nullptr, u.data(), ctx_act, dy.data(), d.data(), nullptr);
  for (const bool with_dx : {true, false}) {
    std::vector<T> dx(n, T(7)), dx_ref(n, T(7)), dW(2 * C), dW_ref(2 * C);
    fused.backward(m, W.data(), x.data(), ctx, dy.data(), with_dx ? dx.data() : nullptr, dW.data());
    bn.backward(m, W.data(), x.data(), ctx_bn, d.data(), with_dx ? dx_ref.data() : nullptr,
                dW_ref.data());
    EXPECT_CLOSE(dx, dx_ref, with_dx ? "backward dx" : "backward dx untouched when null");
    EXPECT_CLOSE(dW, dW_ref, "backward dW");
  }
  std::vector<T> R_d(n);
  act.r_backward(m, nullptr, nullptr, u.data(), nullptr, ctx_act, dy.data(), R_dy.data(),
                 R_d.data(), nullptr);
  for (const bool with_rx : {true, false}) {
    const T* rx = with_rx ? R_x.data() : nullptr;
    const std::string tag = with_rx ? "" : ", R_x null";
    std::vector<T> R_y(n), R_u(n), R_y_ref(n);
    fused.r_forward(m, W.data(), R_W.data(), x.data(), rx, ctx, R_y.data());
    bn.r_forward(m, W.data(), R_W.data(), x.data(), rx, ctx_bn, R_u.data());
    act.r_forward(m, nullptr, nullptr, u.data(), R_u.data(), ctx_act, R_y_ref.data());
    EXPECT_CLOSE(R_y, R_y_ref, "r_forward" + tag);
    for (const bool with_rdx : {true, false}) {
      std::vector<T> R_dx(n, T(7)), R_dx_ref(n, T(7)), R_dW(2 * C), R_dW_ref(2 * C);
      fused.r_backward(m, W.data(), R_W.data(), x.data(), rx, ctx, dy.data(), R_dy.data(),
                       with_rdx ? R_dx.data() : nullptr, R_dW.data());
      bn.r_backward(m, W.data(), R_W.data(), x.data(), rx, ctx_bn, d.data(), R_d.data(),
                    with_rdx ? R_dx_ref.data() : nullptr, R_dW_ref.data());
      EXPECT_CLOSE(R_dx, R_dx_ref, "r_backward R_dx" + tag);
      EXPECT_CLOSE(R_dW, R_dW_ref, "r_backward R_dW" + tag);
    }
  }
  return same_bits;
}
template <typename T>
void check_batch_norm_act_cases(uint64_t seed) {
  int same = 0, cases = 0;
  for (const double slope : {0.0, kLeakySlope})
    for (const Case& cs : kCases) same += check_batch_norm_act<T>(cs, ++seed, slope), ++cases;
  const std::string note =
      std::to_string(same) + " of " + std::to_string(cases) + " cases bit-identical in every pass";
  ::testing::Test::RecordProperty("bit_identical_cases", note);
  std::printf("%s batch norm + activation: %s\n", sizeof(T) == 4 ? "float" : "double",
              note.c_str());
}
TEST(ElementwiseFused, BatchNormWithActivationFloatMatchesTwoLayers) {
  check_batch_norm_act_cases<float>(500);
}
TEST(ElementwiseFused, BatchNormWithActivationDoubleMatchesTwoLayers) {
  check_batch_norm_act_cases<double>(600);
}

TEST(ElementwiseFused, BatchNormFloatMatchesPerSumSweeps) { check_batch_norm_cases<float>(100); }
TEST(ElementwiseFused, BatchNormDoubleMatchesPerSumSweeps) { check_batch_norm_cases<double>(200); }
TEST(ElementwiseFused, MaxPoolFloatSameBitsAsGatherScatter) {
  uint64_t seed = 300;
  for (const Case& cs : kCases) check_max_pool<float>(cs, ++seed);
}
TEST(ElementwiseFused, MaxPoolDoubleSameBitsAsGatherScatter) {
  uint64_t seed = 400;
  for (const Case& cs : kCases) check_max_pool<double>(cs, ++seed);
}

}  // namespace
}  // namespace mt
