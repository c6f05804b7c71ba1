// The hyper-cleaning problem (core/bilevel_hyperclean.h) on the framework's classifiers: its
// derivatives (from the layers' R-passes; linear and Conv-4) vs finite differences, ranks' partial
// sums over blocks that add up to the whole problem, batch norm per block, and a Conv-4 smoke run
// of sl-BAMM that lowers the validation loss.
#include "core/bilevel_hyperclean.h"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>

#include "core/slbamm.h"
#include "data/hyperclean_data.h"
#include "models/conv4.h"
#include "models/linear.h"
#include "models/sequential.h"
#include "tests/support/bilevel_check.h"
#include "tests/support/synthetic_store.h"

namespace mt {
namespace {

using testing::Vec;

// 3 classes, 4 training (half corrupted), 2 validation and 2 test images each, side×side pixels
// (Conv-4 with max-pooling needs side >= 16).
HypercleanData small_data(int side = 3) {
  HypercleanSpec spec;
  spec.classes = 3;
  spec.train_per_class = 4;
  spec.val_per_class = 2;
  spec.test_per_class = 2;
  spec.seed = 5;
  return make_hyperclean_data(testing::synthetic_store(5, 10, side, 1), spec);
}

std::unique_ptr<Model<double>> linear(const HypercleanData& d) {
  auto m = std::make_unique<Sequential<double>>(d.item, d.classes);
  m->add("head", std::make_unique<Linear<double>>(d.item, d.classes));
  return m;
}

std::unique_ptr<Model<double>> conv4(const HypercleanData& d, int filters) {
  return make_conv4<double>({d.item, filters, d.classes, Conv4Pool::kMax});
}

// The problem on `model` with the input scaling it reads, the blocks of rank of ranks.
HypercleanProblem problem(const Model<double>& model, const HypercleanData& d, HypercleanInput in,
                          int rank = 0, int ranks = 1,
                          int64_t block_size = HypercleanProblem::kBlockSize) {
  return HypercleanProblem(model, hyperclean_batch(d, d.train, in), hyperclean_batch(d, d.val, in),
                           /*init_seed=*/3, rank, ranks, block_size);
}

// At x random and y = the model's init plus noise, for F, f and a blend. Tolerances of
// tests/support/grad_check.h: 1e-6 relative for central differences with h = 1e-5, 1e-10 for
// the symmetry of the Hessian (for Conv-4 too: no ReLU kink or max-pool tie lies within h).
::testing::AssertionResult check_problem(const HypercleanProblem& p, uint64_t seed,
                                         const std::string& what) {
  Rng rng(seed, 0, 0, Stream::kTest);
  Vec x(p.dim_x()), y(p.dim_y());
  p.init(x.data(), y.data());
  x = testing::random_vec(p.dim_x(), rng);
  y = testing::axpy(y, 0.3, testing::random_vec(p.dim_y(), rng));
  for (Blend w : {Blend{1, 0}, Blend{0, 1}, Blend{0.4, 0.6}}) {
    auto r = testing::check_bilevel(p, w, x, y, rng, what);
    if (!r) return r;
  }
  return ::testing::AssertionSuccess();
}

TEST(Hyperclean, LinearDerivativesMatchFiniteDifferences) {
  const HypercleanData d = small_data();
  const auto m = linear(d);
  const HypercleanProblem p = problem(*m, d, HypercleanInput::kFeatures);
  EXPECT_EQ(p.dim_y(), 3 * (9 + 1));  // W (K×D) and b (K)
  EXPECT_EQ(p.dim_x(), 12);
  EXPECT_TRUE(check_problem(p, 11, "hyperclean linear"));
  // Blocks of 5 (the sets in 3 and 2 blocks).
  EXPECT_TRUE(check_problem(problem(*m, d, HypercleanInput::kFeatures, 0, 1, 5), 11,
                            "hyperclean linear, blocks of 5"));
}

TEST(Hyperclean, Conv4DerivativesMatchFiniteDifferences) {
  const HypercleanData d = small_data(16);
  const auto m = conv4(d, 3);
  EXPECT_TRUE(check_problem(problem(*m, d, HypercleanInput::kPixels), 13, "hyperclean conv4"));
  EXPECT_TRUE(check_problem(problem(*m, d, HypercleanInput::kPixels, 0, 1, 5), 13,
                            "hyperclean conv4, blocks of 5"));
}

// Conv-4 smoke run on synthetic 16×16 images: 30 sl-BAMM iterations lower the clean validation
// loss F (measured: from 2.26 at the initial y to 0.22; asserted: at least halved) and move x.
TEST(Hyperclean, Conv4FewIterationsLowerTheValidationLoss) {
  HypercleanSpec spec;
  spec.classes = 4;
  spec.train_per_class = 6;
  spec.val_per_class = 3;
  spec.test_per_class = 2;
  spec.seed = 2;
  const HypercleanData d = make_hyperclean_data(testing::synthetic_store(4, 11, 16, 4), spec);
  const auto m = conv4(d, 4);
  const HypercleanProblem p = problem(*m, d, HypercleanInput::kPixels);
  SlBammOptions o;
  o.y_lr = 0.1;
  o.x_lr = 10.0;
  o.z_lr_max = 1.0;
  SlBamm solver(p, o);
  const double F0 = p.values(solver.x().data(), solver.y().data()).F;
  SlBammStats st;
  for (int k = 0; k < 30; ++k) st = solver.step();
  ASSERT_TRUE(std::isfinite(st.F));
  EXPECT_LT(st.F, 0.5 * F0) << "F0 " << F0;
  EXPECT_GT(testing::norm(solver.x()), 0.0);
}

// Blocks of 2: the 12 training examples in 6 blocks, the 6 validation examples in 3. The two
// ranks' partial sums add up to one process's, for Conv-4 too (its batch norm works per block).
void expect_ranks_sum_to_whole(const Model<double>& m, const HypercleanData& d, HypercleanInput in,
                               const char* what) {
  const HypercleanProblem whole = problem(m, d, in, 0, 1, 2), s0 = problem(m, d, in, 0, 2, 2),
                          s1 = problem(m, d, in, 1, 2, 2);
  EXPECT_EQ(whole.blocks(), 9);
  EXPECT_EQ(s0.owned_blocks(), (std::vector<int64_t>{0, 2, 4, 6, 8}));
  EXPECT_EQ(s1.owned_blocks(), (std::vector<int64_t>{1, 3, 5, 7}));
  Rng rng(12, 0, 0, Stream::kTest);
  const Vec x = testing::random_vec(whole.dim_x(), rng);
  Vec y(whole.dim_y()), x0(whole.dim_x());
  whole.init(x0.data(), y.data());
  y = testing::axpy(y, 0.3, testing::random_vec(whole.dim_y(), rng));
  const Vec v = testing::random_vec(whole.dim_y(), rng);
  const Blend w{0.3, 0.7};
  auto both = [&](auto fn, int64_t n) {
    Vec a(n), b(n), c(n);
    fn(whole, a.data());
    fn(s0, b.data());
    fn(s1, c.data());
    for (int64_t i = 0; i < n; ++i) b[i] += c[i];
    return testing::rel_err(a, b);
  };
  const int64_t dy = whole.dim_y(), dx = whole.dim_x();
  EXPECT_LT(
      both([&](const BilevelProblem& p, double* o) { p.grad_y(w, x.data(), y.data(), o); }, dy),
      1e-12)
      << what;
  EXPECT_LT(both([&](const BilevelProblem& p,
                     double* o) { p.hvp_yy(w, x.data(), y.data(), v.data(), o); },
                 dy),
            1e-12)
      << what;
  EXPECT_LT(both([&](const BilevelProblem& p,
                     double* o) { p.mixed_xy(w, x.data(), y.data(), v.data(), o); },
                 dx),
            1e-12)
      << what;
  EXPECT_LT(
      both([&](const BilevelProblem& p, double* o) { p.grad_x(w, x.data(), y.data(), o); }, dx),
      1e-12)
      << what;
  const BilevelValues a = whole.values(x.data(), y.data()), b = s0.values(x.data(), y.data()),
                      c = s1.values(x.data(), y.data());
  EXPECT_NEAR(a.F, b.F + c.F, 1e-12) << what;
  EXPECT_NEAR(a.f, b.f + c.f, 1e-12) << what;
}

TEST(Hyperclean, RanksPartialSumsOverBlocksAddUpToTheWholeProblem) {
  const HypercleanData d = small_data();
  expect_ranks_sum_to_whole(*linear(d), d, HypercleanInput::kFeatures, "linear");
  const HypercleanData d16 = small_data(16);
  expect_ranks_sum_to_whole(*conv4(d16, 3), d16, HypercleanInput::kPixels, "conv4");
}

// A block is one batch of the model: with blocks of 2, Conv-4's batch norm gives another
// function than over the whole set (blocks of 64 here), the linear classifier the same.
TEST(Hyperclean, BatchNormStatisticsArePerBlock) {
  const HypercleanData d = small_data(16);
  const auto m = conv4(d, 3);
  const HypercleanProblem one = problem(*m, d, HypercleanInput::kPixels),
                          blocks = problem(*m, d, HypercleanInput::kPixels, 0, 1, 2);
  EXPECT_EQ(one.blocks(), 2);
  Vec x(one.dim_x()), y(one.dim_y());
  one.init(x.data(), y.data());
  EXPECT_GT(std::abs(one.values(x.data(), y.data()).F - blocks.values(x.data(), y.data()).F), 1e-6);
  const auto lin = linear(d);
  const HypercleanProblem lone = problem(*lin, d, HypercleanInput::kFeatures),
                          lblocks = problem(*lin, d, HypercleanInput::kFeatures, 0, 1, 2);
  Vec lx(lone.dim_x()), ly(lone.dim_y());
  lone.init(lx.data(), ly.data());
  EXPECT_NEAR(lone.values(lx.data(), ly.data()).F, lblocks.values(lx.data(), ly.data()).F, 1e-12);
}

// The noisy-label baseline is plain gradient descent: with all weights 1 and one step it moves y
// by −lr ∇L at the model's init.
TEST(Hyperclean, BaselineIsGradientDescentOnTheWeightedLoss) {
  const HypercleanData d = small_data();
  const auto m = linear(d);
  const Batch<double> train = hyperclean_batch(d, d.train, HypercleanInput::kFeatures);
  const std::vector<double> y1 =
      train_weighted(*m, train, std::vector<double>(train.n, 1.0), 3, 1, 0.5, 0.0);
  Vec y0(m->layout().total()), g(y0.size());
  m->init(y0.data(), 3);
  auto ws = m->make_workspace();
  m->loss_grad(y0.data(), train, g.data(), *ws);
  for (size_t i = 0; i < y0.size(); ++i) EXPECT_DOUBLE_EQ(y1[i], y0[i] - 0.5 * g[i]) << i;
  EXPECT_GE(classifier_accuracy(*m, train, y1.data()), 0.0);
}

}  // namespace
}  // namespace mt
