// Conv2d<float> on oneDNN against Conv2d<double> (im2col + dgemm, itself judged by the float64
// checker in layers_test.cpp and resnet12_test.cpp), 3×3 and 1×1 kernels: every pass, R-passes with
// and without R_x / dx / R_dx, over a grid of shapes; plus the per-thread primitive cache across
// batch sizes and threads; and the pieces a task's pass is cut into, same bits on any number of
// threads.
#include "models/conv2d_dnnl.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "core/parallel_for.h"
#include "models/conv2d.h"
#include "tests/support/grad_check.h"

namespace mt {
namespace {

using testing::Vec;
using FVec = std::vector<float>;

// Norm-wise relative error ‖got − want‖ / ‖want‖. The reference runs in float64 on the same
// (float-representable) inputs, so the gap is float32 rounding in the sums alone: forward and
// backward-data sum C·9 ≤ 72 or O·9 ≤ 144 products, backward-filter m·P ≤ 75·100 = 7500.
// Observed worst over the grid: 8.0e-7 (the Winograd shapes; 7.7e-7 direct). Rounding
// errors of n terms grow like √n·u in norm (u = 6e-8): ≤ 4e-6 for the longest sums, and
// blocked accumulation keeps it lower. Winograd F(4×4, 3×3) (the larger stride-1 shapes
// below) adds the rounding of its transforms, whose matrices hold entries up to 8 and 1/24:
// 1–3e-6 max-norm relative on ResNet-12's shapes, measured against the direct kernel. 2e-5
// leaves a 5× margin over both. A missing or wrong term
// (a tap, a tangent, the R_x half) moves the result by O(1) relative, far above it.
constexpr double kTol = 2e-5;

struct Case {
  int c, o, h, stride, m;
  int kernel = 3;
  std::string name() const {
    return "C" + std::to_string(c) + " O" + std::to_string(o) + " H" + std::to_string(h) + " s" +
           std::to_string(stride) + " m" + std::to_string(m) + " k" + std::to_string(kernel);
  }
};

std::vector<Case> cases() {
  std::vector<Case> all;
  // 16 → 16 and 16 → 32 channels take the blocked layouts (with reorders), the rest the plain.
  for (int c : {1, 3, 8, 16})
    for (int o : {4, 16, 32})
      for (int h : {7, 28, 5})
        for (int s : {1, 2})
          for (int m : {1, 5}) all.push_back({c, o, h, s, m});
  // 1×1 kernels (ResNet-12's shortcut), plain and blocked layouts.
  for (int c : {3, 16})
    for (int o : {4, 32})
      for (int h : {7, 6})
        for (int s : {1, 2}) all.push_back({c, o, h, s, 5, 1});
  return all;
}

// Shapes that a pass cuts into several pieces (models/conv2d_dnnl.cpp): 17–20 examples make 3
// example pieces, and 64 or 80 output channels of a blocked layout 2 channel pieces (the last
// one 32 or 48 wide). The last two take Winograd (where the CPU has it): pieces of 5 examples
// of 28×28 (245 tiles), and 4 pieces of 18–19 examples of 10×10, their weight pass cut by
// examples and summed in piece order. The last, a ResNet-12-like query batch, is where oneDNN left
// to several threads itself gives other bits in the weight passes (checked by letting it: the
// bits-test below then fails on dW and R_dW), so the test can see a cut that follows the thread
// count.
std::vector<Case> piece_cases() {
  return {{16, 80, 7, 1, 20},    {16, 64, 9, 2, 17},  {3, 16, 7, 1, 18},
          {16, 64, 6, 2, 17, 1}, {16, 32, 28, 1, 20}, {64, 64, 10, 1, 75}};
}
std::vector<Case> all_cases() {
  std::vector<Case> all = cases();
  for (const Case& k : piece_cases()) all.push_back(k);
  return all;
}

FVec random_f(size_t n, Rng& rng) {
  FVec v(n);
  for (float& e : v) e = static_cast<float>(rng.normal());
  return v;
}
Vec widen(const FVec& v) { return Vec(v.begin(), v.end()); }
// Outputs start as NaN: a pass that accumulates into (or skips part of) its output fails.
FVec poisoned(size_t n) { return FVec(n, std::numeric_limits<float>::quiet_NaN()); }

::testing::AssertionResult close(const char* what, const Case& k, const FVec& got, const Vec& want,
                                 double* worst = nullptr) {
  const double e = testing::rel_err(widen(got), want);
  if (worst && e > *worst) *worst = e;
  if (e <= kTol) return ::testing::AssertionSuccess();  // NaN compares false: fails
  return ::testing::AssertionFailure()
         << what << " [" << k.name() << "]: relative error " << e << " > " << kTol;
}

// One case's inputs in float and the same values in double.
struct Inputs {
  Conv2d<float> f;
  Conv2d<double> d;
  int m;
  FVec W, R_W, x, R_x, dy, R_dy;
  explicit Inputs(const Case& k, uint64_t seed)
      : f({k.c, k.h, k.h}, k.o, k.stride, k.kernel),
        d({k.c, k.h, k.h}, k.o, k.stride, k.kernel),
        m(k.m) {
    Rng rng(seed, 0, 0, Stream::kTest);
    const size_t nx = static_cast<size_t>(m) * f.in_shape().size();
    const size_t ny = static_cast<size_t>(m) * f.out_shape().size();
    W = random_f(f.num_params(), rng);
    R_W = random_f(f.num_params(), rng);
    x = random_f(nx, rng);
    R_x = random_f(nx, rng);
    dy = random_f(ny, rng);
    R_dy = random_f(ny, rng);
  }
  size_t nx() const { return x.size(); }
  size_t ny() const { return dy.size(); }
};

TEST(Conv2dDnnl, ForwardAndBackwardMatchIm2colReference) {
  double worst[3] = {0, 0, 0};
  uint64_t seed = 100;
  for (const Case& k : all_cases()) {
    Inputs in(k, ++seed);
    const Vec W = widen(in.W), x = widen(in.x), dy = widen(in.dy);
    LayerContext<float> cf;
    LayerContext<double> cd;
    FVec y = poisoned(in.ny());
    Vec yd(in.ny());
    in.f.forward(k.m, in.W.data(), in.x.data(), y.data(), cf);
    in.d.forward(k.m, W.data(), x.data(), yd.data(), cd);
    EXPECT_TRUE(close("forward y", k, y, yd, &worst[0]));

    FVec dx = poisoned(in.nx()), dW = poisoned(in.W.size());
    Vec dxd(in.nx()), dWd(in.W.size());
    in.f.backward(k.m, in.W.data(), in.x.data(), cf, in.dy.data(), dx.data(), dW.data());
    in.d.backward(k.m, W.data(), x.data(), cd, dy.data(), dxd.data(), dWd.data());
    EXPECT_TRUE(close("backward dx", k, dx, dxd, &worst[1]));
    EXPECT_TRUE(close("backward dW", k, dW, dWd, &worst[2]));

    FVec dW_only = poisoned(in.W.size());
    in.f.backward(k.m, in.W.data(), in.x.data(), cf, in.dy.data(), nullptr, dW_only.data());
    EXPECT_EQ(dW_only, dW) << "dW with dx = null [" << k.name() << "]";
  }
  std::printf("worst relative error: forward %.2e, dx %.2e, dW %.2e\n", worst[0], worst[1],
              worst[2]);
}

TEST(Conv2dDnnl, RPassesMatchIm2colReference) {
  double worst[3] = {0, 0, 0};
  uint64_t seed = 200;
  for (const Case& k : all_cases()) {
    Inputs in(k, ++seed);
    const Vec W = widen(in.W), R_W = widen(in.R_W), x = widen(in.x), R_x = widen(in.R_x),
              dy = widen(in.dy), R_dy = widen(in.R_dy);
    LayerContext<float> cf;
    LayerContext<double> cd;
    FVec y(in.ny());
    Vec yd(in.ny());
    in.f.forward(k.m, in.W.data(), in.x.data(), y.data(), cf);
    in.d.forward(k.m, W.data(), x.data(), yd.data(), cd);
    for (bool with_R_x : {false, true}) {
      const float* R_xf = with_R_x ? in.R_x.data() : nullptr;
      const double* R_xd = with_R_x ? R_x.data() : nullptr;
      const char* tag = with_R_x ? " (R_x given)" : " (R_x null)";
      FVec R_y = poisoned(in.ny());
      Vec R_yd(in.ny());
      in.f.r_forward(k.m, in.W.data(), in.R_W.data(), in.x.data(), R_xf, cf, R_y.data());
      in.d.r_forward(k.m, W.data(), R_W.data(), x.data(), R_xd, cd, R_yd.data());
      EXPECT_TRUE(close((std::string("r_forward R_y") + tag).c_str(), k, R_y, R_yd, &worst[0]));

      FVec R_dx = poisoned(in.nx()), R_dW = poisoned(in.W.size());
      Vec R_dxd(in.nx()), R_dWd(in.W.size());
      in.f.r_backward(k.m, in.W.data(), in.R_W.data(), in.x.data(), R_xf, cf, in.dy.data(),
                      in.R_dy.data(), R_dx.data(), R_dW.data());
      in.d.r_backward(k.m, W.data(), R_W.data(), x.data(), R_xd, cd, dy.data(), R_dy.data(),
                      R_dxd.data(), R_dWd.data());
      EXPECT_TRUE(close((std::string("r_backward R_dx") + tag).c_str(), k, R_dx, R_dxd, &worst[1]));
      EXPECT_TRUE(close((std::string("r_backward R_dW") + tag).c_str(), k, R_dW, R_dWd, &worst[2]));

      FVec R_dW_only = poisoned(in.W.size());
      in.f.r_backward(k.m, in.W.data(), in.R_W.data(), in.x.data(), R_xf, cf, in.dy.data(),
                      in.R_dy.data(), nullptr, R_dW_only.data());
      EXPECT_EQ(R_dW_only, R_dW) << "R_dW with R_dx = null" << tag << " [" << k.name() << "]";
    }
  }
  std::printf("worst relative error: R_y %.2e, R_dx %.2e, R_dW %.2e\n", worst[0], worst[1],
              worst[2]);
}

// Runs forward and backward of case k once and checks them against the reference.
void check_once(const Case& k, uint64_t seed) {
  Inputs in(k, seed);
  const Vec W = widen(in.W), x = widen(in.x), dy = widen(in.dy);
  LayerContext<float> cf;
  LayerContext<double> cd;
  FVec y = poisoned(in.ny()), dx = poisoned(in.nx()), dW = poisoned(in.W.size());
  Vec yd(in.ny()), dxd(in.nx()), dWd(in.W.size());
  in.f.forward(k.m, in.W.data(), in.x.data(), y.data(), cf);
  in.f.backward(k.m, in.W.data(), in.x.data(), cf, in.dy.data(), dx.data(), dW.data());
  in.d.forward(k.m, W.data(), x.data(), yd.data(), cd);
  in.d.backward(k.m, W.data(), x.data(), cd, dy.data(), dxd.data(), dWd.data());
  EXPECT_TRUE(close("forward y", k, y, yd));
  EXPECT_TRUE(close("backward dx", k, dx, dxd));
  EXPECT_TRUE(close("backward dW", k, dW, dWd));
}

// Support and query batches alternate in the inner loop: a batch size seen before reuses its
// primitives (one per pass and piece size), a new one builds its own, and neither reads the
// other's.
// Both layouts: the blocked one also shares its scratch between batch sizes.
TEST(Conv2dDnnl, BatchSizeChangeBuildsThenReusesPrimitives) {
  for (int c : {3, 16}) {
    const Case a{c, 16, 9, 1, 5}, b{c, 16, 9, 1, 2};
    // m = 5 runs forward and backward-data as pieces of 2, 1, 1, 1 examples (two primitives
    // each) and backward-weights whole (one); m = 2 as pieces of 1, 1, which hit the cache,
    // and backward-weights at 2 (one new).
    const int64_t n0 = dnnl_conv::primitives_created();
    check_once(a, 1);
    const int64_t n1 = dnnl_conv::primitives_created();
    EXPECT_EQ(n1 - n0, 5);
    check_once(b, 2);
    const int64_t n2 = dnnl_conv::primitives_created();
    EXPECT_EQ(n2 - n1, 1);
    check_once(a, 3);
    EXPECT_EQ(dnnl_conv::primitives_created(), n2) << "m = 5 again must hit the cache, C" << c;
  }
  std::printf("oneDNN implementations: %s\n", dnnl_conv::implementations().c_str());
}

// The model is shared by OpenMP threads: each builds its own primitives, results stay right
// with several threads at once, and a call leaves the caller's OpenMP thread count as it was
// (oneDNN is held to one thread only for the call's duration).
TEST(Conv2dDnnl, ConcurrentThreadsAndThreadCountRestored) {
  const int before = omp_get_max_threads();
  check_once({8, 16, 14, 2, 5}, 7);
  EXPECT_EQ(omp_get_max_threads(), before);
  int failures = 0;
#pragma omp parallel num_threads(3) reduction(+ : failures)
  {
    const int inner_before = omp_get_max_threads();
    const int64_t n0 = dnnl_conv::primitives_created();
    for (int rep = 0; rep < 4; ++rep) {
      const Case k{8, 16, 14, 1 + rep % 2, 5};
      Inputs in(k, 50 + 10 * omp_get_thread_num() + rep);
      const Vec W = widen(in.W), x = widen(in.x);
      LayerContext<float> cf;
      LayerContext<double> cd;
      FVec y = poisoned(in.ny());
      Vec yd(in.ny());
      in.f.forward(k.m, in.W.data(), in.x.data(), y.data(), cf);
      in.d.forward(k.m, W.data(), x.data(), yd.data(), cd);
      if (!close("forward y", k, y, yd)) ++failures;
    }
    // Two strides, one pass each in pieces of 2 and 1 examples: the second sweep hits this
    // thread's cache.
    if (dnnl_conv::primitives_created() - n0 > 4) ++failures;
    if (omp_get_max_threads() != inner_before) ++failures;
  }
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(omp_get_max_threads(), before);
}

// Winograd runs the 3×3 stride-1 passes with enough 4×4 output tiles per piece, on every pass,
// and the direct kernel the small ones and strided ones; the choice is by shape (and CPU).
TEST(Conv2dDnnl, WinogradTakesTheLargeStrideOneShapes) {
  if (!dnnl_conv::winograd_available()) GTEST_SKIP() << "no AVX-512: oneDNN has no Winograd kernel";
  auto impls = [](const Case& k) {
    std::string s;
    std::thread([&] {  // a fresh thread: implementations() lists its primitives alone
      check_once(k, 11);
      s = dnnl_conv::implementations();
    })
        .join();
    return s;
  };
  const std::string large = impls({16, 32, 28, 1, 20}), small = impls({16, 32, 7, 1, 5}),
                    strided = impls({16, 32, 28, 2, 20});
  for (const char* pass : {"fwd=jit_wino", "bwd_d=jit_wino", "bwd_w=jit_wino"})
    EXPECT_NE(large.find(pass), std::string::npos) << pass << " missing from: " << large;
  EXPECT_EQ(small.find("wino"), std::string::npos) << small;
  EXPECT_EQ(strided.find("wino"), std::string::npos) << strided;
  std::printf("large: %s\nsmall: %s\n", large.c_str(), small.c_str());
}

// Every output of every pass of case k, with pieces on `threads` threads.
std::vector<FVec> all_passes(const Case& k, int threads) {
  IntraTaskThreads use(threads);
  Inputs in(k, 300);
  LayerContext<float> c;
  std::vector<FVec> out;
  FVec y(in.ny()), dx(in.nx()), dW(in.W.size());
  in.f.forward(k.m, in.W.data(), in.x.data(), y.data(), c);
  in.f.backward(k.m, in.W.data(), in.x.data(), c, in.dy.data(), dx.data(), dW.data());
  out = {y, dx, dW};
  FVec R_y(in.ny()), R_dx(in.nx()), R_dW(in.W.size());
  in.f.r_forward(k.m, in.W.data(), in.R_W.data(), in.x.data(), in.R_x.data(), c, R_y.data());
  in.f.r_backward(k.m, in.W.data(), in.R_W.data(), in.x.data(), in.R_x.data(), c, in.dy.data(),
                  in.R_dy.data(), R_dx.data(), R_dW.data());
  for (const FVec* v : {&R_y, &R_dx, &R_dW}) out.push_back(*v);
  return out;
}

// A task alone on several threads spreads its passes over them (the tail of a batch smaller
// than the thread count); the cut into pieces depends on the shape only, so every output has
// the same bits on 1, 2 or 3 threads, and the threads' own count is left as it was.
TEST(Conv2dDnnl, PiecesGiveTheSameBitsOnAnyThreadCount) {
  const int before = omp_get_max_threads();
  for (const Case& k : piece_cases()) {
    const std::vector<FVec> one = all_passes(k, 1);
    for (int threads : {2, 3}) {
      const std::vector<FVec> many = all_passes(k, threads);
      for (size_t i = 0; i < one.size(); ++i)
        EXPECT_EQ(many[i], one[i])
            << "output " << i << " of " << k.name() << " on " << threads << " threads";
    }
  }
  EXPECT_EQ(intra_task_threads(), 1);
  EXPECT_EQ(omp_get_max_threads(), before);
}

}  // namespace
}  // namespace mt
