// The CUDA backend's layouts and pass sequence, checked without a GPU: the host twin backend
// (models/batched_twin.h, the batched net over the host twins of the CUDA kernels) against the
// CPU backend (the per-task layers) in float64, pass by pass and for whole meta-steps, with T ≥ 3
// tasks whose episodes differ, on both Conv-4 variants.
#include "models/batched_twin.h"

#include <gtest/gtest.h>

#include <cmath>

#include "core/batched_model_cpu.h"
#include "core/meta_step.h"
#include "models/conv4.h"
#include "tests/support/episodes.h"

namespace mt {
namespace {

// float64 throughout; the two backends differ only in the order of summation inside GEMMs and
// reductions, so agreement to 1e-10 relative (to the largest entry) is expected; a wrong index
// or a missing term gives O(1) differences.
constexpr double kTol = 1e-10;

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

void expect_close(const std::vector<double>& got, const std::vector<double>& want,
                  const char* what) {
  ASSERT_EQ(got.size(), want.size());
  const double scale = std::max(1e-300, max_abs(want));
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::abs(got[i] - want[i]));
  EXPECT_LE(worst / scale, kTol) << what;
  EXPECT_GT(scale, 0) << what << " is all zeros: the comparison would be vacuous";
}

struct Fixture {
  Conv4Spec spec;
  std::unique_ptr<Sequential<double>> net;
  std::vector<Episode<double>> eps;
  std::vector<const Episode<double>*> ptrs;
  std::vector<double> theta;
  explicit Fixture(Conv4Spec s, int tasks = 4) : spec(s), net(make_conv4<double>(s)) {
    for (int t = 0; t < tasks; ++t)
      eps.push_back(testing::noise_episode<double>(s.input, s.ways, 2, 3, 50 + t));
    for (const auto& e : eps) ptrs.push_back(&e);
    theta.resize(net->layout().total());
    net->init(theta.data(), 8);
  }
};

const Conv4Spec kMax{{2, 16, 16}, 4, 3, Conv4Pool::kMax};
const Conv4Spec kStride{{1, 14, 14}, 3, 4, Conv4Pool::kStride};

// loss_grad and hvp of both backends at per-task parameters that differ (θ plus a task-specific
// offset), so a task-mixing bug in the parameter layout fails too.
void expect_passes_agree(const Conv4Spec& spec) {
  Fixture s(spec);
  const int T = static_cast<int>(s.eps.size());
  const BatchedLayout l(s.net->layout(), T);
  const VecOps<double>& ops = host_vec_ops<double>();
  std::vector<double> phi(l.total()), v(l.total());
  ops.broadcast(l, s.theta.data(), phi.data());
  Rng rng(3, 0, 0, Stream::kInit);
  for (auto& x : phi) x += 0.05 * rng.uniform(-1, 1);
  for (auto& x : v) x = rng.uniform(-1, 1);

  CpuBatchedModel<double> cpu(*s.net, 2, T);
  TwinBatchedModel<double> twin(*s.net, T, 3 * spec.ways);
  auto bc = cpu.make_batch(), bt = twin.make_batch();
  cpu.load(s.ptrs, *bc);
  twin.load(s.ptrs, *bt);
  for (Split split : {Split::kSupport, Split::kQuery}) {
    std::vector<double> gc(l.total()), gt(l.total()), hc(l.total()), ht(l.total());
    std::vector<LossStats> sc(T), st(T);
    cpu.loss_grad(*bc, split, phi.data(), gc.data(), sc.data());
    twin.loss_grad(*bt, split, phi.data(), gt.data(), st.data());
    expect_close(gt, gc, "gradient");
    for (int t = 0; t < T; ++t) {
      EXPECT_NEAR(st[t].loss, sc[t].loss, kTol * std::abs(sc[t].loss)) << "task " << t;
      EXPECT_EQ(st[t].acc, sc[t].acc) << "task " << t;
    }
    cpu.hvp(*bc, split, phi.data(), v.data(), hc.data(), nullptr);
    twin.hvp(*bt, split, phi.data(), v.data(), ht.data(), nullptr);
    expect_close(ht, hc, "Hessian-vector product");
  }
}

TEST(BatchedTwin, PassesMatchTheCpuBackendMaxPoolVariant) { expect_passes_agree(kMax); }
TEST(BatchedTwin, PassesMatchTheCpuBackendStrideVariant) { expect_passes_agree(kStride); }

// A whole meta-step (inner loop, adjoint, UFOM's exact sub-batch, sums) on both backends.
void expect_meta_steps_agree(const Conv4Spec& spec, Algo algo, double q, TrajectoryMode mode) {
  Fixture s(spec, 5);
  InnerLoop inner;
  inner.steps = 2;
  inner.lr = 0.3;
  inner.trajectory = mode;
  std::vector<int64_t> tasks = {0, 1, 2, 3, 4};
  auto run = [&](BatchedModel<double>& backend) {
    MetaStep<double> ms(backend, inner, {algo, 11, 2});
    MetaStepSums<double> sums;
    sums.reset(s.theta.size());
    ms.run(
        s.theta.data(), 3, tasks, [&](int64_t t, Episode<double>& e) { e = s.eps[t]; }, q, sums);
    return sums;
  };
  CpuBatchedModel<double> cpu(*s.net, 2, 5);
  TwinBatchedModel<double> twin(*s.net, 5, 3 * spec.ways);
  const MetaStepSums<double> a = run(cpu), b = run(twin);
  expect_close(b.grad, a.grad, "summed meta-gradient");
  EXPECT_EQ(a.exact_tasks, b.exact_tasks);
  EXPECT_NEAR(b.loss, a.loss, kTol * std::abs(a.loss));
  if (a.exact_tasks > 0) {
    expect_close(b.fo_gap, a.fo_gap, "first-order gap");
    EXPECT_NEAR(b.d2, a.d2, 1e-8 * a.d2);
  }
}

TEST(BatchedTwin, MamlStepMatchesTheCpuBackend) {
  expect_meta_steps_agree(kMax, Algo::kMaml, 1, {TrajectoryMode::kStore, 1});
}
TEST(BatchedTwin, UfomStepMatchesTheCpuBackendRecompute) {
  expect_meta_steps_agree(kMax, Algo::kUfom, 0.5, {TrajectoryMode::kRecompute, 1});
}
TEST(BatchedTwin, FomamlStepMatchesTheCpuBackendStrideVariant) {
  expect_meta_steps_agree(kStride, Algo::kFomaml, 0, {TrajectoryMode::kStore, 1});
}

}  // namespace
}  // namespace mt
