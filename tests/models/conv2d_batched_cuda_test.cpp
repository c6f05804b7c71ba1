// The task-batched conv (3×3 and 1×1; both GPU forms: cuDNN grouped, im2col + our
// batch-invariant GEMM), the batched linear head and the GEMM kernel itself on the GPU: against
// the host twin (conv2d_batched_index.h), every pass; the two forms against each other;
// bit-identical repeats; and a task's bits independent of its batch-mates (alone vs in batches
// of 1 … T). Skips without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <ostream>
#include <string>
#include <vector>

#include "core/cuda_check.h"
#include "core/device.h"
#include "core/rng.h"
#include "models/conv2d_batched.h"
#include "models/linear_batched.h"
#include "tests/support/gemm_calls.h"

namespace mt {
namespace {

using FVec = std::vector<float>;
using DVec = std::vector<double>;

#define MT_REQUIRE_GPU() \
  if (gpu_count() == 0) GTEST_SKIP() << "no GPU: " << describe_devices()

FVec random_vec(int64_t n, uint64_t seed) {
  Rng rng(seed, 0, 0, Stream::kTest);
  FVec v(static_cast<size_t>(n));
  for (float& x : v) x = static_cast<float>(rng.uniform(-1, 1));
  return v;
}

DVec to_double(const FVec& v) { return DVec(v.begin(), v.end()); }
DVec absolute(const FVec& v) {
  DVec a(v.size());
  for (size_t k = 0; k < v.size(); ++k) a[k] = std::fabs(static_cast<double>(v[k]));
  return a;
}

DeviceBuffer<float> upload(const FVec& v) {
  DeviceBuffer<float> d(v.size());
  d.copy_from_host(v.data(), v.size());
  return d;
}
// A device buffer full of NaN: a pass must overwrite every entry it owns.
DeviceBuffer<float> poisoned(int64_t n) {
  return upload(FVec(static_cast<size_t>(n), std::nanf("")));
}
FVec download(const DeviceBuffer<float>& d, CUstream_st* stream) {
  MT_CUDA_CHECK(cudaStreamSynchronize(stream));
  FVec v(d.size());
  d.copy_to_host(v.data(), v.size());
  return v;
}

// Bound on |fl(s) − s| for a float sum s of at most k products (FMA or not, any order):
// γ_k · Σ|terms| with γ_k ≈ k·2^-24, and Σ|terms| is what the twin computes from |inputs|
// (`mag`). cuDNN may pick a transform algorithm (FFT, Winograd) whose error is bounded
// norm-wise rather than per entry, hence the extra 1e-5 · max(mag). Any indexing or
// accumulation error is O(mag) and fails both terms by orders of magnitude.
struct Bound {
  double k;  // longest sum, in terms
  double at(double mag_e, double mag_max) const {
    return 2.0 * k * std::ldexp(1.0, -24) * mag_e + 1e-5 * mag_max;
  }
};

void expect_within(const std::string& what, const DVec& ref, const DVec& mag, const FVec& got,
                   Bound bound, double factor = 1.0) {
  ASSERT_EQ(ref.size(), got.size()) << what;
  const double mag_max = *std::max_element(mag.begin(), mag.end());
  ASSERT_GT(mag_max, 0.1) << what << ": reference is trivially small";
  double worst = 0;  // largest error / bound
  size_t at = 0;
  for (size_t k = 0; k < ref.size(); ++k) {
    ASSERT_TRUE(std::isfinite(got[k])) << what << ": entry " << k << " not written";
    const double r = std::fabs(got[k] - ref[k]) / (factor * bound.at(mag[k], mag_max));
    if (r > worst) worst = r, at = k;
  }
  EXPECT_LE(worst, 1.0) << what << ": entry " << at << " gpu " << got[at] << " ref " << ref[at]
                        << " (|terms| " << mag[at] << ")";
}

void expect_same_bits(const std::string& what, const FVec& a, const FVec& b) {
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0)
      << what << ": repeated call differs";
}

void expect_agree(const std::string& what, const FVec& a, const FVec& b, const DVec& mag,
                  Bound bound) {
  expect_within(what, to_double(a), mag, b, bound, 2.0);
}

class CudaStream {
 public:
  CudaStream() { MT_CUDA_CHECK(cudaStreamCreate(&s_)); }
  ~CudaStream() { cudaStreamDestroy(s_); }
  CUstream_st* get() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
};

// ----------------------------------------------------------------------------------------------
// Convolution.

struct ConvCase {
  int tasks, n, max_n, c, o, hw, stride;
  int kernel = 3;  // 3 (padding 1) or 1 (padding 0: ResNet-12's shortcut)
};

std::string name_of(const ConvCase& c) {
  return "T" + std::to_string(c.tasks) + "_n" + std::to_string(c.n) + "_C" + std::to_string(c.c) +
         "_O" + std::to_string(c.o) + "_H" + std::to_string(c.hw) + "_S" +
         std::to_string(c.stride) + (c.kernel == 3 ? "" : "_K" + std::to_string(c.kernel));
}

void PrintTo(const ConvCase& c, std::ostream* os) { *os << name_of(c); }

// Results of every pass, as host vectors, in one fixed order.
struct ConvResults {
  std::vector<std::string> names;
  std::vector<FVec> values;
};

// Host twin results in double, from the float inputs (ref) or their absolute values (mag).
struct ConvTwin {
  std::vector<DVec> values;
};

ConvTwin run_twin(const BatchedConvGeom& g, int n, const DVec& x, const DVec& R_x, const DVec& W,
                  const DVec& R_W, const DVec& dy, const DVec& R_dy) {
  HostGemmExec<double> ex;
  DVec col(g.col_size(n)), gy(g.out_size(n)), R_gy(g.out_size(n));
  const ConvGemmWorkspace<double> ws{col.data(), gy.data(), R_gy.data()};
  DVec y(g.out_size(n)), dx(g.in_size(n)), dW(g.weight_size()), R_y(g.out_size(n)),
      R_y0(g.out_size(n)), R_dx(g.in_size(n)), R_dW(g.weight_size()), R_dx0(g.in_size(n)),
      R_dW0(g.weight_size());
  const double* none = nullptr;
  conv_gemm_forward(ex, g, n, W.data(), x.data(), y.data(), ws);
  conv_gemm_backward_data(ex, g, n, W.data(), dy.data(), dx.data(), ws);
  conv_gemm_backward_filter(ex, g, n, x.data(), dy.data(), dW.data(), ws);
  conv_gemm_r_forward(ex, g, n, W.data(), R_W.data(), x.data(), R_x.data(), R_y.data(), ws);
  conv_gemm_r_forward(ex, g, n, W.data(), R_W.data(), x.data(), none, R_y0.data(), ws);
  conv_gemm_r_backward(ex, g, n, W.data(), R_W.data(), x.data(), R_x.data(), dy.data(), R_dy.data(),
                       R_dx.data(), R_dW.data(), ws);
  conv_gemm_r_backward(ex, g, n, W.data(), R_W.data(), x.data(), none, dy.data(), R_dy.data(),
                       R_dx0.data(), R_dW0.data(), ws);
  // Same order as run_gpu below.
  return ConvTwin{{y, dx, dW, dW, R_y, R_y0, R_dx, R_dW, R_dx0, R_dW0, R_dW}};
}

// The slices of T tasks' data: v holds `rows` rows of `from` task blocks of `block` elements
// (row i, task t at (i·from + t)·block); the result holds the tasks of `pick`, in that order.
FVec pick_tasks(const FVec& v, int64_t rows, int from, int64_t block,
                const std::vector<int>& pick) {
  FVec out(static_cast<size_t>(rows * pick.size() * block));
  for (int64_t i = 0; i < rows; ++i)
    for (size_t k = 0; k < pick.size(); ++k)
      std::copy_n(v.begin() + (i * from + pick[k]) * block, block,
                  out.begin() + (i * static_cast<int64_t>(pick.size()) + k) * block);
  return out;
}

// The device memory and cuDNN handle a BatchedConv2dCuda is bound to.
struct BoundConv {
  std::shared_ptr<cudnnContext> cudnn = make_cudnn_handle();
  BatchedConv2dCuda conv;
  DeviceBuffer<float> col, gy, R_gy;
  DeviceBuffer<char> cudnn_ws;
  BoundConv(const ConvCase& cc, ConvForm form)
      : conv(Shape{cc.c, cc.hw, cc.hw}, cc.o, cc.stride, cc.tasks, cc.max_n, form, cudnn.get(),
             cc.kernel) {
    const ConvWorkspaceNeed need = conv.need();
    col = DeviceBuffer<float>(need.col);
    gy = DeviceBuffer<float>(need.gy);
    R_gy = DeviceBuffer<float>(need.gy);
    cudnn_ws = DeviceBuffer<char>(need.cudnn_bytes);
    conv.bind({col.data(), gy.data(), R_gy.data()}, cudnn_ws.data());
  }
};

// Every pass at T tasks (the first T of the inputs' layout, which must be for T tasks), with
// each result's layout: rows and per-task block (for pick_tasks).
struct Layout {
  int64_t rows, block;
};
ConvResults run_gpu(BatchedConv2dCuda& conv, int T, int n, const FVec& x, const FVec& R_x,
                    const FVec& W, const FVec& R_W, const FVec& dy, const FVec& R_dy,
                    CUstream_st* s, std::vector<Layout>* layouts = nullptr) {
  const BatchedConvGeom g = conv.geom().at_tasks(T);
  const Layout in{n, g.in_c * g.in_plane()}, out{n, g.out_c * g.out_plane()},
      weight{1, g.out_c * g.col_rows()};
  const DeviceBuffer<float> d_x = upload(x), d_R_x = upload(R_x), d_W = upload(W),
                            d_R_W = upload(R_W), d_dy = upload(dy), d_R_dy = upload(R_dy);
  ConvResults r;
  auto keep = [&](const char* name, const DeviceBuffer<float>& b, Layout l) {
    r.names.push_back(name);
    r.values.push_back(download(b, s));
    if (layouts) layouts->push_back(l);
  };
  {
    DeviceBuffer<float> y = poisoned(g.out_size(n));
    conv.forward(T, n, d_W.data(), d_x.data(), y.data(), s);
    keep("forward", y, out);
  }
  {
    DeviceBuffer<float> dx = poisoned(g.in_size(n)), dW = poisoned(g.weight_size());
    conv.backward(T, n, d_W.data(), d_x.data(), d_dy.data(), dx.data(), dW.data(), s);
    keep("backward dx", dx, in);
    keep("backward dW", dW, weight);
    DeviceBuffer<float> dW_only = poisoned(g.weight_size());
    conv.backward(T, n, d_W.data(), d_x.data(), d_dy.data(), nullptr, dW_only.data(), s);
    keep("backward dW, null dx", dW_only, weight);
  }
  {
    DeviceBuffer<float> R_y = poisoned(g.out_size(n)), R_y0 = poisoned(g.out_size(n));
    conv.r_forward(T, n, d_W.data(), d_R_W.data(), d_x.data(), d_R_x.data(), R_y.data(), s);
    conv.r_forward(T, n, d_W.data(), d_R_W.data(), d_x.data(), nullptr, R_y0.data(), s);
    keep("r_forward", R_y, out);
    keep("r_forward, null R_x", R_y0, out);
  }
  {
    DeviceBuffer<float> R_dx = poisoned(g.in_size(n)), R_dW = poisoned(g.weight_size());
    DeviceBuffer<float> R_dx0 = poisoned(g.in_size(n)), R_dW0 = poisoned(g.weight_size());
    DeviceBuffer<float> R_dW_only = poisoned(g.weight_size());
    conv.r_backward(T, n, d_W.data(), d_R_W.data(), d_x.data(), d_R_x.data(), d_dy.data(),
                    d_R_dy.data(), R_dx.data(), R_dW.data(), s);
    conv.r_backward(T, n, d_W.data(), d_R_W.data(), d_x.data(), nullptr, d_dy.data(), d_R_dy.data(),
                    R_dx0.data(), R_dW0.data(), s);
    conv.r_backward(T, n, d_W.data(), d_R_W.data(), d_x.data(), d_R_x.data(), d_dy.data(),
                    d_R_dy.data(), nullptr, R_dW_only.data(), s);
    keep("r_backward R_dx", R_dx, in);
    keep("r_backward R_dW", R_dW, weight);
    keep("r_backward R_dx, null R_x", R_dx0, in);
    keep("r_backward R_dW, null R_x", R_dW0, weight);
    keep("r_backward R_dW, null R_dx", R_dW_only, weight);
  }
  return r;
}

void set_all(BatchedConv2dCuda& conv, ConvForm form) {
  for (int p = 0; p < kConvPassCount; ++p) conv.set_form(static_cast<ConvPass>(p), form);
}

class BatchedConvCuda : public ::testing::TestWithParam<ConvCase> {};

TEST_P(BatchedConvCuda, BothFormsMatchTheHostTwinAgreeAndRepeatBitwise) {
  MT_REQUIRE_GPU();
  select_gpu(0);
  const ConvCase cc = GetParam();
  const BatchedConvGeom g =
      make_batched_conv_geom(Shape{cc.c, cc.hw, cc.hw}, cc.o, cc.stride, cc.tasks, cc.kernel);
  const int n = cc.n;
  const FVec x = random_vec(g.in_size(n), 1), R_x = random_vec(g.in_size(n), 2);
  const FVec W = random_vec(g.weight_size(), 3), R_W = random_vec(g.weight_size(), 4);
  const FVec dy = random_vec(g.out_size(n), 5), R_dy = random_vec(g.out_size(n), 6);
  const ConvTwin ref = run_twin(g, n, to_double(x), to_double(R_x), to_double(W), to_double(R_W),
                                to_double(dy), to_double(R_dy));
  const ConvTwin mag = run_twin(g, n, absolute(x), absolute(R_x), absolute(W), absolute(R_W),
                                absolute(dy), absolute(R_dy));
  const Bound bound{2.0 * std::max<double>({static_cast<double>(g.col_rows()), 9.0 * g.out_c,
                                            static_cast<double>(n * g.out_plane())}) +
                    2.0};

  CudaStream stream;
  BoundConv bc(cc, ConvForm::kCudnnGrouped);
  BatchedConv2dCuda& conv = bc.conv;
  std::vector<ConvResults> by_form;
  for (ConvForm form : {ConvForm::kCudnnGrouped, ConvForm::kGemm}) {
    set_all(conv, form);
    for (int p = 0; p < kConvPassCount; ++p) ASSERT_EQ(conv.form(static_cast<ConvPass>(p)), form);
    const ConvResults first = run_gpu(conv, cc.tasks, n, x, R_x, W, R_W, dy, R_dy, stream.get());
    const ConvResults again = run_gpu(conv, cc.tasks, n, x, R_x, W, R_W, dy, R_dy, stream.get());
    ASSERT_EQ(first.values.size(), ref.values.size());
    for (size_t k = 0; k < first.values.size(); ++k) {
      const std::string what = std::string(conv_form_name(form)) + " " + first.names[k];
      expect_within(what, ref.values[k], mag.values[k], first.values[k], bound);
      expect_same_bits(what, first.values[k], again.values[k]);
    }
    by_form.push_back(first);
  }
  for (size_t k = 0; k < by_form[0].values.size(); ++k)
    expect_agree("cudnn vs gemm " + by_form[0].names[k], by_form[0].values[k], by_form[1].values[k],
                 mag.values[k], bound);
  std::printf("%s\n", conv.describe().c_str());
}

// Every task's results, for every pass, are the same bits alone (T = 1), among the first
// T = 1 … max tasks, and in the full batch: what dist.reduce=exact's promise rests on.
void expect_batch_invariant(const ConvCase& cc, ConvForm form) {
  const BatchedConvGeom g =
      make_batched_conv_geom(Shape{cc.c, cc.hw, cc.hw}, cc.o, cc.stride, cc.tasks, cc.kernel);
  const int n = cc.n, Tmax = cc.tasks;
  const Layout in{n, g.in_c * g.in_plane()}, out{n, g.out_c * g.out_plane()},
      weight{1, g.out_c * g.col_rows()};
  const FVec x = random_vec(g.in_size(n), 31), R_x = random_vec(g.in_size(n), 32);
  const FVec W = random_vec(g.weight_size(), 33), R_W = random_vec(g.weight_size(), 34);
  const FVec dy = random_vec(g.out_size(n), 35), R_dy = random_vec(g.out_size(n), 36);
  CudaStream stream;
  BoundConv bc(cc, form);
  std::vector<Layout> layouts;
  const ConvResults full =
      run_gpu(bc.conv, Tmax, n, x, R_x, W, R_W, dy, R_dy, stream.get(), &layouts);
  std::vector<std::vector<int>> subsets;
  for (int T = 1; T < Tmax; ++T) {
    subsets.emplace_back();
    for (int t = 0; t < T; ++t) subsets.back().push_back(t);
  }
  for (int t = 0; t < Tmax; ++t) subsets.push_back({t});
  subsets.push_back({Tmax - 1, 0});  // order within the batch does not matter either
  for (const std::vector<int>& pick : subsets) {
    auto sub = [&](const FVec& v, Layout l) { return pick_tasks(v, l.rows, Tmax, l.block, pick); };
    const int T = static_cast<int>(pick.size());
    const ConvResults part = run_gpu(bc.conv, T, n, sub(x, in), sub(R_x, in), sub(W, weight),
                                     sub(R_W, weight), sub(dy, out), sub(R_dy, out), stream.get());
    for (size_t k = 0; k < part.values.size(); ++k)
      for (int j = 0; j < T; ++j) {
        const FVec mine = pick_tasks(part.values[k], layouts[k].rows, T, layouts[k].block, {j});
        const FVec whole =
            pick_tasks(full.values[k], layouts[k].rows, Tmax, layouts[k].block, {pick[j]});
        EXPECT_EQ(std::memcmp(mine.data(), whole.data(), mine.size() * sizeof(float)), 0)
            << conv_form_name(form) << " " << part.names[k] << ": task " << pick[j]
            << " differs between a batch of " << T << " and of " << Tmax;
      }
  }
}

TEST_P(BatchedConvCuda, GemmFormGivesEachTaskTheBitsItHasAlone) {
  MT_REQUIRE_GPU();
  select_gpu(0);
  expect_batch_invariant(GetParam(), ConvForm::kGemm);
}

// cuDNN promises nothing about a group's bits across group counts; this says whether it holds
// on the GPU at hand (README's status table records the answer).
TEST_P(BatchedConvCuda, CudnnFormGivesEachTaskTheBitsItHasAlone) {
  MT_REQUIRE_GPU();
  select_gpu(0);
  expect_batch_invariant(GetParam(), ConvForm::kCudnnGrouped);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, BatchedConvCuda,
    ::testing::Values(ConvCase{3, 3, 5, 2, 4, 7, 1}, ConvCase{3, 3, 5, 2, 4, 7, 2},
                      ConvCase{3, 3, 3, 3, 4, 7, 1}, ConvCase{3, 3, 3, 3, 4, 7, 2},
                      ConvCase{3, 3, 4, 2, 4, 6, 1}, ConvCase{3, 3, 4, 2, 4, 6, 2},
                      ConvCase{3, 3, 3, 3, 4, 6, 1}, ConvCase{3, 3, 3, 3, 4, 6, 2},
                      ConvCase{4, 6, 8, 16, 16, 14, 1}, ConvCase{4, 6, 6, 16, 16, 14, 2},
                      ConvCase{6, 5, 5, 64, 64, 14, 1}, ConvCase{3, 3, 5, 2, 4, 7, 1, 1},
                      ConvCase{3, 3, 4, 3, 4, 6, 2, 1}, ConvCase{4, 6, 6, 16, 16, 14, 1, 1}),
    [](const ::testing::TestParamInfo<ConvCase>& info) { return name_of(info.param); });

TEST(BatchedConvCuda, TuneKeepsTheFasterFormAndStaysCorrect) {
  MT_REQUIRE_GPU();
  select_gpu(0);
  const ConvCase cc{4, 6, 6, 16, 16, 14, 1};
  const BatchedConvGeom g =
      make_batched_conv_geom(Shape{cc.c, cc.hw, cc.hw}, cc.o, cc.stride, cc.tasks, cc.kernel);
  const int n = cc.n;
  const FVec x = random_vec(g.in_size(n), 7), R_x = random_vec(g.in_size(n), 8);
  const FVec W = random_vec(g.weight_size(), 9), R_W = random_vec(g.weight_size(), 10);
  const FVec dy = random_vec(g.out_size(n), 11), R_dy = random_vec(g.out_size(n), 12);
  const ConvTwin ref = run_twin(g, n, to_double(x), to_double(R_x), to_double(W), to_double(R_W),
                                to_double(dy), to_double(R_dy));
  const ConvTwin mag = run_twin(g, n, absolute(x), absolute(R_x), absolute(W), absolute(R_W),
                                absolute(dy), absolute(R_dy));
  const Bound bound{2.0 * std::max<double>({static_cast<double>(g.col_rows()), 9.0 * g.out_c,
                                            static_cast<double>(n * g.out_plane())}) +
                    2.0};
  CudaStream stream;
  BoundConv bc(cc, ConvForm::kGemm);
  BatchedConv2dCuda& conv = bc.conv;
  conv.tune(n, stream.get(), 3);
  const std::string d = conv.describe();
  std::printf("%s\n", d.c_str());
  for (const char* pass :
       {"forward=", "backward_data=", "backward_filter=", "r_forward=", "r_backward="})
    EXPECT_NE(d.find(pass), std::string::npos) << d;
  EXPECT_NE(d.find(" ms"), std::string::npos) << "no timings in: " << d;
  EXPECT_NE(d.find("cudnn algos"), std::string::npos) << d;
  const ConvResults r = run_gpu(conv, cc.tasks, n, x, R_x, W, R_W, dy, R_dy, stream.get());
  for (size_t k = 0; k < r.values.size(); ++k)
    expect_within("tuned " + r.names[k], ref.values[k], mag.values[k], r.values[k], bound);
  EXPECT_THROW(conv.forward(cc.tasks, cc.max_n + 1, nullptr, nullptr, nullptr, stream.get()),
               Error);
  EXPECT_THROW(conv.forward(cc.tasks + 1, n, nullptr, nullptr, nullptr, stream.get()), Error);
}

// ----------------------------------------------------------------------------------------------
// The GEMM kernel: every element the bits of gemm_call_element (the host twin), for both
// transposes, beta 0 and 1, leading dimensions above the rows, sizes that are not multiples of
// the tiles, and k = 0.

TEST(PinnedGemmCuda, EqualsTheHostTwinBitForBit) {
  MT_REQUIRE_GPU();
  select_gpu(0);
  CudaStream stream;
  int seed = 100;
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (double beta : {0.0, 1.0})
        for (int k : {0, 1, 17, 300}) {
          const GemmCall c = testing::padded_gemm_call(ta, tb, beta, k);
          const FVec A = random_vec(c.stride_a * c.batch, seed++),
                     B = random_vec(c.stride_b * c.batch, seed++),
                     C0 = random_vec(c.stride_c * c.batch, seed++);
          FVec host = C0;
          run_gemm_call_host(c, A.data(), B.data(), host.data());
          const DeviceBuffer<float> dA = upload(A), dB = upload(B);
          DeviceBuffer<float> dC = upload(C0);
          run_gemm_call_pinned(c, dA.data(), dB.data(), dC.data(), stream.get());
          const FVec dev = download(dC, stream.get());
          EXPECT_EQ(std::memcmp(dev.data(), host.data(), dev.size() * sizeof(float)), 0)
              << "transa " << ta << " transb " << tb << " beta " << beta << " k " << k;
        }
}

// ----------------------------------------------------------------------------------------------
// Linear head.

TEST(BatchedLinearCuda, EveryPassMatchesTheHostTwinAndRepeatsBitwise) {
  MT_REQUIRE_GPU();
  select_gpu(0);
  const int T = 3, F = 50, K = 5, n = 7, max_n = 9;
  const BatchedLinearGeom g{T, F, K};
  const FVec x = random_vec(n * T * F, 21), R_x = random_vec(n * T * F, 22);
  const FVec W = random_vec(T * K * F, 23), R_W = random_vec(T * K * F, 24);
  const FVec b = random_vec(T * K, 25), R_b = random_vec(T * K, 26);
  const FVec dy = random_vec(n * T * K, 27), R_dy = random_vec(n * T * K, 28);

  auto twin = [&](auto conv_in) {
    const DVec hx = conv_in(x), hR_x = conv_in(R_x), hW = conv_in(W), hR_W = conv_in(R_W),
               hb = conv_in(b), hR_b = conv_in(R_b), hdy = conv_in(dy), hR_dy = conv_in(R_dy);
    HostGemmExec<double> ex;
    DVec y(n * T * K), dx(n * T * F), dW(T * K * F), db(T * K), R_y(n * T * K), R_dx(n * T * F),
        R_dW(T * K * F), R_db(T * K);
    linear_gemm_forward(ex, g, n, hW.data(), hb.data(), hx.data(), y.data());
    linear_gemm_backward(ex, g, n, hW.data(), hx.data(), hdy.data(), dx.data(), dW.data(),
                         db.data());
    linear_gemm_r_forward(ex, g, n, hW.data(), hR_W.data(), hR_b.data(), hx.data(), hR_x.data(),
                          R_y.data());
    linear_gemm_r_backward(ex, g, n, hW.data(), hR_W.data(), hx.data(), hR_x.data(), hdy.data(),
                           hR_dy.data(), R_dx.data(), R_dW.data(), R_db.data());
    return std::vector<DVec>{y, dx, dW, db, R_y, R_dx, R_dW, R_db};
  };
  const std::vector<DVec> ref = twin(to_double), mag = twin(absolute);
  const Bound bound{2.0 * std::max(F, n) + 2.0};

  CudaStream stream;
  CUstream_st* s = stream.get();
  BatchedLinearCuda lin(F, K, T, max_n);
  // Every pass at Tc tasks on inputs laid out for Tc tasks.
  auto run = [&](int Tc, const FVec& x_, const FVec& R_x_, const FVec& W_, const FVec& R_W_,
                 const FVec& b_, const FVec& R_b_, const FVec& dy_, const FVec& R_dy_) {
    const DeviceBuffer<float> d_x = upload(x_), d_R_x = upload(R_x_), d_W = upload(W_),
                              d_R_W = upload(R_W_), d_b = upload(b_), d_R_b = upload(R_b_),
                              d_dy = upload(dy_), d_R_dy = upload(R_dy_);
    DeviceBuffer<float> y = poisoned(n * Tc * K), dx = poisoned(n * Tc * F),
                        dW = poisoned(Tc * K * F), db = poisoned(Tc * K),
                        R_y = poisoned(n * Tc * K), R_dx = poisoned(n * Tc * F),
                        R_dW = poisoned(Tc * K * F), R_db = poisoned(Tc * K);
    lin.forward(Tc, n, d_W.data(), d_b.data(), d_x.data(), y.data(), s);
    lin.backward(Tc, n, d_W.data(), d_x.data(), d_dy.data(), dx.data(), dW.data(), db.data(), s);
    lin.r_forward(Tc, n, d_W.data(), d_R_W.data(), d_R_b.data(), d_x.data(), d_R_x.data(),
                  R_y.data(), s);
    lin.r_backward(Tc, n, d_W.data(), d_R_W.data(), d_x.data(), d_R_x.data(), d_dy.data(),
                   d_R_dy.data(), R_dx.data(), R_dW.data(), R_db.data(), s);
    return std::vector<FVec>{download(y, s),    download(dx, s),  download(dW, s),
                             download(db, s),   download(R_y, s), download(R_dx, s),
                             download(R_dW, s), download(R_db, s)};
  };
  const char* names[] = {"forward",   "backward dx",     "backward dW",     "backward db",
                         "r_forward", "r_backward R_dx", "r_backward R_dW", "r_backward R_db"};
  const std::vector<FVec> first = run(T, x, R_x, W, R_W, b, R_b, dy, R_dy),
                          again = run(T, x, R_x, W, R_W, b, R_b, dy, R_dy);
  for (size_t k = 0; k < first.size(); ++k) {
    expect_within(names[k], ref[k], mag[k], first[k], bound);
    expect_same_bits(names[k], first[k], again[k]);
  }
  // Each task alone gives the bits it has in the batch (rows, block) of every result.
  const Layout lay[] = {{n, K}, {n, F}, {1, K * F}, {1, K}, {n, K}, {n, F}, {1, K * F}, {1, K}};
  for (int t = 0; t < T; ++t) {
    auto one = [&](const FVec& v, Layout l) { return pick_tasks(v, l.rows, T, l.block, {t}); };
    const Layout in{n, F}, out{n, K}, weight{1, K * F}, bias{1, K};
    const std::vector<FVec> alone =
        run(1, one(x, in), one(R_x, in), one(W, weight), one(R_W, weight), one(b, bias),
            one(R_b, bias), one(dy, out), one(R_dy, out));
    for (size_t k = 0; k < alone.size(); ++k) {
      const FVec whole = one(first[k], lay[k]);
      EXPECT_EQ(std::memcmp(alone[k].data(), whole.data(), whole.size() * sizeof(float)), 0)
          << names[k] << ": task " << t << " alone differs from the batch of " << T;
    }
  }

  // Null R_x and null dx / R_dx.
  const DeviceBuffer<float> d_x = upload(x), d_R_x = upload(R_x), d_W = upload(W),
                            d_R_W = upload(R_W), d_R_b = upload(R_b), d_dy = upload(dy),
                            d_R_dy = upload(R_dy);
  DeviceBuffer<float> R_y0 = poisoned(n * T * K), dW1 = poisoned(T * K * F), db1 = poisoned(T * K),
                      R_dW1 = poisoned(T * K * F), R_db1 = poisoned(T * K);
  lin.r_forward(T, n, d_W.data(), d_R_W.data(), d_R_b.data(), d_x.data(), nullptr, R_y0.data(), s);
  lin.backward(T, n, d_W.data(), d_x.data(), d_dy.data(), nullptr, dW1.data(), db1.data(), s);
  lin.r_backward(T, n, d_W.data(), d_R_W.data(), d_x.data(), d_R_x.data(), d_dy.data(),
                 d_R_dy.data(), nullptr, R_dW1.data(), R_db1.data(), s);
  expect_within("backward dW, null dx", ref[2], mag[2], download(dW1, s), bound);
  expect_within("backward db, null dx", ref[3], mag[3], download(db1, s), bound);
  expect_within("r_backward R_dW, null R_dx", ref[6], mag[6], download(R_dW1, s), bound);
  expect_within("r_backward R_db, null R_dx", ref[7], mag[7], download(R_db1, s), bound);
  {
    HostGemmExec<double> ex;
    const DVec hW = to_double(W), hR_W = to_double(R_W), hR_b = to_double(R_b), hx = to_double(x),
               aW = absolute(W), aR_W = absolute(R_W), aR_b = absolute(R_b), ax = absolute(x);
    DVec r0(n * T * K), m0(n * T * K);
    const double* none = nullptr;
    linear_gemm_r_forward(ex, g, n, hW.data(), hR_W.data(), hR_b.data(), hx.data(), none,
                          r0.data());
    linear_gemm_r_forward(ex, g, n, aW.data(), aR_W.data(), aR_b.data(), ax.data(), none,
                          m0.data());
    expect_within("r_forward, null R_x", r0, m0, download(R_y0, s), bound);
  }
}

}  // namespace
}  // namespace mt
