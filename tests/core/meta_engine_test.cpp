// The task-batched engine (core/meta_engine.h) on the CPU backend: a batch of T tasks gives,
// task for task and bit for bit, what the one-task engine gives; UFOM's exact sub-batch holds the
// right tasks; chunking a rank's tasks into smaller batches changes no bit of the sums.
#include "core/meta_engine.h"

#include <gtest/gtest.h>

#include "core/batched_model_cpu.h"
#include "core/meta_step.h"
#include "models/conv4.h"
#include "tests/support/episodes.h"

namespace mt {
namespace {

constexpr int kTasks = 5;

struct Problem {
  std::unique_ptr<Sequential<double>> net =
      make_conv4<double>({{1, 16, 16}, 4, 3, Conv4Pool::kMax});
  std::vector<Episode<double>> eps;
  std::vector<double> theta;
  Problem() {
    for (int t = 0; t < kTasks; ++t)
      eps.push_back(testing::noise_episode<double>({1, 16, 16}, 3, 2, 3, 100 + t));
    theta.resize(net->layout().total());
    net->init(theta.data(), 4);
  }
  // Task t's row of a batched buffer of `tasks` tasks.
  std::vector<double> row(const std::vector<double>& batched, int tasks, int t) const {
    std::vector<double> out(theta.size());
    host_vec_ops<double>().gather(BatchedLayout(net->layout(), tasks), batched.data(), {t},
                                  out.data());
    return out;
  }
};

void expect_batch_equals_single_tasks(const InnerLoop& inner) {
  Problem p;
  const int64_t d = p.theta.size();
  CpuBatchedModel<double> backend(*p.net, /*threads=*/2, /*max_tasks=*/kTasks);
  MetaEngine<double> engine(backend, inner);
  auto batch = backend.make_batch();
  std::vector<const Episode<double>*> ptrs;
  for (const auto& e : p.eps) ptrs.push_back(&e);
  backend.load(ptrs, *batch);
  const std::vector<int> exact = {0, 2, 3};  // a sub-batch: a task-mixing bug changes rows
  std::vector<double> g_fo(kTasks * d), g_exact(exact.size() * d);
  std::vector<LossStats> query(kTasks);
  engine.run(p.theta.data(), *batch, exact, g_fo.data(), g_exact.data(), query.data());

  MetaGradient<double> mg(*p.net, inner);
  auto s = mg.make_scratch();
  for (int t = 0, e = 0; t < kTasks; ++t) {
    std::vector<double> gf(d), ge(d);
    const bool is_exact = e < static_cast<int>(exact.size()) && exact[e] == t;
    const TaskOutcome one =
        mg.compute(p.theta.data(), p.eps[t], gf.data(), is_exact ? ge.data() : nullptr, s);
    EXPECT_EQ(p.row(g_fo, kTasks, t), gf) << "task " << t;
    EXPECT_EQ(query[t].loss, one.query.loss) << "task " << t;
    EXPECT_EQ(query[t].acc, one.query.acc) << "task " << t;
    if (is_exact) {
      EXPECT_EQ(p.row(g_exact, static_cast<int>(exact.size()), e), ge) << "task " << t;
      EXPECT_NE(ge, gf);
      ++e;
    }
  }
  // Different tasks give different gradients: the row comparison above is not vacuous.
  EXPECT_NE(p.row(g_fo, kTasks, 0), p.row(g_fo, kTasks, 1));
}

TEST(MetaEngine, BatchOfTasksEqualsEachTaskAloneStore) {
  InnerLoop inner;
  inner.steps = 3;
  inner.lr = 0.3;
  expect_batch_equals_single_tasks(inner);
}

TEST(MetaEngine, BatchOfTasksEqualsEachTaskAloneCheckpointTruncatedClipped) {
  InnerLoop inner;
  inner.steps = 4;
  inner.lr = 0.3;
  inner.trajectory = {TrajectoryMode::kCheckpoint, 2};
  inner.truncate = 3;
  inner.adjoint_clip = 0.01;
  expect_batch_equals_single_tasks(inner);
}

TEST(MetaEngine, BatchOfTasksEqualsEachTaskAloneRecompute) {
  InnerLoop inner;
  inner.steps = 3;
  inner.lr = 0.3;
  inner.trajectory = {TrajectoryMode::kRecompute, 1};
  expect_batch_equals_single_tasks(inner);
}

TEST(MetaEngine, EvaluationOfABatchEqualsEachTaskAlone) {
  Problem p;
  InnerLoop inner;
  inner.lr = 0.3;
  CpuBatchedModel<double> backend(*p.net, 2, kTasks);
  MetaEngine<double> engine(backend, inner);
  auto batch = backend.make_batch();
  std::vector<const Episode<double>*> ptrs;
  for (const auto& e : p.eps) ptrs.push_back(&e);
  backend.load(ptrs, *batch);
  std::vector<LossStats> query(kTasks);
  engine.adapt_and_evaluate(p.theta.data(), *batch, 4, query.data());
  MetaGradient<double> mg(*p.net, inner);
  auto s = mg.make_scratch();
  for (int t = 0; t < kTasks; ++t)
    EXPECT_EQ(query[t].loss, mg.adapt_and_evaluate(p.theta.data(), p.eps[t], 4, s).loss);
  EXPECT_NE(query[0].loss, query[1].loss);
}

// A rank's tasks split into batches of 2 give the same sums, bit for bit, as one batch.
TEST(MetaStep, SmallerBatchesChangeNoBit) {
  Problem p;
  InnerLoop inner;
  inner.steps = 2;
  inner.lr = 0.3;
  std::vector<int64_t> tasks = {0, 1, 2, 3, 4};
  auto run = [&](int max_tasks) {
    CpuBatchedModel<double> backend(*p.net, 2, max_tasks);
    MetaStep<double> ms(backend, inner, {Algo::kUfom, 3, 2});
    MetaStepSums<double> sums;
    sums.reset(p.theta.size());
    ms.run(
        p.theta.data(), 7, tasks, [&](int64_t t, Episode<double>& e) { e = p.eps[t]; }, 0.5,
        sums);
    return sums;
  };
  const MetaStepSums<double> one = run(kTasks), chunked = run(2);
  EXPECT_GT(one.exact_tasks, 0);  // q = 0.5 over 5 tasks: both paths are exercised
  EXPECT_LT(one.exact_tasks, kTasks);
  EXPECT_EQ(one.grad, chunked.grad);
  EXPECT_EQ(one.fo_gap, chunked.fo_gap);
  EXPECT_EQ(one.v2, chunked.v2);
  EXPECT_EQ(one.d2, chunked.d2);
  EXPECT_EQ(one.loss, chunked.loss);
  EXPECT_EQ(one.exact_tasks, chunked.exact_tasks);
}

}  // namespace
}  // namespace mt
