// The CUDA backend (models/net_cuda.h) against the CPU backend on the same episodes and θ:
// every pass of both Conv-4 variants and of a small ResNet-12 (residual sums, fan-out, 1×1
// convs, LeakyReLU), whole meta-steps (FOMAML, MAML r = 5 in each trajectory mode, UFOM q = 0.3;
// ResNet-12 MAML r = 2), a batch against its tasks one at a time, graphs against eager launches,
// the same step twice, every task's bits independent of its batch-mates on one backend built
// once (no device memory taken after construction), and a capture that fails degrading to eager.
// Needs a GPU: skips with the reason otherwise (label gpu).
#include "models/net_cuda.h"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <utility>

#include "core/batched_model_cpu.h"
#include "core/cuda_graph.h"
#include "core/device.h"
#include "core/meta_step.h"
#include "models/conv4.h"
#include "models/resnet12.h"
#include "tests/support/episodes.h"

namespace mt {
namespace {

#define MT_NEED_GPU() \
  if (gpu_count() == 0) GTEST_SKIP() << "no GPU: " << describe_devices()

// float32 on both sides. Passes: the GPU sums in other orders (GEMM tiling, cuDNN algorithms,
// per-task reductions), so entries agree to a few hundred ulp of the largest entry: 2e-4
// relative to the largest entry. Meta-steps chain r + k of them: 2e-3.
constexpr double kPassTol = 2e-4, kStepTol = 2e-3;

double rel_max_err(const std::vector<float>& got, const std::vector<float>& want) {
  double scale = 0, worst = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    scale = std::max(scale, std::abs(static_cast<double>(want[i])));
    worst = std::max(worst, std::abs(static_cast<double>(got[i]) - want[i]));
  }
  return scale > 0 ? worst / scale : INFINITY;
}

// A net (Conv-4 or ResNet-12), θ and `tasks` episodes of 1 support and 5 query examples a class.
struct Fixture {
  std::unique_ptr<Sequential<float>> net;
  int ways;
  std::vector<Episode<float>> eps;
  std::vector<float> theta;
  Fixture(const Conv4Spec& s, int tasks) : Fixture(make_conv4<float>(s), s.ways, tasks) {}
  Fixture(const ResNet12Spec& s, int tasks) : Fixture(make_resnet12<float>(s), s.ways, tasks) {}
  Fixture(std::unique_ptr<Sequential<float>> n, int w, int tasks) : net(std::move(n)), ways(w) {
    for (int t = 0; t < tasks; ++t)
      eps.push_back(testing::noise_episode<float>(net->input_shape(), ways, 1, 5, 70 + t));
    theta.resize(net->layout().total());
    net->init(theta.data(), 2);
  }
  std::unique_ptr<BatchedModel<float>> cuda(
      int tasks, bool graphs = true,
      CudaBackendOptions::Conv conv = CudaBackendOptions::Conv::kAuto) const {
    CudaBackendOptions o;
    o.max_tasks = tasks;
    o.max_examples = 5 * ways;
    o.graphs = graphs;
    o.conv = conv;
    return make_net_cuda(*net, o);
  }
};

const Conv4Spec kOmniglot{{1, 28, 28}, 32, 5, Conv4Pool::kMax};
const Conv4Spec kStride{{1, 28, 28}, 16, 5, Conv4Pool::kStride};
// The smallest input four 2×2 pools take, small widths: every block kind at a few seconds' cost.
const ResNet12Spec kResNet{{3, 16, 16}, {8, 12, 16, 20}, 5, Activation::kLeakyRelu};

// Batched buffers on the host ⇄ the backend.
std::vector<float> to_host(const BatchedModel<float>& m, const Buffer<float>& b) {
  std::vector<float> h(b.size());
  m.ops().download(b.size(), b.data(), h.data());
  return h;
}

template <typename Spec>
void expect_passes_match(const Spec& spec) {
  const int T = 3;
  Fixture s(spec, T);
  auto gpu = s.cuda(T);
  CpuBatchedModel<float> cpu(*s.net, 2, T);
  const BatchedLayout l(s.net->layout(), T);
  std::vector<float> phi(l.total()), v(l.total());
  host_vec_ops<float>().broadcast(l, s.theta.data(), phi.data());
  Rng rng(5, 0, 0, Stream::kInit);
  for (auto& x : phi) x += static_cast<float>(0.05 * rng.uniform(-1, 1));
  for (auto& x : v) x = static_cast<float>(rng.uniform(-1, 1));
  Buffer<float> d_phi = gpu->ops().alloc(l.total()), d_v = gpu->ops().alloc(l.total()),
                d_out = gpu->ops().alloc(l.total());
  gpu->ops().upload(l.total(), phi.data(), d_phi.data());
  gpu->ops().upload(l.total(), v.data(), d_v.data());
  std::vector<const Episode<float>*> ptrs;
  for (const auto& e : s.eps) ptrs.push_back(&e);
  auto bg = gpu->make_batch(), bc = cpu.make_batch();
  gpu->load(ptrs, *bg);
  cpu.load(ptrs, *bc);
  for (Split split : {Split::kSupport, Split::kQuery}) {
    std::vector<float> want(l.total());
    std::vector<LossStats> sg(T), sc(T);
    cpu.loss_grad(*bc, split, phi.data(), want.data(), sc.data());
    gpu->loss_grad(*bg, split, d_phi.data(), d_out.data(), sg.data());
    EXPECT_LT(rel_max_err(to_host(*gpu, d_out), want), kPassTol) << "gradient";
    for (int t = 0; t < T; ++t) EXPECT_NEAR(sg[t].loss, sc[t].loss, 1e-4 * sc[t].loss);
    cpu.hvp(*bc, split, phi.data(), v.data(), want.data(), nullptr);
    gpu->hvp(*bg, split, d_phi.data(), d_v.data(), d_out.data(), nullptr);
    EXPECT_LT(rel_max_err(to_host(*gpu, d_out), want), kPassTol) << "Hv";
  }
}

TEST(NetCuda, PassesMatchTheCpuMaxPool) {
  MT_NEED_GPU();
  expect_passes_match(kOmniglot);
}
TEST(NetCuda, PassesMatchTheCpuStride) {
  MT_NEED_GPU();
  expect_passes_match(kStride);
}
TEST(NetCuda, PassesMatchTheCpuResNet12) {
  MT_NEED_GPU();
  expect_passes_match(kResNet);
}

MetaStepSums<float> step(BatchedModel<float>& m, const Fixture& s, const InnerLoop& inner,
                         Algo algo, double q, const std::vector<int64_t>& tasks) {
  MetaStep<float> ms(m, inner, {algo, 13, 2});
  MetaStepSums<float> sums;
  sums.reset(s.theta.size());
  ms.run(
      s.theta.data(), 4, tasks, [&](int64_t t, Episode<float>& e) { e = s.eps[t]; }, q, sums);
  return sums;
}

template <typename Spec>
void expect_step_matches(const Spec& spec, Algo algo, double q, TrajectoryMode mode, int r) {
  const int T = 4;
  Fixture s(spec, T);
  InnerLoop inner;
  inner.steps = r;
  inner.lr = 0.4;
  inner.trajectory = mode;
  const std::vector<int64_t> tasks = {0, 1, 2, 3};
  auto gpu = s.cuda(T);
  CpuBatchedModel<float> cpu(*s.net, 2, T);
  const MetaStepSums<float> a = step(cpu, s, inner, algo, q, tasks);
  const MetaStepSums<float> b = step(*gpu, s, inner, algo, q, tasks);
  EXPECT_LT(rel_max_err(b.grad, a.grad), kStepTol);
  EXPECT_EQ(a.exact_tasks, b.exact_tasks);
  EXPECT_NEAR(b.loss, a.loss, 1e-3 * std::abs(a.loss));
  // The same step again on the GPU: the same bits (deterministic algorithms, graph replay).
  const MetaStepSums<float> c = step(*gpu, s, inner, algo, q, tasks);
  EXPECT_EQ(b.grad, c.grad);
}

TEST(NetCuda, FomamlStepMatchesTheCpu) {
  MT_NEED_GPU();
  expect_step_matches(kOmniglot, Algo::kFomaml, 0, {TrajectoryMode::kStore, 1}, 5);
}
TEST(NetCuda, MamlStepMatchesTheCpuInEveryTrajectoryMode) {
  MT_NEED_GPU();
  for (TrajectoryMode m :
       {TrajectoryMode{TrajectoryMode::kStore, 1}, TrajectoryMode{TrajectoryMode::kRecompute, 1},
        TrajectoryMode{TrajectoryMode::kCheckpoint, 2}})
    expect_step_matches(kOmniglot, Algo::kMaml, 1, m, 5);
}
TEST(NetCuda, UfomStepMatchesTheCpu) {
  MT_NEED_GPU();
  expect_step_matches(kOmniglot, Algo::kUfom, 0.3, {TrajectoryMode::kStore, 1}, 5);
}
TEST(NetCuda, MamlStepMatchesTheCpuResNet12) {
  MT_NEED_GPU();
  expect_step_matches(kResNet, Algo::kMaml, 1, {TrajectoryMode::kRecompute, 1}, 2);
}

// With a fixed convolution form, graphs and eager launches give the same bits; a batch of 4
// tasks agrees with 4 batches of one; the two forms agree to float32 tolerance.
TEST(NetCuda, GraphsEqualEagerAndBatchedEqualsOneByOne) {
  MT_NEED_GPU();
  const int T = 4;
  Fixture s(kOmniglot, T);
  InnerLoop inner;
  inner.steps = 3;
  inner.lr = 0.4;
  const std::vector<int64_t> tasks = {0, 1, 2, 3};
  std::vector<float> by_form[2];
  for (auto conv : {CudaBackendOptions::Conv::kCudnn, CudaBackendOptions::Conv::kGemm}) {
    auto graphs = s.cuda(T, true, conv), eager = s.cuda(T, false, conv),
         one = s.cuda(1, true, conv);
    const MetaStepSums<float> g = step(*graphs, s, inner, Algo::kMaml, 1, tasks);
    const MetaStepSums<float> g2 = step(*graphs, s, inner, Algo::kMaml, 1, tasks);  // replays
    const MetaStepSums<float> e = step(*eager, s, inner, Algo::kMaml, 1, tasks);
    EXPECT_EQ(g.grad, g2.grad);
    EXPECT_EQ(g.grad, e.grad);
    const MetaStepSums<float> o = step(*one, s, inner, Algo::kMaml, 1, tasks);  // chunks of 1
    EXPECT_LT(rel_max_err(o.grad, g.grad), kStepTol);
    by_form[conv == CudaBackendOptions::Conv::kGemm] = g.grad;
  }
  EXPECT_LT(rel_max_err(by_form[1], by_form[0]), kStepTol);
}

size_t device_free() {
  size_t free_bytes = 0, total = 0;
  if (cudaMemGetInfo(&free_bytes, &total) != cudaSuccess) return 0;
  return free_bytes;
}

// One backend built for 4 tasks (GEMM form, eager so that no graph memory is counted): every
// task's loss, gradient and Hv are the same bits alone, among the first T = 1 … 4, and in a
// reordered batch; and calls of any T take no device memory after construction.
TEST(NetCuda, EveryTaskHasTheSameBitsInEveryBatchAndNoCallAllocates) {
  MT_NEED_GPU();
  const int T = 4;
  Fixture s(kOmniglot, T);
  auto gpu = s.cuda(T, false, CudaBackendOptions::Conv::kGemm);
  const ParamLayout& layout = s.net->layout();
  const BatchedLayout full(layout, T);
  std::vector<float> phi(full.total()), v(full.total());
  host_vec_ops<float>().broadcast(full, s.theta.data(), phi.data());
  Rng rng(6, 0, 0, Stream::kInit);
  for (auto& x : phi) x += static_cast<float>(0.05 * rng.uniform(-1, 1));
  for (auto& x : v) x = static_cast<float>(rng.uniform(-1, 1));
  auto batch = gpu->make_batch();
  Buffer<float> d_phi = gpu->ops().alloc(full.total()), d_v = gpu->ops().alloc(full.total()),
                d_g = gpu->ops().alloc(full.total()), d_h = gpu->ops().alloc(full.total());
  // Per split: gradient and Hv (host, the call's batched layout) and the losses.
  auto run = [&](const std::vector<int>& pick, std::vector<float> out[4],
                 std::vector<LossStats> stats[2]) {
    const BatchedLayout mine(layout, static_cast<int>(pick.size()));
    std::vector<float> p(mine.total()), w(mine.total());
    std::vector<const Episode<float>*> eps;
    for (size_t k = 0; k < pick.size(); ++k) {
      eps.push_back(&s.eps[pick[k]]);
      for (int64_t j = 0; j < layout.total(); ++j) {
        p[mine.index(static_cast<int>(k), j)] = phi[full.index(pick[k], j)];
        w[mine.index(static_cast<int>(k), j)] = v[full.index(pick[k], j)];
      }
    }
    gpu->load(eps, *batch);
    gpu->ops().upload(mine.total(), p.data(), d_phi.data());
    gpu->ops().upload(mine.total(), w.data(), d_v.data());
    for (int k = 0; k < 2; ++k) {
      const Split split = k == 0 ? Split::kSupport : Split::kQuery;
      stats[k].resize(pick.size());
      gpu->loss_grad(*batch, split, d_phi.data(), d_g.data(), stats[k].data());
      gpu->hvp(*batch, split, d_phi.data(), d_v.data(), d_h.data(), nullptr);
      out[2 * k].resize(mine.total());
      out[2 * k + 1].resize(mine.total());
      gpu->ops().download(mine.total(), d_g.data(), out[2 * k].data());
      gpu->ops().download(mine.total(), d_h.data(), out[2 * k + 1].data());
    }
  };
  std::vector<float> whole[4];
  std::vector<LossStats> whole_stats[2];
  run({0, 1, 2, 3}, whole, whole_stats);
  const size_t free_before = device_free();  // after the first call: kernels load lazily
  std::vector<std::vector<int>> picks = {{0}, {1}, {2}, {3}, {0, 1}, {0, 1, 2}, {3, 1}};
  for (const auto& pick : picks) {
    std::vector<float> part[4];
    std::vector<LossStats> part_stats[2];
    run(pick, part, part_stats);
    const BatchedLayout mine(layout, static_cast<int>(pick.size()));
    for (size_t k = 0; k < pick.size(); ++k) {
      for (int r = 0; r < 4; ++r) {
        int64_t differ = 0;
        for (int64_t j = 0; j < layout.total(); ++j) {
          const float a = part[r][mine.index(static_cast<int>(k), j)];
          const float b = whole[r][full.index(pick[k], j)];
          differ += std::memcmp(&a, &b, sizeof a) != 0;
        }
        EXPECT_EQ(differ, 0) << (r % 2 ? "Hv" : "gradient") << (r < 2 ? " support" : " query")
                             << ": task " << pick[k] << " in a batch of " << pick.size();
      }
      for (int sp = 0; sp < 2; ++sp)
        EXPECT_EQ(part_stats[sp][k].loss, whole_stats[sp][pick[k]].loss) << "task " << pick[k];
    }
  }
  EXPECT_EQ(device_free(), free_before) << "calls of 1 to 4 tasks took device memory";
}

// A capture that fails (a synchronising call inside it) prints a warning and runs eagerly,
// then and on every later call: the work is done, nothing is thrown.
TEST(GraphRunner, AFailedCaptureRunsThePassEagerlyFromThenOn) {
  MT_NEED_GPU();
  select_gpu(0);
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  int* d = nullptr;
  ASSERT_EQ(cudaMalloc(&d, sizeof(int)), cudaSuccess);
  {
    GraphRunner graphs(stream, true);
    const char key = 0;
    int calls = 0;
    for (int i = 1; i <= 3; ++i) {
      EXPECT_NO_THROW(graphs.run(
          &key,
          [&] {
            ++calls;
            const int value = i;
            // Synchronous copy from pageable memory: illegal while capturing.
            const cudaError_t e = cudaMemcpy(d, &value, sizeof value, cudaMemcpyHostToDevice);
            if (e != cudaSuccess) throw Error(ExitCode::kRuntime, cudaGetErrorString(e));
          },
          "test pass"));
      int back = 0;
      ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
      ASSERT_EQ(cudaMemcpy(&back, d, sizeof back, cudaMemcpyDeviceToHost), cudaSuccess);
      EXPECT_EQ(back, i) << "call " << i << " did not run";
    }
    EXPECT_EQ(graphs.graphs(), 0);
    EXPECT_EQ(graphs.eager_passes(), 1);
    EXPECT_EQ(calls, 4);  // the failed capture, then three eager runs
  }
  cudaFree(d);
  cudaStreamDestroy(stream);
}

TEST(NetCuda, TooLargeABatchIsAnErrorWithTheBytesAndAHint) {
  MT_NEED_GPU();
  CudaBackendOptions o;
  o.max_tasks = 1 << 16;
  o.max_examples = 1 << 10;
  const auto net = make_conv4<float>(kOmniglot);
  try {
    make_net_cuda(*net, o);
    ADD_FAILURE() << "a pool of petabytes was granted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ExitCode::kRuntime);
    EXPECT_NE(std::string(e.what()).find("bytes"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("meta_batch"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace mt
