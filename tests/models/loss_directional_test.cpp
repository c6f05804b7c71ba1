// Per-example losses and their directional derivatives (Model::example_losses,
// Model::loss_directional) and the per-example weights of a batch (Batch::weight), checked in
// float64 against central differences (tests/support/grad_check.h) for a small Conv-4 with batch
// norm and for a linear model.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>

#include "models/conv4.h"
#include "models/linear.h"
#include "tests/support/grad_check.h"

namespace mt {
namespace {

using testing::Vec;

std::unique_ptr<Sequential<double>> make_model(bool conv) {
  const Shape in{2, 16, 16};
  if (conv) return make_conv4<double>({in, 3, 3, Conv4Pool::kMax});
  auto net = std::make_unique<Sequential<double>>(in, 3);
  net->add("head", std::make_unique<Linear<double>>(in, 3));
  return net;
}

Batch<double> random_batch(Shape item, int m, Rng& rng) {
  Batch<double> b;
  b.resize(item, m);
  for (double& v : b.x) v = rng.uniform();
  for (int i = 0; i < m; ++i) b.y[i] = i % 3;
  return b;
}

// dl_i = ⟨∇ℓ_i, v⟩ vs central differences of ℓ_i(θ ± h v): 1e-6 relative over the vector of m
// values (kFdTol). Batch norm couples the examples, so the differences move every ℓ_i at once.
// Also Σ_i dl_i / m = ⟨∇L, v⟩ from loss_grad, to 1e-12 relative.
void check_directional(bool conv, uint64_t seed) {
  auto net = make_model(conv);
  Rng rng(seed, 0, 0, Stream::kTest);
  const Batch<double> b = random_batch(net->input_shape(), 6, rng);
  Vec theta(net->layout().total());
  net->init(theta.data(), seed);
  theta = testing::axpy(theta, 0.1, testing::random_vec(theta.size(), rng));
  const Vec v = testing::random_vec(theta.size(), rng);
  auto ws = net->make_workspace();
  auto losses = [&](const Vec& t) {
    Vec l(b.n);
    net->example_losses(t.data(), b, l.data(), *ws);
    return l;
  };
  Vec dl(b.n);
  net->loss_directional(theta.data(), b, v.data(), dl.data(), *ws);
  EXPECT_LT(testing::rel_err(dl, testing::fd_directional(losses, theta, v)), testing::kFdTol);
  EXPECT_GT(testing::norm(dl), 0.0);

  Vec g(theta.size());
  const double L = net->loss_grad(theta.data(), b, g.data(), *ws).loss;
  const Vec l = losses(theta);
  double mean_l = 0, mean_dl = 0;
  for (int i = 0; i < b.n; ++i) {
    mean_l += l[i] / b.n;
    mean_dl += dl[i] / b.n;
  }
  EXPECT_NEAR(mean_l, L, 1e-12 * L);
  EXPECT_NEAR(mean_dl, testing::dot(g, v), 1e-12 * std::abs(mean_dl));
}

TEST(LossDirectional, Conv4WithBatchNormMatchesFiniteDifferences) { check_directional(true, 21); }
TEST(LossDirectional, LinearMatchesFiniteDifferences) { check_directional(false, 22); }

// loss_grad and hvp of a batch with weights w_i in [0.2, 2] vs finite differences of the
// weighted loss Σ w_i ℓ_i / m (check_function: 1e-6 relative, symmetry 1e-10), and the loss
// equals Σ w_i ℓ_i / m from example_losses (1e-12).
void check_weighted(bool conv, uint64_t seed) {
  auto net = make_model(conv);
  Rng rng(seed, 0, 0, Stream::kTest);
  Batch<double> b = random_batch(net->input_shape(), 6, rng);
  b.weight.resize(b.n);
  for (double& w : b.weight) w = rng.uniform(0.2, 2.0);
  Vec theta(net->layout().total());
  net->init(theta.data(), seed);
  auto ws = net->make_workspace();
  const testing::DiffFunction f = testing::model_function(*net, b, *ws);
  EXPECT_TRUE(testing::check_function(f, theta, rng, conv ? "weighted conv4" : "weighted linear"));
  Vec l(b.n);
  net->example_losses(theta.data(), b, l.data(), *ws);
  double sum = 0;
  for (int i = 0; i < b.n; ++i) sum += b.weight[i] * l[i] / b.n;
  EXPECT_NEAR(f.value(theta), sum, 1e-12 * sum);
}

TEST(WeightedLoss, Conv4GradientAndHvpMatchFiniteDifferences) { check_weighted(true, 23); }
TEST(WeightedLoss, LinearGradientAndHvpMatchFiniteDifferences) { check_weighted(false, 24); }

// Unit weights give the unweighted loss, gradient and Hv bit for bit; resize() clears weights.
TEST(WeightedLoss, UnitWeightsEqualNoWeightsBitForBit) {
  auto net = make_model(true);
  Rng rng(25, 0, 0, Stream::kTest);
  Batch<double> b = random_batch(net->input_shape(), 5, rng);
  Batch<double> ones = b;
  ones.weight.assign(b.n, 1.0);
  Vec theta(net->layout().total());
  net->init(theta.data(), 25);
  const Vec v = testing::random_vec(theta.size(), rng);
  auto ws = net->make_workspace();
  Vec g0(theta.size()), g1(theta.size()), H0(theta.size()), H1(theta.size());
  const LossStats s0 = net->hvp(theta.data(), b, v.data(), g0.data(), H0.data(), *ws);
  const LossStats s1 = net->hvp(theta.data(), ones, v.data(), g1.data(), H1.data(), *ws);
  EXPECT_EQ(s0.loss, s1.loss);
  EXPECT_EQ(g0, g1);
  EXPECT_EQ(H0, H1);
  ones.resize(b.item, 3);
  EXPECT_TRUE(ones.weight.empty());
  EXPECT_EQ(b.cast<float>().weight.size(), 0u);
}

}  // namespace
}  // namespace mt
