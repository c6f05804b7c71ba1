// sl-BAMM distributed (run under mpiexec with 1 and 2 ranks): the hyper-cleaning problem sharded
// over the ranks, with the solver's sums done by Comm::allreduce_sum, gives the same iterates as
// one process holding all examples, to 1e-6 relative (only the summation order differs), and
// every rank holds the same iterates. The toy (held by rank 0 only) likewise.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "core/bilevel_hyperclean.h"
#include "core/bilevel_toy.h"
#include "core/slbamm.h"
#include "data/hyperclean_data.h"
#include "dist/comm.h"
#include "models/linear.h"
#include "models/sequential.h"
#include "tests/support/synthetic_store.h"

namespace mt {
namespace {

double rel_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

// Largest difference between this rank's v and rank 0's.
double spread(dist::Comm& comm, const std::vector<double>& v) {
  std::vector<double> root(v);
  comm.broadcast(root.data(), root.size() * sizeof(double), 0);
  double d = 0;
  for (size_t i = 0; i < v.size(); ++i) d = std::max(d, std::abs(v[i] - root[i]));
  std::vector<double> buf = {d};
  comm.allreduce_sum(buf.data(), 1);
  return buf[0];
}

void expect_same_iterates(dist::Comm& comm, const SlBamm& sharded, const SlBamm& whole) {
  EXPECT_LT(rel_diff(sharded.x(), whole.x()), 1e-6);
  EXPECT_LT(rel_diff(sharded.y(), whole.y()), 1e-6);
  EXPECT_LT(rel_diff(sharded.z(), whole.z()), 1e-6);
  EXPECT_GT(rel_diff(whole.x(), std::vector<double>(whole.x().size(), 0.0)), 0.0);  // x moved
  EXPECT_EQ(spread(comm, sharded.x()), 0.0);
  EXPECT_EQ(spread(comm, sharded.y()), 0.0);
}

TEST(SlBammDistributed, ShardedHypercleaningMatchesOneProcess) {
  auto comm = dist::make_comm("mpi");
  HypercleanSpec spec;
  spec.classes = 5;
  spec.train_per_class = 6;
  spec.val_per_class = 3;
  spec.test_per_class = 1;
  const HypercleanData data = make_hyperclean_data(testing::synthetic_store(6, 10, 5, 3), spec);
  // The linear classifier: with Conv-4, batch-norm statistics per shard make ranks differ.
  Sequential<double> model(data.item, data.classes);
  model.add("head", std::make_unique<Linear<double>>(data.item, data.classes));
  const Batch<double> train = hyperclean_batch(data, data.train, HypercleanInput::kFeatures);
  const Batch<double> val = hyperclean_batch(data, data.val, HypercleanInput::kFeatures);
  const HypercleanProblem shard(model, train, val, 0, comm->rank(), comm->size()),
      all(model, train, val, 0);
  SlBammOptions o;
  o.y_lr = 1.0;
  o.x_lr = 100.0;
  SlBamm sharded(shard, o, [&](double* b, size_t n) { comm->allreduce_sum(b, n); });
  SlBamm whole(all, o);
  SlBammStats a, b;
  for (int k = 0; k < 100; ++k) {
    a = sharded.step();
    b = whole.step();
  }
  EXPECT_NEAR(a.F, b.F, 1e-6 * std::abs(b.F));
  EXPECT_NEAR(a.z_res, b.z_res, 1e-6 * b.z_res);
  expect_same_iterates(*comm, sharded, whole);
}

TEST(SlBammDistributed, ToyOnRankZeroMatchesOneProcess) {
  auto comm = dist::make_comm("mpi");
  const BilevelToy held(20, comm->rank() == 0), all(20);
  SlBammOptions o;
  o.z_lr_max = 1.0;
  SlBamm sharded(held, o, [&](double* b, size_t n) { comm->allreduce_sum(b, n); });
  SlBamm whole(all, o);
  for (int k = 0; k < 200; ++k) {
    sharded.step();
    whole.step();
  }
  expect_same_iterates(*comm, sharded, whole);
}

}  // namespace
}  // namespace mt
