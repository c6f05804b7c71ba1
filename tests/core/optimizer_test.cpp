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

// The schedule's factor at its landmarks (float64, exact to rounding): constant 1; cosine 1 at
// the start, ½ halfway, 0 at the end and after; warm-up (t + 1)/w over the first w updates.
TEST(Optimizer, LrScheduleFactorsAtTheirLandmarks) {
  LrSchedule constant;
  EXPECT_EQ(constant.factor(0), 1.0);
  EXPECT_EQ(constant.factor(12345), 1.0);
  LrSchedule cosine{LrSchedule::Kind::kCosine, 0, 100};
  EXPECT_EQ(cosine.factor(0), 1.0);
  EXPECT_NEAR(cosine.factor(50), 0.5, 1e-15);
  EXPECT_NEAR(cosine.factor(25), 0.5 * (1 + std::cos(M_PI / 4)), 1e-15);
  EXPECT_NEAR(cosine.factor(100), 0.0, 1e-15);
  EXPECT_NEAR(cosine.factor(150), 0.0, 1e-15);  // a run extended past its schedule stays at 0
  LrSchedule warm{LrSchedule::Kind::kCosine, 4, 100};
  EXPECT_NEAR(warm.factor(0), 0.25 * cosine.factor(0), 1e-15);
  EXPECT_NEAR(warm.factor(3), 1.0 * cosine.factor(3), 1e-15);
  EXPECT_NEAR(warm.factor(4), cosine.factor(4), 1e-15);
}

// A scheduled optimizer's update t is the unscheduled optimizer's at lr·factor(t), bit for bit,
// for Adam and SGD: the schedule only scales the step size.
TEST(Optimizer, ScheduledUpdatesUseTheScaledStepSize) {
  const LrSchedule cosine{LrSchedule::Kind::kCosine, 2, 5};
  const std::vector<double> g = {0.3, -1.2, 2.0};
  for (const char* name : {"adam", "sgd"}) {
    auto scheduled = make_optimizer<double>(name, 3, 0.1, 0.9, cosine);
    std::vector<double> a = {1.0, 2.0, -3.0};
    for (int64_t t = 0; t < 7; ++t) {
      // The same state, stepped once at the scaled step size without a schedule.
      auto plain = make_optimizer<double>(name, 3, 0.1 * cosine.factor(t), 0.9);
      plain->set_steps(scheduled->steps());
      for (size_t k = 0; k < plain->state().size(); ++k)
        *plain->state()[k].second = *scheduled->state()[k].second;
      std::vector<double> b = a;
      scheduled->step(a.data(), g.data());
      plain->step(b.data(), g.data());
      EXPECT_EQ(a, b) << name << " update " << t;
    }
  }
}

TEST(Optimizer, FactoryRejectsUnknownNames) {
  EXPECT_EQ(make_optimizer<float>("adam", 3, 1e-3, 0)->name(), "adam");
  EXPECT_EQ(make_optimizer<float>("sgd", 3, 1e-3, 0.9)->name(), "sgd");
  EXPECT_THROW(make_optimizer<float>("rmsprop", 3, 1e-3, 0), UsageError);
}

}  // namespace
}  // namespace mt
