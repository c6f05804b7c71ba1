// sl-BAMM distributed (run under mpiexec with 1 to 4 ranks): with the exact reduction the solver on
// a problem divided among the ranks gives the bits of one process holding all of it — the iterates
// x, y, z and every statistic of every iteration — for the toy (held by rank 0) and for
// hyper-cleaning over blocks of a few examples with the linear and the Conv-4 classifier (whose
// batch norm works per block, so the function itself does not depend on the ranks). The float
// reduction solves the same problem to rounding.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/bilevel_hyperclean.h"
#include "core/bilevel_toy.h"
#include "core/slbamm.h"
#include "data/hyperclean_data.h"
#include "dist/comm.h"
#include "models/conv4.h"
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

// The bytes of an iteration's statistics and of the iterate after it.
std::string bits(const SlBammStats& st, const SlBamm& s) {
  std::string out;
  auto add = [&](const void* p, size_t n) { out.append(static_cast<const char*>(p), n); };
  for (double v : {st.mu, st.beta_y, st.beta_x, st.eta, st.z_res, st.x_grad, st.F, st.f, st.x_err})
    add(&v, sizeof v);
  for (const std::vector<double>* v : {&s.x(), &s.y(), &s.z()})
    add(v->data(), v->size() * sizeof(double));
  return out;
}

SlBamm on_ranks(dist::Comm& comm, const BilevelProblem& p, SlBammOptions o) {
  return SlBamm(
      p, o, [&comm](double* b, size_t n) { comm.allreduce_sum(b, n); },
      [&comm](int64_t* b, size_t n) { comm.allreduce_sum(b, n); });
}

// `steps` iterations of the divided problem on the ranks and of the whole one in this process:
// the same bytes after every iteration. Returns the whole run's x, to check that it moved.
std::vector<double> expect_same_bits(dist::Comm& comm, const BilevelProblem& divided,
                                     const BilevelProblem& whole, const SlBammOptions& o,
                                     int steps) {
  SlBamm a = on_ranks(comm, divided, o), b(whole, o);
  int differ = -1;
  for (int k = 0; k < steps; ++k) {
    const SlBammStats sa = a.step(), sb = b.step();
    if (differ < 0 && bits(sa, a) != bits(sb, b)) differ = k + 1;
  }
  EXPECT_EQ(differ, -1) << "first different iteration on " << comm.size() << " ranks";
  return b.x();
}

TEST(SlBammDistributed, ToyOnRankZeroGivesTheBitsOfOneProcess) {
  auto comm = dist::make_comm("mpi");
  const BilevelToy held(20, comm->rank() == 0), all(20);
  SlBammOptions o;
  o.z_lr_max = 1.0;
  const std::vector<double> x = expect_same_bits(*comm, held, all, o, 200);
  EXPECT_GT(rel_diff(x, std::vector<double>(x.size(), 0.01)), 0.5);
}

HypercleanData data(int classes, int train, int val, int side, uint64_t seed) {
  HypercleanSpec spec;
  spec.classes = classes;
  spec.train_per_class = train;
  spec.val_per_class = val;
  spec.test_per_class = 1;
  spec.seed = seed;
  return make_hyperclean_data(testing::synthetic_store(classes + 1, train + val + 1, side, seed),
                              spec);
}

// 30 training examples in 8 blocks of 3 or 4, 15 validation examples in 4 blocks: every rank
// count of 1 … 4 splits them differently.
TEST(SlBammDistributed, HypercleanLinearGivesTheBitsOfOneProcess) {
  auto comm = dist::make_comm("mpi");
  const HypercleanData d = data(5, 6, 3, 5, 3);
  Sequential<double> model(d.item, d.classes);
  model.add("head", std::make_unique<Linear<double>>(d.item, d.classes));
  const Batch<double> train = hyperclean_batch(d, d.train, HypercleanInput::kFeatures);
  const Batch<double> val = hyperclean_batch(d, d.val, HypercleanInput::kFeatures);
  const HypercleanProblem divided(model, train, val, 0, comm->rank(), comm->size(), 4),
      whole(model, train, val, 0, 0, 1, 4);
  ASSERT_EQ(whole.blocks(), 12);
  SlBammOptions o;
  o.y_lr = 1.0;
  o.x_lr = 100.0;
  const std::vector<double> x = expect_same_bits(*comm, divided, whole, o, 60);
  EXPECT_GT(rel_diff(x, std::vector<double>(x.size(), 1.0)), 0.0);

  // The float reduction: the same function, summed in another order.
  SlBammOptions of = o;
  of.reduce = SlBammOptions::Reduce::kFloat;
  SlBamm a = on_ranks(*comm, divided, of), b(whole, o);
  for (int k = 0; k < 60; ++k) {
    a.step(false);
    b.step(false);
  }
  EXPECT_LT(rel_diff(a.x(), b.x()), 1e-9);
  EXPECT_LT(rel_diff(a.y(), b.y()), 1e-9);
  EXPECT_LT(rel_diff(a.z(), b.z()), 1e-9);
}

// Conv-4 with batch norm on 16×16 images: 12 training examples in 4 blocks of 3, 6 validation
// examples in 2.
TEST(SlBammDistributed, HypercleanConv4GivesTheBitsOfOneProcess) {
  auto comm = dist::make_comm("mpi");
  const HypercleanData d = data(3, 4, 2, 16, 4);
  const auto model = make_conv4<double>({d.item, 2, d.classes, Conv4Pool::kMax});
  const Batch<double> train = hyperclean_batch(d, d.train, HypercleanInput::kPixels);
  const Batch<double> val = hyperclean_batch(d, d.val, HypercleanInput::kPixels);
  const HypercleanProblem divided(*model, train, val, 0, comm->rank(), comm->size(), 3),
      whole(*model, train, val, 0, 0, 1, 3);
  ASSERT_EQ(whole.blocks(), 6);
  SlBammOptions o;
  o.y_lr = 0.1;
  o.x_lr = 10.0;
  o.z_lr_max = 1.0;
  expect_same_bits(*comm, divided, whole, o, 8);
}

}  // namespace
}  // namespace mt
