// Outer optimizers against hand-computed updates (float64, exact formulas).
#include "core/optimizer.h"

#include <gtest/gtest.h>

#include <cmath>

#include "core/check.h"

namespace mt {
namespace {

TEST(Optimizer, AdamMatchesTheBiasCorrectedUpdate) {
  Adam<double> adam(2, 0.1);
  std::vector<double> theta = {1.0, -2.0};
  const std::vector<double> g1 = {0.5, -4.0}, g2 = {-1.0, 2.0};
  adam.step(theta.data(), g1.data());
  // Step 1: m̂ = g, v̂ = g², update = lr · g / (|g| + ε).
  EXPECT_NEAR(theta[0], 1.0 - 0.1 * 0.5 / (0.5 + 1e-8), 1e-15);
  EXPECT_NEAR(theta[1], -2.0 + 0.1 * 4.0 / (4.0 + 1e-8), 1e-15);
  adam.step(theta.data(), g2.data());
  for (int i = 0; i < 2; ++i) {
    const double m = 0.9 * 0.1 * g1[i] + 0.1 * g2[i];
    const double v = 0.999 * 0.001 * g1[i] * g1[i] + 0.001 * g2[i] * g2[i];
    const double mhat = m / (1 - 0.81), vhat = v / (1 - 0.999 * 0.999);
    const double first =
        (i == 0 ? 1.0 - 0.1 * 0.5 / (0.5 + 1e-8) : -2.0 + 0.1 * 4.0 / (4.0 + 1e-8));
    EXPECT_NEAR(theta[i], first - 0.1 * mhat / (std::sqrt(vhat) + 1e-8), 1e-12) << i;
  }
  EXPECT_EQ(adam.steps(), 2);
  ASSERT_EQ(adam.state().size(), 2u);
  EXPECT_EQ(adam.state()[0].first, "m");
}

TEST(Optimizer, SgdMomentumAccumulatesVelocity) {
  SgdMomentum<double> sgd(1, 0.5, 0.9);
  std::vector<double> theta = {1.0};
  const double g1 = 2.0, g2 = -1.0;
  sgd.step(theta.data(), &g1);  // v = 2, θ = 1 − 1 = 0
  EXPECT_DOUBLE_EQ(theta[0], 0.0);
  sgd.step(theta.data(), &g2);  // v = 0.9·2 − 1 = 0.8, θ = −0.4
  EXPECT_DOUBLE_EQ(theta[0], -0.4);
}

TEST(Optimizer, FactoryRejectsUnknownNames) {
  EXPECT_EQ(make_optimizer<float>("adam", 3, 1e-3, 0)->name(), "adam");
  EXPECT_EQ(make_optimizer<float>("sgd", 3, 1e-3, 0.9)->name(), "sgd");
  EXPECT_THROW(make_optimizer<float>("rmsprop", 3, 1e-3, 0), UsageError);
}

}  // namespace
}  // namespace mt
