// The task-batched conv (both GPU forms: cuDNN grouped, im2col + strided-batched SGEMM) and the
// batched linear head on the GPU against the host twin (conv2d_batched_index.h), every pass;
// the two forms against each other; and bit-identical repeats. Skips without a GPU.
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
};

std::string name_of(const ConvCase& c) {
  return "T" + std::to_string(c.tasks) + "_n" + std::to_string(c.n) + "_C" + std::to_string(c.c) +
         "_O" + std::to_string(c.o) + "_H" + std::to_string(c.hw) + "_S" + std::to_string(c.stride);
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

ConvResults run_gpu(BatchedConv2dCuda& conv, int n, const FVec& x, const FVec& R_x, const FVec& W,
                    const FVec& R_W, const FVec& dy, const FVec& R_dy, CUstream_st* s) {
  const BatchedConvGeom& g = conv.geom();
  const DeviceBuffer<float> d_x = upload(x), d_R_x = upload(R_x), d_W = upload(W),
                            d_R_W = upload(R_W), d_dy = upload(dy), d_R_dy = upload(R_dy);
  ConvResults r;
  auto keep = [&](const char* name, const DeviceBuffer<float>& b) {
    r.names.push_back(name);
    r.values.push_back(download(b, s));
  };
  {
    DeviceBuffer<float> y = poisoned(g.out_size(n));
    conv.forward(n, d_W.data(), d_x.data(), y.data(), s);
    keep("forward", y);
  }
  {
    DeviceBuffer<float> dx = poisoned(g.in_size(n)), dW = poisoned(g.weight_size());
    conv.backward(n, d_W.data(), d_x.data(), d_dy.data(), dx.data(), dW.data(), s);
    keep("backward dx", dx);
    keep("backward dW", dW);
    DeviceBuffer<float> dW_only = poisoned(g.weight_size());
    conv.backward(n, d_W.data(), d_x.data(), d_dy.data(), nullptr, dW_only.data(), s);
    keep("backward dW, null dx", dW_only);
  }
  {
    DeviceBuffer<float> R_y = poisoned(g.out_size(n)), R_y0 = poisoned(g.out_size(n));
    conv.r_forward(n, d_W.data(), d_R_W.data(), d_x.data(), d_R_x.data(), R_y.data(), s);
    conv.r_forward(n, d_W.data(), d_R_W.data(), d_x.data(), nullptr, R_y0.data(), s);
    keep("r_forward", R_y);
    keep("r_forward, null R_x", R_y0);
  }
  {
    DeviceBuffer<float> R_dx = poisoned(g.in_size(n)), R_dW = poisoned(g.weight_size());
    DeviceBuffer<float> R_dx0 = poisoned(g.in_size(n)), R_dW0 = poisoned(g.weight_size());
    DeviceBuffer<float> R_dW_only = poisoned(g.weight_size());
    conv.r_backward(n, d_W.data(), d_R_W.data(), d_x.data(), d_R_x.data(), d_dy.data(),
                    d_R_dy.data(), R_dx.data(), R_dW.data(), s);
    conv.r_backward(n, d_W.data(), d_R_W.data(), d_x.data(), nullptr, d_dy.data(), d_R_dy.data(),
                    R_dx0.data(), R_dW0.data(), s);
    conv.r_backward(n, d_W.data(), d_R_W.data(), d_x.data(), d_R_x.data(), d_dy.data(),
                    d_R_dy.data(), nullptr, R_dW_only.data(), s);
    keep("r_backward R_dx", R_dx);
    keep("r_backward R_dW", R_dW);
    keep("r_backward R_dx, null R_x", R_dx0);
    keep("r_backward R_dW, null R_x", R_dW0);
    keep("r_backward R_dW, null R_dx", R_dW_only);
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
      make_batched_conv_geom(Shape{cc.c, cc.hw, cc.hw}, cc.o, cc.stride, cc.tasks);
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
  BatchedConv2dCuda conv(Shape{cc.c, cc.hw, cc.hw}, cc.o, cc.stride, cc.tasks, cc.max_n);
  std::vector<ConvResults> by_form;
  for (ConvForm form : {ConvForm::kCudnnGrouped, ConvForm::kGemm}) {
    set_all(conv, form);
    for (int p = 0; p < kConvPassCount; ++p) ASSERT_EQ(conv.form(static_cast<ConvPass>(p)), form);
    const ConvResults first = run_gpu(conv, n, x, R_x, W, R_W, dy, R_dy, stream.get());
    const ConvResults again = run_gpu(conv, n, x, R_x, W, R_W, dy, R_dy, stream.get());
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

INSTANTIATE_TEST_SUITE_P(
    Shapes, BatchedConvCuda,
    ::testing::Values(ConvCase{3, 3, 5, 2, 4, 7, 1}, ConvCase{3, 3, 5, 2, 4, 7, 2},
                      ConvCase{3, 3, 3, 3, 4, 7, 1}, ConvCase{3, 3, 3, 3, 4, 7, 2},
                      ConvCase{3, 3, 4, 2, 4, 6, 1}, ConvCase{3, 3, 4, 2, 4, 6, 2},
                      ConvCase{3, 3, 3, 3, 4, 6, 1}, ConvCase{3, 3, 3, 3, 4, 6, 2},
                      ConvCase{4, 6, 8, 16, 16, 14, 1}, ConvCase{4, 6, 6, 16, 16, 14, 2}),
    [](const ::testing::TestParamInfo<ConvCase>& info) { return name_of(info.param); });

TEST(BatchedConvCuda, TuneKeepsTheFasterFormAndStaysCorrect) {
  MT_REQUIRE_GPU();
  select_gpu(0);
  const ConvCase cc{4, 6, 6, 16, 16, 14, 1};
  const BatchedConvGeom g =
      make_batched_conv_geom(Shape{cc.c, cc.hw, cc.hw}, cc.o, cc.stride, cc.tasks);
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
  BatchedConv2dCuda conv(Shape{cc.c, cc.hw, cc.hw}, cc.o, cc.stride, cc.tasks, cc.max_n);
  conv.tune(n, stream.get(), 3);
  const std::string d = conv.describe();
  std::printf("%s\n", d.c_str());
  for (const char* pass :
       {"forward=", "backward_data=", "backward_filter=", "r_forward=", "r_backward="})
    EXPECT_NE(d.find(pass), std::string::npos) << d;
  EXPECT_NE(d.find(" ms"), std::string::npos) << "no timings in: " << d;
  EXPECT_NE(d.find("cudnn algos"), std::string::npos) << d;
  const ConvResults r = run_gpu(conv, n, x, R_x, W, R_W, dy, R_dy, stream.get());
  for (size_t k = 0; k < r.values.size(); ++k)
    expect_within("tuned " + r.names[k], ref.values[k], mag.values[k], r.values[k], bound);
  EXPECT_THROW(conv.forward(cc.max_n + 1, nullptr, nullptr, nullptr, stream.get()), Error);
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
  const DeviceBuffer<float> d_x = upload(x), d_R_x = upload(R_x), d_W = upload(W),
                            d_R_W = upload(R_W), d_b = upload(b), d_R_b = upload(R_b),
                            d_dy = upload(dy), d_R_dy = upload(R_dy);
  auto run = [&] {
    DeviceBuffer<float> y = poisoned(n * T * K), dx = poisoned(n * T * F), dW = poisoned(T * K * F),
                        db = poisoned(T * K), R_y = poisoned(n * T * K), R_dx = poisoned(n * T * F),
                        R_dW = poisoned(T * K * F), R_db = poisoned(T * K);
    lin.forward(n, d_W.data(), d_b.data(), d_x.data(), y.data(), s);
    lin.backward(n, d_W.data(), d_x.data(), d_dy.data(), dx.data(), dW.data(), db.data(), s);
    lin.r_forward(n, d_W.data(), d_R_W.data(), d_R_b.data(), d_x.data(), d_R_x.data(), R_y.data(),
                  s);
    lin.r_backward(n, d_W.data(), d_R_W.data(), d_x.data(), d_R_x.data(), d_dy.data(),
                   d_R_dy.data(), R_dx.data(), R_dW.data(), R_db.data(), s);
    return std::vector<FVec>{download(y, s),    download(dx, s),  download(dW, s),
                             download(db, s),   download(R_y, s), download(R_dx, s),
                             download(R_dW, s), download(R_db, s)};
  };
  const char* names[] = {"forward",   "backward dx",     "backward dW",     "backward db",
                         "r_forward", "r_backward R_dx", "r_backward R_dW", "r_backward R_db"};
  const std::vector<FVec> first = run(), again = run();
  for (size_t k = 0; k < first.size(); ++k) {
    expect_within(names[k], ref[k], mag[k], first[k], bound);
    expect_same_bits(names[k], first[k], again[k]);
  }

  // Null R_x and null dx / R_dx.
  DeviceBuffer<float> R_y0 = poisoned(n * T * K), dW1 = poisoned(T * K * F), db1 = poisoned(T * K),
                      R_dW1 = poisoned(T * K * F), R_db1 = poisoned(T * K);
  lin.r_forward(n, d_W.data(), d_R_W.data(), d_R_b.data(), d_x.data(), nullptr, R_y0.data(), s);
  lin.backward(n, d_W.data(), d_x.data(), d_dy.data(), nullptr, dW1.data(), db1.data(), s);
  lin.r_backward(n, d_W.data(), d_R_W.data(), d_x.data(), d_R_x.data(), d_dy.data(), d_R_dy.data(),
                 nullptr, R_dW1.data(), R_db1.data(), s);
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
