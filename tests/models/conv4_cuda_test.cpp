// The CUDA backend (models/conv4_cuda.h) against the CPU backend on the same episodes and θ:
// every pass of both Conv-4 variants, whole meta-steps (FOMAML, MAML r = 5 in each trajectory
// mode, UFOM q = 0.3), a batch against its tasks one at a time, graphs against eager launches,
// and the same step twice. Needs a GPU: skips with the reason otherwise (label gpu).
#include "models/conv4_cuda.h"

#include <gtest/gtest.h>

#include <cmath>

#include "core/batched_model_cpu.h"
#include "core/device.h"
#include "core/meta_step.h"
#include "models/conv4.h"
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

struct Fixture {
  Conv4Spec spec;
  std::unique_ptr<Sequential<float>> net;
  std::vector<Episode<float>> eps;
  std::vector<float> theta;
  Fixture(Conv4Spec s, int tasks) : spec(s), net(make_conv4<float>(s)) {
    for (int t = 0; t < tasks; ++t)
      eps.push_back(testing::noise_episode<float>(s.input, s.ways, 1, 5, 70 + t));
    theta.resize(net->layout().total());
    net->init(theta.data(), 2);
  }
  std::unique_ptr<BatchedModel<float>> cuda(
      int tasks, bool graphs = true,
      CudaBackendOptions::Conv conv = CudaBackendOptions::Conv::kAuto) const {
    CudaBackendOptions o;
    o.max_tasks = tasks;
    o.max_examples = 5 * spec.ways;
    o.graphs = graphs;
    o.conv = conv;
    return make_conv4_cuda(spec, o);
  }
};

const Conv4Spec kOmniglot{{1, 28, 28}, 32, 5, Conv4Pool::kMax};
const Conv4Spec kStride{{1, 28, 28}, 16, 5, Conv4Pool::kStride};

// Batched buffers on the host ⇄ the backend.
std::vector<float> to_host(const BatchedModel<float>& m, const Buffer<float>& b) {
  std::vector<float> h(b.size());
  m.ops().download(b.size(), b.data(), h.data());
  return h;
}

void expect_passes_match(const Conv4Spec& spec) {
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

TEST(Conv4Cuda, PassesMatchTheCpuMaxPool) {
  MT_NEED_GPU();
  expect_passes_match(kOmniglot);
}
TEST(Conv4Cuda, PassesMatchTheCpuStride) {
  MT_NEED_GPU();
  expect_passes_match(kStride);
}

MetaStepSums<float> step(BatchedModel<float>& m, const Fixture& s, const InnerLoop& inner, Algo algo,
                         double q, const std::vector<int64_t>& tasks) {
  MetaStep<float> ms(m, inner, {algo, 13, 2});
  MetaStepSums<float> sums;
  sums.reset(s.theta.size());
  ms.run(
      s.theta.data(), 4, tasks, [&](int64_t t, Episode<float>& e) { e = s.eps[t]; }, q, sums);
  return sums;
}

void expect_step_matches(Algo algo, double q, TrajectoryMode mode, int r) {
  const int T = 4;
  Fixture s(kOmniglot, T);
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

TEST(Conv4Cuda, FomamlStepMatchesTheCpu) {
  MT_NEED_GPU();
  expect_step_matches(Algo::kFomaml, 0, {TrajectoryMode::kStore, 1}, 5);
}
TEST(Conv4Cuda, MamlStepMatchesTheCpuInEveryTrajectoryMode) {
  MT_NEED_GPU();
  for (TrajectoryMode m : {TrajectoryMode{TrajectoryMode::kStore, 1},
                           TrajectoryMode{TrajectoryMode::kRecompute, 1},
                           TrajectoryMode{TrajectoryMode::kCheckpoint, 2}})
    expect_step_matches(Algo::kMaml, 1, m, 5);
}
TEST(Conv4Cuda, UfomStepMatchesTheCpu) {
  MT_NEED_GPU();
  expect_step_matches(Algo::kUfom, 0.3, {TrajectoryMode::kStore, 1}, 5);
}

// With a fixed convolution form, graphs and eager launches give the same bits; a batch of 4
// tasks agrees with 4 batches of one; the two forms agree to float32 tolerance.
TEST(Conv4Cuda, GraphsEqualEagerAndBatchedEqualsOneByOne) {
  MT_NEED_GPU();
  const int T = 4;
  Fixture s(kOmniglot, T);
  InnerLoop inner;
  inner.steps = 3;
  inner.lr = 0.4;
  const std::vector<int64_t> tasks = {0, 1, 2, 3};
  std::vector<float> by_form[2];
  for (auto conv : {CudaBackendOptions::Conv::kCudnn, CudaBackendOptions::Conv::kGemm}) {
    auto graphs = s.cuda(T, true, conv), eager = s.cuda(T, false, conv), one = s.cuda(1, true, conv);
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

TEST(Conv4Cuda, TooLargeABatchIsAnErrorWithTheBytesAndAHint) {
  MT_NEED_GPU();
  CudaBackendOptions o;
  o.max_tasks = 1 << 16;
  o.max_examples = 1 << 10;
  try {
    make_conv4_cuda(kOmniglot, o);
    ADD_FAILURE() << "a pool of petabytes was granted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ExitCode::kRuntime);
    EXPECT_NE(std::string(e.what()).find("bytes"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("meta_batch"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace mt
