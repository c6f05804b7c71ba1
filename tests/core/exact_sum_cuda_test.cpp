// The exact reduction's CUDA kernel (core/exact_sum_cuda.cu) on a GPU: the accumulators equal
// the host twin's bit for bit on adversarial values (float and double, a layout large enough
// for the grid-stride loop to wrap), continue from uploaded values, run on the VecOps' stream,
// and a refused element is reported as the host reports it; and MetaStep on the CUDA Conv-4 with
// a meta-batch split as ranks would split it gives the bits of the whole batch — which also
// needs every task's gradient to be independent of which tasks share its batch (the property
// that makes dist.reduce=exact N-independent on GPUs). Skips when no GPU is usable.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "core/cuda_check.h"
#include "core/device.h"
#include "core/exact_sum.h"
#include "core/meta_step.h"
#include "core/vec_ops_cuda.h"
#include "models/conv4.h"
#include "models/net_cuda.h"
#include "tests/support/episodes.h"

namespace mt {
namespace {

ParamLayout params() {
  ParamLayout p;
  p.add("conv.weight", {128, 128, 3, 3});
  p.add("bn.gamma", {7});
  p.add("head.weight", {5, 3200});
  p.add("head.bias", {5});
  return p;
}

template <typename T>
std::vector<T> adversarial(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<T> x(static_cast<size_t>(n));
  const T largest = std::nextafter(static_cast<T>(kFixedRange), T(0));
  for (int64_t i = 0; i < n; ++i) {
    switch (i % 5) {
      case 0:
        x[i] = 0;
        break;
      case 1:
        x[i] = i % 3 ? T(1e8) : T(1);
        break;
      case 2:
        x[i] = rng() & 1 ? largest : -largest;
        break;
      default:
        x[i] = std::ldexp(T(1) + static_cast<T>(rng() % 4096) / 4096,
                          static_cast<int>(rng() % 101) - 70) *
               (rng() & 1 ? T(1) : T(-1));
    }
  }
  return x;
}

template <typename T>
std::unique_ptr<VecOps<T>> cuda_ops(cudaStream_t s);
template <>
std::unique_ptr<VecOps<float>> cuda_ops<float>(cudaStream_t s) {
  return make_cuda_vec_ops(s, nullptr);
}
template <>
std::unique_ptr<VecOps<double>> cuda_ops<double>(cudaStream_t s) {
  return make_cuda_vec_ops_double(s, nullptr);
}

template <typename T>
class ExactSumCuda : public ::testing::Test {
 protected:
  void SetUp() override {
    if (gpu_count() == 0) GTEST_SKIP() << "no GPU: " << describe_devices();
    select_gpu(0);
    MT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    vec_ = cuda_ops<T>(stream_);
    dev_ = make_exact_sum_ops(*vec_, 1);
  }
  void TearDown() override {
    dev_.reset();
    vec_.reset();
    if (stream_) MT_CUDA_CHECK(cudaStreamDestroy(stream_));
  }
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<VecOps<T>> vec_;
  std::unique_ptr<ExactSumOps<T>> dev_;
};
using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(ExactSumCuda, Types);

TYPED_TEST(ExactSumCuda, EqualsTheHostTwinBitForBit) {
  using T = TypeParam;
  const ParamLayout p = params();
  const int tasks = 5;
  const BatchedLayout l(p, tasks);
  const std::vector<T> x = adversarial<T>(l.total(), 1);
  const int64_t d = l.dim();
  std::vector<Fixed> start(d);
  for (int64_t j = 0; j < d; ++j) start[j] = (static_cast<Fixed>(j) << 70) - 12345 * j;

  const auto host = make_host_exact_sum_ops<T>(2);
  std::vector<Fixed> want = start;
  ASSERT_FALSE(host->sum_tasks(l, x.data(), want.data()));
  ASSERT_FALSE(host->sum_tasks(l.with_tasks(2), x.data(), want.data()));

  Buffer<T> xd = this->vec_->alloc(l.total());
  this->vec_->upload(l.total(), x.data(), xd.data());
  Buffer<Fixed> acc = this->dev_->alloc(d);
  this->dev_->upload(d, start.data(), acc.data());
  ASSERT_FALSE(this->dev_->sum_tasks(l, xd.data(), acc.data()));
  ASSERT_FALSE(this->dev_->sum_tasks(l.with_tasks(2), xd.data(), acc.data()));
  std::vector<Fixed> got(d, -1);
  this->dev_->download(d, acc.data(), got.data());
  size_t wrong = 0;
  for (int64_t j = 0; j < d; ++j) wrong += got[j] != want[j];
  EXPECT_EQ(wrong, 0u);
}

TYPED_TEST(ExactSumCuda, RefusedElementIsReportedLikeTheHost) {
  using T = TypeParam;
  const ParamLayout p = params();
  const BatchedLayout l(p, 3);
  std::vector<T> x = adversarial<T>(l.total(), 2);
  x[l.index(2, 5000)] = std::numeric_limits<T>::infinity();
  x[l.index(1, 5000)] = T(3e9);
  x[l.index(0, 90000)] = std::numeric_limits<T>::quiet_NaN();
  std::vector<Fixed> acc(l.dim(), 0);
  const FixedFault want = make_host_exact_sum_ops<T>(1)->sum_tasks(l, x.data(), acc.data());
  Buffer<T> xd = this->vec_->alloc(l.total());
  this->vec_->upload(l.total(), x.data(), xd.data());
  Buffer<Fixed> accd = this->dev_->alloc(l.dim());
  this->dev_->upload(l.dim(), acc.data(), accd.data());
  const FixedFault got = this->dev_->sum_tasks(l, xd.data(), accd.data());
  ASSERT_TRUE(want);
  ASSERT_TRUE(got);
  EXPECT_EQ(got.index, 5000);
  EXPECT_EQ(got.index, want.index);
  EXPECT_EQ(got.task, want.task);
  EXPECT_EQ(got.value, want.value);
}

// One MetaStep per "rank", each on its own backend sized for its share, exact sums combined as
// the allreduce combines them.
MetaStepSums<float> split_step(const std::vector<std::vector<int64_t>>& parts,
                               CudaBackendOptions::Conv conv) {
  const Conv4Spec spec{{1, 28, 28}, 16, 5, Conv4Pool::kMax};
  auto net = make_conv4<float>(spec);
  std::vector<float> theta(net->layout().total());
  net->init(theta.data(), 2);
  InnerLoop inner;
  inner.steps = 2;
  inner.lr = 0.4;
  std::vector<int64_t> packed;
  MetaStepSums<float> sums;
  for (const auto& part : parts) {
    CudaBackendOptions o;
    o.max_tasks = static_cast<int>(part.size());
    o.max_examples = 5 * spec.ways;
    o.conv = conv;
    auto model = make_net_cuda(*net, o);
    MetaStep<float> ms(*model, inner, {Algo::kUfom, 13, 2});
    sums.reset_exact(net->layout().total(), 6);
    ms.run(
        theta.data(), 4, part,
        [&](int64_t t, Episode<float>& e) {
          e = testing::noise_episode<float>(spec.input, spec.ways, 1, 5, 70 + t);
        },
        0.5, sums);
    const std::vector<int64_t> b = sums.pack_exact(true);
    if (packed.empty()) packed.assign(b.size(), 0);
    for (size_t i = 0; i < b.size(); ++i) packed[i] += b[i];
  }
  sums.unpack_exact(packed, true);
  return sums;
}

TEST(ExactSumCudaMetaStep, SplitMetaBatchGivesTheBitsOfTheWhole) {
  if (gpu_count() == 0) GTEST_SKIP() << "no GPU: " << describe_devices();
  for (auto conv : {CudaBackendOptions::Conv::kGemm, CudaBackendOptions::Conv::kCudnn}) {
    const MetaStepSums<float> one = split_step({{0, 1, 2, 3, 4, 5}}, conv);
    const MetaStepSums<float> three = split_step({{0, 3}, {1, 4, 5}, {2}}, conv);
    const char* form = conv == CudaBackendOptions::Conv::kGemm ? "gemm" : "cudnn";
    EXPECT_EQ(three.grad, one.grad) << form;
    EXPECT_EQ(three.fo_gap, one.fo_gap) << form;
    EXPECT_EQ(three.loss, one.loss) << form;
    EXPECT_EQ(three.v2, one.v2) << form;
    EXPECT_EQ(three.d2, one.d2) << form;
  }
}

}  // namespace
}  // namespace mt
