// The CUDA building blocks on a GPU: every CUDA VecOps op against host_vec_ops (bit for bit,
// norms within a rounding bound and equal to the kernels' host twin), the device memory pool,
// and GraphRunner replays against eager runs. Skips with the reason when no GPU is usable.
#include "core/vec_ops_cuda.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "core/cuda_check.h"
#include "core/cuda_graph.h"
#include "core/device.h"
#include "core/device_pool.h"
#include "core/rng.h"
#include "core/vec_ops_kernels.h"
#include "tests/support/bits.h"

namespace mt {
namespace {

constexpr size_t kPoolBytes = size_t{256} << 20;

template <typename T>
std::vector<T> random_vector(size_t n, uint64_t seed) {
  Rng rng(seed, 0, 0, Stream::kTest);
  std::vector<T> v(n);
  for (T& x : v) x = static_cast<T>(rng.uniform(-2, 2));
  return v;
}

using testing::expect_same_bits;

// A small layout (tensors of different sizes, one empty) and one large enough that every
// grid-stride loop goes round more than once (T·d > 4096 blocks · 256 threads).
ParamLayout small_params() {
  ParamLayout p;
  p.add("conv.weight", {4, 3, 3, 3});
  p.add("bn.gamma", {4});
  p.add("unused", {0});
  p.add("head.weight", {5, 7});
  p.add("head.bias", {5});
  return p;
}
ParamLayout large_params() {
  ParamLayout p;
  p.add("conv.weight", {128, 128, 3, 3});
  p.add("conv2.weight", {128, 64, 3, 3});
  p.add("bn.beta", {128});
  p.add("head.weight", {5, 3200});
  p.add("head.bias", {5});  // d = 237 317: 5 tasks are 1 186 585 elements
  return p;
}

template <typename T>
std::unique_ptr<VecOps<T>> cuda_ops(cudaStream_t stream, DevicePool* pool);
template <>
std::unique_ptr<VecOps<float>> cuda_ops<float>(cudaStream_t stream, DevicePool* pool) {
  return make_cuda_vec_ops(stream, pool);
}
template <>
std::unique_ptr<VecOps<double>> cuda_ops<double>(cudaStream_t stream, DevicePool* pool) {
  return make_cuda_vec_ops_double(stream, pool);
}

template <typename T>
class CudaVecOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (gpu_count() == 0) GTEST_SKIP() << "no GPU: " << describe_devices();
    select_gpu(0);
    MT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    pool_ = std::make_unique<DevicePool>(kPoolBytes);
    dev_ = cuda_ops<T>(stream_, pool_.get());
  }
  void TearDown() override {
    dev_.reset();
    pool_.reset();
    if (stream_) MT_CUDA_CHECK(cudaStreamDestroy(stream_));
  }
  Buffer<T> to_device(const std::vector<T>& v) {
    Buffer<T> b = dev_->alloc(static_cast<int64_t>(v.size()));
    dev_->upload(b.size(), v.data(), b.data());
    return b;
  }
  std::vector<T> to_host(const Buffer<T>& b) {
    std::vector<T> v(static_cast<size_t>(b.size()), std::numeric_limits<T>::quiet_NaN());
    dev_->download(b.size(), b.data(), v.data());
    return v;
  }

  const VecOps<T>& host_ = host_vec_ops<T>();
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<DevicePool> pool_;
  std::unique_ptr<VecOps<T>> dev_;
};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(CudaVecOpsTest, Scalars);

TYPED_TEST(CudaVecOpsTest, ElementWiseOpsEqualHostBitForBit) {
  using T = TypeParam;
  for (const ParamLayout& params : {small_params(), large_params()}) {
    const int64_t n = BatchedLayout(params, 5).total();
    const std::vector<T> x = random_vector<T>(n, 1), y = random_vector<T>(n, 2);
    const T a = static_cast<T>(-0.37), b = static_cast<T>(1.9), c = static_cast<T>(0.75);
    Buffer<T> dx = this->to_device(x), dy = this->to_device(y), dz = this->dev_->alloc(n);
    expect_same_bits(this->to_host(dx), x, "upload/download");

    std::vector<T> z = y;
    this->host_.axpy(n, a, x.data(), z.data());
    this->dev_->copy(n, dy.data(), dz.data());
    this->dev_->axpy(n, a, dx.data(), dz.data());
    expect_same_bits(this->to_host(dz), z, "axpy");

    this->host_.combine(n, a, x.data(), b, y.data(), z.data());
    this->dev_->combine(n, a, dx.data(), b, dy.data(), dz.data());
    expect_same_bits(this->to_host(dz), z, "combine");
    std::vector<T> w = x;
    this->host_.combine(n, a, w.data(), b, y.data(), w.data());
    Buffer<T> dw = this->to_device(x);
    this->dev_->combine(n, a, dw.data(), b, dy.data(), dw.data());
    expect_same_bits(this->to_host(dw), w, "combine in place");

    this->host_.sub(n, x.data(), y.data(), z.data());
    this->dev_->sub(n, dx.data(), dy.data(), dz.data());
    expect_same_bits(this->to_host(dz), z, "sub");

    w = x;
    w[3] = std::numeric_limits<T>::quiet_NaN();  // clamp passes it through unchanged
    w[4] = c;
    Buffer<T> dc = this->to_device(w);
    this->host_.clamp(n, c, w.data());
    this->dev_->clamp(n, c, dc.data());
    expect_same_bits(this->to_host(dc), w, "clamp");

    this->host_.fill(n, b, z.data());
    this->dev_->fill(n, b, dz.data());
    expect_same_bits(this->to_host(dz), z, "fill");

    this->host_.mul(n, x.data(), y.data(), z.data());
    this->dev_->mul(n, dx.data(), dy.data(), dz.data());
    expect_same_bits(this->to_host(dz), z, "mul");
    z = y;
    this->host_.mul_add(n, a, x.data(), y.data(), z.data());
    this->dev_->copy(n, dy.data(), dz.data());
    this->dev_->mul_add(n, a, dx.data(), dy.data(), dz.data());
    expect_same_bits(this->to_host(dz), z, "mul_add");
  }
}

// task_axpy bit for bit with the host; task_dots equal to the twin's decomposition exactly.
TYPED_TEST(CudaVecOpsTest, PerTaskAxpyAndDotsEqualHostAndTwin) {
  using T = TypeParam;
  for (const ParamLayout& params : {small_params(), large_params()}) {
    const BatchedLayout l(params, 5);
    const LayoutArgs args = make_layout_args(l);
    const std::vector<T> x = random_vector<T>(l.total(), 9), y = random_vector<T>(l.total(), 10);
    Buffer<T> dx = this->to_device(x), dy = this->to_device(y);
    const double a[5] = {0.5, -1.25, 2.0, 0.0, -0.3};
    std::vector<T> z = y;
    this->host_.task_axpy(l, a, x.data(), z.data());
    this->dev_->task_axpy(l, a, dx.data(), dy.data());
    expect_same_bits(this->to_host(dy), z, "task_axpy");
    std::vector<double> dots(5);
    this->dev_->task_dots(l, dx.data(), dx.data(), dots.data());
    for (int t = 0; t < 5; ++t)
      EXPECT_EQ(dots[t], host_task_sum<T>(args, x.data(), x.data(), TaskSum::kDots, t))
          << "task " << t;
  }
}

TYPED_TEST(CudaVecOpsTest, BatchedOpsEqualHostBitForBit) {
  using T = TypeParam;
  for (const ParamLayout& params : {small_params(), large_params()}) {
    const BatchedLayout l(params, 5);
    const int64_t d = l.dim(), n = l.total();
    const std::vector<T> theta = random_vector<T>(d, 3);
    std::vector<T> x = random_vector<T>(n, 4);
    const T big = 4 / std::numeric_limits<T>::epsilon();  // task order decides element 0
    x[l.index(0, 0)] = big;
    x[l.index(1, 0)] = -big;
    x[l.index(2, 0)] = 1;
    Buffer<T> dtheta = this->to_device(theta), dx = this->to_device(x), dy = this->dev_->alloc(n);

    std::vector<T> y(n);
    this->host_.broadcast(l, theta.data(), y.data());
    this->dev_->broadcast(l, dtheta.data(), dy.data());
    expect_same_bits(this->to_host(dy), y, "broadcast");

    std::vector<T> s = random_vector<T>(d, 5);
    s[0] = 0;
    Buffer<T> ds = this->to_device(s);
    this->host_.sum_tasks(l, x.data(), s.data());
    this->dev_->sum_tasks(l, dx.data(), ds.data());
    EXPECT_EQ(s[0], static_cast<T>(1));
    expect_same_bits(this->to_host(ds), s, "sum_tasks");

    for (const std::vector<int>& tasks :
         {std::vector<int>{2, 0}, std::vector<int>{4, 1, 3, 0, 2}, std::vector<int>{3, 3}}) {
      const BatchedLayout sub = l.with_tasks(static_cast<int>(tasks.size()));
      std::vector<T> g(sub.total());
      Buffer<T> dg = this->dev_->alloc(sub.total());
      this->host_.gather(l, x.data(), tasks, g.data());
      this->dev_->gather(l, dx.data(), tasks, dg.data());
      expect_same_bits(this->to_host(dg), g, "gather");
      if (tasks[0] == tasks[1]) continue;  // scatter refuses repeats (below)
      std::vector<T> back = random_vector<T>(n, 6);
      Buffer<T> dback = this->to_device(back);
      this->host_.scatter(l, g.data(), tasks, back.data());
      this->dev_->scatter(l, dg.data(), tasks, dback.data());
      expect_same_bits(this->to_host(dback), back, "scatter");
    }
    EXPECT_THROW(this->dev_->scatter(l, dx.data(), {1, 1}, dy.data()), Error);
    EXPECT_THROW(this->dev_->gather(l, dx.data(), {5}, dy.data()), Error);
  }
}

TYPED_TEST(CudaVecOpsTest, TaskNormsEqualTheTwinAndHostWithinBound) {
  using T = TypeParam;
  for (const ParamLayout& params : {small_params(), large_params()}) {
    const BatchedLayout l(params, 5);
    const LayoutArgs args = make_layout_args(l);
    const std::vector<T> x = random_vector<T>(l.total(), 7), y = random_vector<T>(l.total(), 8);
    Buffer<T> dx = this->to_device(x), dy = this->to_device(y);
    std::vector<double> hn(5), hd(5), dn(5), dd(5), dn2(5);
    this->host_.task_sq_norms(l, x.data(), hn.data());
    this->host_.task_sq_dists(l, x.data(), y.data(), hd.data());
    this->dev_->task_sq_norms(l, dx.data(), dn.data());
    this->dev_->task_sq_dists(l, dx.data(), dy.data(), dd.data());
    this->dev_->task_sq_norms(l, dx.data(), dn2.data());
    expect_same_bits(dn2, dn, "task_sq_norms run to run");
    // d non-negative double terms added in two orders: each within (d + 8)·2⁻⁵³ relative of
    // the exact sum (vec_ops_test states the same bound for the host twin).
    const double bound = 2.0 * (static_cast<double>(l.dim()) + 8) * std::ldexp(1.0, -53);
    for (int t = 0; t < 5; ++t) {
      EXPECT_NEAR(dn[t], hn[t], bound * hn[t]) << "task " << t;
      EXPECT_NEAR(dd[t], hd[t], bound * hd[t]) << "task " << t;
      EXPECT_EQ(dn[t], host_task_sum<T>(args, x.data(), nullptr, TaskSum::kSquares, t))
          << "task " << t;
      EXPECT_EQ(dd[t], host_task_sum<T>(args, x.data(), y.data(), TaskSum::kSquaredDistances, t))
          << "task " << t;
    }
  }
}

TYPED_TEST(CudaVecOpsTest, AllocWithoutPoolOwnsItsMemory) {
  using T = TypeParam;
  std::unique_ptr<VecOps<T>> own = cuda_ops<T>(this->stream_, nullptr);
  EXPECT_EQ(own->memory(), Memory::kDevice);
  const std::vector<T> v = random_vector<T>(1000, 9);
  const size_t used = this->pool_->used();
  Buffer<T> b = own->alloc(1000);
  EXPECT_EQ(this->pool_->used(), used);
  own->upload(1000, v.data(), b.data());
  std::vector<T> back(1000);
  own->download(1000, b.data(), back.data());
  expect_same_bits(back, v, "own allocation");
}

class CudaRuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (gpu_count() == 0) GTEST_SKIP() << "no GPU: " << describe_devices();
    select_gpu(0);
  }
};

std::string runtime_message(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ExitCode::kRuntime);
    return e.what();
  }
  ADD_FAILURE() << "no mt::Error thrown";
  return "";
}

TEST_F(CudaRuntimeTest, DevicePoolHandsOutAlignedSlicesOfOneAllocation) {
  DevicePool pool(size_t{1} << 20);
  EXPECT_EQ(pool.capacity(), size_t{1} << 20);
  char* a = static_cast<char*>(pool.allocate(100));
  char* b = static_cast<char*>(pool.allocate(1));
  float* c = pool.allocate_array<float>(1000);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % 256, 0u);
  EXPECT_EQ(b - a, 256);
  EXPECT_EQ(reinterpret_cast<char*>(c) - a, 512);
  EXPECT_EQ(pool.used(), 512u + 4000u);
  MT_CUDA_CHECK(cudaMemset(a, 0x5a, pool.capacity()));  // the whole pool is device memory
  MT_CUDA_CHECK(cudaDeviceSynchronize());

  const std::string m = runtime_message([&] { pool.allocate(pool.capacity()); });
  EXPECT_NE(m.find(std::to_string(pool.capacity()) + " bytes"), std::string::npos) << m;
  EXPECT_NE(m.find("bytes free of"), std::string::npos) << m;
  EXPECT_NE(m.find("lower meta_batch per rank (or inner.trajectory=recompute)"), std::string::npos)
      << m;
  EXPECT_EQ(pool.used(), 4512u) << "a failed request changes nothing";
  pool.reset();
  EXPECT_EQ(pool.used(), 0u);
  EXPECT_EQ(pool.peak(), 4512u);
  EXPECT_EQ(pool.allocate(pool.capacity()), a);
}

TEST_F(CudaRuntimeTest, DevicePoolTooLargeForTheGpuSaysSo) {
  size_t device_free = 0, device_total = 0;
  MT_CUDA_CHECK(cudaMemGetInfo(&device_free, &device_total));
  const size_t asked = device_total * 2;
  const std::string m = runtime_message([&] { DevicePool pool(asked); });
  EXPECT_NE(m.find("start-up allocation of " + std::to_string(asked) + " bytes"), std::string::npos)
      << m;
  EXPECT_NE(m.find(std::to_string(device_total)), std::string::npos) << m;
  EXPECT_NE(m.find("lower meta_batch per rank"), std::string::npos) << m;
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "the failed cudaMalloc must not linger";
  DevicePool fits(1 << 20);
  EXPECT_NE(fits.allocate(1), nullptr);
}

// One "inner step" of VecOps calls, updating θ, x and g in place (so replays differ).
template <typename Ops>
void step(const Ops& ops, const BatchedLayout& l, float* theta, float* x, float* g) {
  const int64_t n = l.total();
  ops.broadcast(l, theta, x);
  ops.axpy(n, -0.1f, g, x);
  ops.clamp(n, 1.5f, x);
  ops.combine(n, 0.9f, g, 0.1f, x, g);
  ops.sum_tasks(l, x, theta);
  ops.copy(n, x, g);
  ops.axpy(n, 0.5f, g, x);
}

TEST_F(CudaRuntimeTest, GraphReplaysEqualEagerRunsBitForBit) {
  cudaStream_t stream = nullptr;
  MT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  {
    DevicePool pool(size_t{64} << 20);
    std::unique_ptr<VecOps<float>> ops = make_cuda_vec_ops(stream, &pool);
    const ParamLayout params = large_params();
    const BatchedLayout l(params, 4);
    const std::vector<float> theta0 = random_vector<float>(l.dim(), 10);
    const std::vector<float> g0 = random_vector<float>(l.total(), 11);
    struct State {
      Buffer<float> theta, x, g;
    };
    auto make_state = [&] {
      State s{ops->alloc(l.dim()), ops->alloc(l.total()), ops->alloc(l.total())};
      ops->upload(l.dim(), theta0.data(), s.theta.data());
      ops->upload(l.total(), g0.data(), s.g.data());
      return s;
    };
    State eager = make_state(), graphed = make_state();
    std::vector<float> h_theta = theta0, h_x(l.total()), h_g = g0;

    constexpr int kReplays = 5;
    GraphRunner runner(stream, true);
    int captures = 0;
    std::vector<float> theta_after_first;
    for (int i = 0; i < kReplays; ++i) {
      step(*ops, l, eager.theta.data(), eager.x.data(), eager.g.data());
      step(host_vec_ops<float>(), l, h_theta.data(), h_x.data(), h_g.data());
      runner.run(
          &graphed,
          [&] {
            ++captures;
            step(*ops, l, graphed.theta.data(), graphed.x.data(), graphed.g.data());
          },
          "test inner step");
      if (i == 0) {
        theta_after_first.resize(l.dim());
        ops->download(l.dim(), graphed.theta.data(), theta_after_first.data());
      }
    }
    EXPECT_EQ(captures, 1) << "later runs must replay, not capture again";
    EXPECT_EQ(runner.graphs(), 1);
    auto host_of = [&](const Buffer<float>& b) {
      std::vector<float> v(static_cast<size_t>(b.size()));
      ops->download(b.size(), b.data(), v.data());
      return v;
    };
    const std::vector<float> theta_graph = host_of(graphed.theta);
    expect_same_bits(theta_graph, host_of(eager.theta), "theta, graph vs eager");
    expect_same_bits(host_of(graphed.x), host_of(eager.x), "x, graph vs eager");
    expect_same_bits(host_of(graphed.g), host_of(eager.g), "g, graph vs eager");
    expect_same_bits(theta_graph, h_theta, "theta, graph vs host");
    EXPECT_NE(std::memcmp(theta_graph.data(), theta_after_first.data(), l.dim() * sizeof(float)), 0)
        << "the replays must have run";

    // A pass that synchronises cannot be captured: the error names it, the stream recovers.
    std::vector<float> sink(l.dim());
    const int bad_key = 0;
    const std::string m = runtime_message([&] {
      runner.run(
          &bad_key, [&] { ops->download(l.dim(), graphed.theta.data(), sink.data()); },
          "download pass");
    });
    EXPECT_NE(m.find("CUDA graph capture of pass 'download pass'"), std::string::npos) << m;
    EXPECT_EQ(runner.graphs(), 1);
    cudaStreamCaptureStatus status;
    MT_CUDA_CHECK(cudaStreamIsCapturing(stream, &status));
    EXPECT_EQ(status, cudaStreamCaptureStatusNone);
    ops->fill(l.dim(), 2.0f, graphed.theta.data());
    EXPECT_EQ(host_of(graphed.theta), std::vector<float>(l.dim(), 2.0f));

    GraphRunner eager_runner(stream, false);
    int calls = 0;
    for (int i = 0; i < 3; ++i) eager_runner.run(&graphed, [&] { ++calls; });
    EXPECT_EQ(calls, 3);
  }
  MT_CUDA_CHECK(cudaStreamDestroy(stream));
}

}  // namespace
}  // namespace mt
