// The host twin backend (models/batched_twin.h) against the per-task CPU backend, in float64, for
// any model the batched plan takes: every pass on both splits, and whole meta-steps, with tasks
// whose weights differ. Used by the Conv-4 and ResNet-12 twin tests.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "core/batched_model_cpu.h"
#include "core/meta_step.h"
#include "core/rng.h"
#include "core/ufom.h"
#include "models/batched_twin.h"
#include "models/sequential.h"
#include "tests/support/episodes.h"

namespace mt::testing {

using Vec = std::vector<double>;

// float64 throughout; the two backends differ only in the order of summation inside GEMMs and
// reductions (a few ulp per sum, through ~15 layers and the R-passes' products), so agreement to
// 1e-10 relative to the largest entry is expected; a wrong index, a missing fan-in term or a
// task mix-up gives O(1) differences.
constexpr double kTol = 1e-10;

inline double max_abs(const Vec& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

inline void expect_close(const Vec& got, const Vec& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  const double scale = std::max(1e-300, max_abs(want));
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::abs(got[i] - want[i]));
  EXPECT_LE(worst / scale, kTol) << what;
  EXPECT_GT(scale, 0) << what << " is all zeros: the comparison would be vacuous";
}

struct TwinFixture {
  std::unique_ptr<Sequential<double>> net;
  int ways;
  std::vector<Episode<double>> eps;
  std::vector<const Episode<double>*> ptrs;
  Vec theta;
  TwinFixture(std::unique_ptr<Sequential<double>> n, int tasks) : net(std::move(n)) {
    ways = net->classes();
    for (int t = 0; t < tasks; ++t)
      eps.push_back(testing::noise_episode<double>(net->input_shape(), ways, 2, 3, 60 + t));
    for (const auto& e : eps) ptrs.push_back(&e);
    theta.resize(net->layout().total());
    net->init(theta.data(), 9);
  }
};

// loss_grad and hvp of both backends on both splits at per-task parameters that differ (θ plus
// a task-specific offset), so that a task-mixing bug in the layout fails too.
inline void expect_passes_agree(std::unique_ptr<Sequential<double>> model) {
  const int T = 3;
  TwinFixture s(std::move(model), T);
  const BatchedLayout l(s.net->layout(), T);
  Vec phi(l.total()), v(l.total());
  host_vec_ops<double>().broadcast(l, s.theta.data(), phi.data());
  Rng rng(4, 0, 0, Stream::kInit);
  for (auto& x : phi) x += 0.05 * rng.uniform(-1, 1);
  for (auto& x : v) x = rng.uniform(-1, 1);

  CpuBatchedModel<double> cpu(*s.net, 2, T);
  TwinBatchedModel<double> twin(*s.net, T, 3 * s.ways);
  auto bc = cpu.make_batch(), bt = twin.make_batch();
  cpu.load(s.ptrs, *bc);
  twin.load(s.ptrs, *bt);
  for (Split split : {Split::kSupport, Split::kQuery}) {
    const std::string name = split == Split::kSupport ? "support " : "query ";
    Vec gc(l.total()), gt(l.total()), hc(l.total()), ht(l.total());
    std::vector<LossStats> sc(T), st(T), hsc(T), hst(T);
    cpu.loss_grad(*bc, split, phi.data(), gc.data(), sc.data());
    twin.loss_grad(*bt, split, phi.data(), gt.data(), st.data());
    expect_close(gt, gc, name + "gradient");
    for (int t = 0; t < T; ++t) {
      EXPECT_NEAR(st[t].loss, sc[t].loss, kTol * std::abs(sc[t].loss)) << name << "task " << t;
      EXPECT_EQ(st[t].acc, sc[t].acc) << name << "task " << t;
    }
    cpu.hvp(*bc, split, phi.data(), v.data(), hc.data(), hsc.data());
    twin.hvp(*bt, split, phi.data(), v.data(), ht.data(), hst.data());
    expect_close(ht, hc, name + "Hessian-vector product");
    for (int t = 0; t < T; ++t)
      EXPECT_NEAR(hst[t].loss, hsc[t].loss, kTol * std::abs(hsc[t].loss)) << name << "task " << t;
  }
}

// A whole meta-step (inner loop, adjoint, UFOM's exact sub-batch, sums) on both backends, with
// T tasks whose episodes (hence adapted weights) differ.
inline void expect_meta_steps_agree(std::unique_ptr<Sequential<double>> model, int T, Algo algo,
                                    double q, TrajectoryMode mode) {
  TwinFixture s(std::move(model), T);
  InnerLoop inner;
  inner.steps = 2;
  inner.lr = 0.3;
  inner.trajectory = mode;
  std::vector<int64_t> tasks(T);
  for (int t = 0; t < T; ++t) tasks[t] = t;
  const uint64_t seed = 17;
  // UFOM: the first outer step whose coins send some tasks down each path, so that the exact
  // sub-batch, its gather and the mix of g_F and g_E are all exercised.
  uint64_t step = 1;
  int exact = 0;
  for (;; ++step) {
    exact = 0;
    for (int64_t t : tasks) exact += ufom_takes_exact(seed, step, static_cast<uint64_t>(t), q);
    if (algo != Algo::kUfom || (exact > 0 && exact < T)) break;
  }
  auto run = [&](BatchedModel<double>& backend) {
    MetaStep<double> ms(backend, inner, {algo, seed, 2});
    MetaStepSums<double> sums;
    sums.reset(s.theta.size());
    ms.run(
        s.theta.data(), step, tasks, [&](int64_t t, Episode<double>& e) { e = s.eps[t]; }, q, sums);
    return sums;
  };
  CpuBatchedModel<double> cpu(*s.net, 2, T);
  TwinBatchedModel<double> twin(*s.net, T, 3 * s.ways);
  const MetaStepSums<double> a = run(cpu), b = run(twin);
  expect_close(b.grad, a.grad, "summed meta-gradient");
  EXPECT_EQ(a.exact_tasks, b.exact_tasks);
  EXPECT_NEAR(b.loss, a.loss, kTol * std::abs(a.loss));
  if (algo == Algo::kUfom) EXPECT_EQ(a.exact_tasks, exact) << "the coins of step " << step;
  if (a.exact_tasks > 0) {
    expect_close(b.fo_gap, a.fo_gap, "first-order gap");
    // d2 sums |g_E − g_F|², a difference of nearby gradients: its relative error is the
    // gradients' divided by that cancellation, hence looser than kTol.
    EXPECT_NEAR(b.d2, a.d2, 1e-8 * a.d2);
  }
}

}  // namespace mt::testing
