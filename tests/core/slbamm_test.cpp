// sl-BAMM on the merely-convex toy (DESIGN §3.7): exact derivatives vs finite differences, the
// averaged loop reaching x* = e, and the non-averaged variants settling at the lower-level
// solution they select instead, which is derived in the comments and asserted; the solver state
// restored continues bit for bit, its exact reduction over blocks, and its checkpoint file
// round-trips and is validated.
#include "core/slbamm.h"

#include <gtest/gtest.h>

#include <cmath>

#include "core/bilevel_checkpoint.h"
#include "core/bilevel_toy.h"
#include "core/hdf5.h"
#include "tests/support/bilevel_check.h"

namespace mt {
namespace {

using testing::Vec;

// ‖v − c·e‖ / ‖c·e‖ over entries [from, to) of v.
double rel_to_constant(const std::vector<double>& v, size_t from, size_t to, double c) {
  double num = 0;
  for (size_t i = from; i < to; ++i) num += (v[i] - c) * (v[i] - c);
  return std::sqrt(num / (to - from)) / std::abs(c);
}
double max_abs(const std::vector<double>& v, size_t from, size_t to) {
  double m = 0;
  for (size_t i = from; i < to; ++i) m = std::max(m, std::abs(v[i]));
  return m;
}

SlBamm run(const BilevelProblem& p, SlBammOptions opt, int64_t steps) {
  SlBamm s(p, opt);
  for (int64_t k = 0; k < steps; ++k) s.step(false);
  return s;
}

TEST(BilevelToy, DerivativesMatchFiniteDifferences) {
  const BilevelToy toy(7);
  Rng rng(3, 0, 0, Stream::kTest);
  const Vec x = testing::random_vec(7, rng), y = testing::random_vec(14, rng);
  for (Blend w : {Blend{1, 0}, Blend{0, 1}, Blend{0.3, 0.7}})
    EXPECT_TRUE(testing::check_bilevel(toy, w, x, y, rng, "toy"));
}

TEST(BilevelToy, InactiveCopyContributesNothing) {
  const BilevelToy off(5, /*active=*/false);
  const Vec x(5, 0.3), y(10, 0.7), z(10, 1.0);
  Vec g(10, 9.0), gx(5, 9.0);
  off.grad_y({0.5, 0.5}, x.data(), y.data(), g.data());
  off.mixed_xy({0.5, 0.5}, x.data(), y.data(), z.data(), gx.data());
  EXPECT_EQ(testing::norm(g), 0.0);
  EXPECT_EQ(testing::norm(gx), 0.0);
  EXPECT_EQ(off.values(x.data(), y.data()).F, 0.0);
}

TEST(SlBamm, SchedulesFollowTheStatedFormulas) {
  SlBammOptions o;
  o.mu0 = 0.8;
  o.p = 4;
  o.tau = 0.2;
  o.y_lr = 0.3;
  o.x_lr = 0.5;
  const BilevelToy toy(3);
  const SlBamm s(toy, o);
  EXPECT_DOUBLE_EQ(s.mu(0), 0.8);
  EXPECT_NEAR(s.mu(15), 0.8 / 2, 1e-15);  // 16^{1/4} = 2
  EXPECT_NEAR(s.beta_y(15), 0.3 * std::pow(16.0, -0.1), 1e-15);
  EXPECT_NEAR(s.beta_x(15), 0.5 * std::pow(0.5, 3) * std::pow(16.0, -0.3), 1e-15);
}

// sl-BAMM with the default schedules (μ_0 0.9, p 10, τ 1/40, β_y 0.1, β_x 0.1, line search
// capped at 1) reaches ‖x − e‖/‖e‖ ≤ 1e-3; y approaches (e, e).
TEST(SlBamm, ToyReachesTheBilevelSolution) {
  const BilevelToy toy(100);
  SlBammOptions o;
  o.z_lr_max = 1.0;
  const SlBamm s = run(toy, o, 4000);
  EXPECT_LE(s.x_err(), 1e-3);
  EXPECT_LE(rel_to_constant(s.y(), 0, 100, 1.0), 1e-2);
  EXPECT_LE(rel_to_constant(s.y(), 100, 200, 1.0), 1e-2);
}

TEST(SlBamm, ToyReachesTheBilevelSolutionWithScheduledZStep) {
  const BilevelToy toy(100);
  SlBammOptions o;
  o.z_step = SlBammOptions::ZStep::kScheduled;
  o.z_lr = 0.5;
  EXPECT_LE(run(toy, o, 4000).x_err(), 1e-3);
}

// Without averaging (μ ≡ 0) y2 never moves (∇_y2 f = 0): it stays at its start 0.01·e. The loop
// then solves the bilevel problem with that lower-level selection: y1 = x, z1 = y1 − e, and the
// x-direction (x − y2) + z1 = 2x − y2 − e vanishes at x = (e + 0.01 e)/2 = 0.505 e.
TEST(SlBamm, WithoutAveragingTheToySettlesAtAnotherPoint) {
  const BilevelToy toy(100);
  SlBammOptions o;
  o.variant = SlBammOptions::Variant::kNoAveraging;
  o.z_lr_max = 1.0;
  const SlBamm s = run(toy, o, 4000);
  EXPECT_LE(rel_to_constant(s.x(), 0, 100, 0.505), 1e-6);
  EXPECT_LE(rel_to_constant(s.y(), 0, 100, 0.505), 1e-6);    // y1 = x
  EXPECT_LE(rel_to_constant(s.y(), 100, 200, 0.01), 1e-12);  // y2 untouched
  EXPECT_GE(s.x_err(), 0.49);
}

// With f + (ε/2)‖y‖² (μ ≡ 0) the lower level has the unique solution y1 = x/(1+ε), y2 = 0 (the
// minimum-norm selection), so the loop minimises ½‖x‖² + ½‖x/(1+ε) − e‖²:
// x = (1+ε)/((1+ε)² + 1) e, which is 0.4977375… e for ε = 0.1.
TEST(SlBamm, WithARegulariserTheToySettlesAtTheMinimumNormSelection) {
  const BilevelToy toy(100);
  SlBammOptions o;
  o.variant = SlBammOptions::Variant::kRegularised;
  o.reg = 0.1;
  o.z_lr_max = 1.0;
  const SlBamm s = run(toy, o, 4000);
  const double eps = 0.1, x_reg = (1 + eps) / ((1 + eps) * (1 + eps) + 1);
  EXPECT_LE(rel_to_constant(s.x(), 0, 100, x_reg), 1e-6);
  EXPECT_LE(rel_to_constant(s.y(), 0, 100, x_reg / (1 + eps)), 1e-6);
  EXPECT_LE(max_abs(s.y(), 100, 200), 1e-6);
  EXPECT_GE(s.x_err(), 0.49);
}

// The exact line search over the z-quadratic is unbounded along the null space of ∇²_yy f when
// μ = 0; the cap keeps it finite, and z_res reports ‖∇²_yy φ z − ∇_y F‖, which goes to 0 for
// sl-BAMM.
TEST(SlBamm, LineSearchStepIsCappedAndResidualDecays) {
  const BilevelToy toy(10);
  SlBammOptions o;
  o.z_lr_max = 1.0;
  SlBamm s(toy, o);
  SlBammStats first = s.step(), last;
  for (int k = 1; k < 4000; ++k) last = s.step();
  EXPECT_LE(first.eta, 1.0);
  EXPECT_GT(first.eta, 0.0);
  EXPECT_TRUE(last.has_values);
  EXPECT_LT(last.z_res, 1e-3 * first.z_res);
  EXPECT_NEAR(last.F, 0.0, 1e-5);  // F(x*, y*) = 0
  EXPECT_EQ(last.step, 4000);
}

// ---- state export / restore and its checkpoint file ------------------------------------------

// A solver restored from the state of another after k iterations continues with the same bits:
// the state is everything the iteration reads (line-search and scheduled z-steps alike).
TEST(SlBamm, RestoredStateContinuesBitForBit) {
  const BilevelToy toy(9);
  for (auto z_step : {SlBammOptions::ZStep::kLineSearch, SlBammOptions::ZStep::kScheduled}) {
    SlBammOptions o;
    o.z_step = z_step;
    o.z_lr_max = 1.0;
    SlBamm straight(toy, o), first(toy, o);
    for (int k = 0; k < 40; ++k) straight.step(false);
    for (int k = 0; k < 17; ++k) first.step(false);
    SlBamm resumed(toy, o);
    resumed.restore(first.state());
    EXPECT_EQ(resumed.iterations(), 17);
    SlBammStats b;
    for (int k = 17; k < 40; ++k) b = resumed.step(true);
    EXPECT_TRUE(straight.x() == resumed.x());
    EXPECT_TRUE(straight.y() == resumed.y());
    EXPECT_TRUE(straight.z() == resumed.z());
    EXPECT_EQ(resumed.iterations(), 40);
    EXPECT_EQ(b.mu, straight.mu(39));
  }
  SlBamm s(toy, {});
  SlBammState bad = s.state();
  bad.z.pop_back();
  EXPECT_THROW(s.restore(bad), Error);
}

// A problem of three blocks whose parts of F are given (everything else zero).
class ThreeParts : public BilevelProblem {
 public:
  explicit ThreeParts(std::vector<double> F) : F_(std::move(F)) {}
  int64_t dim_x() const override { return 1; }
  int64_t dim_y() const override { return 1; }
  void init(double* x, double* y) const override { *x = *y = 0; }
  int64_t blocks() const override { return 3; }
  std::vector<int64_t> owned_blocks() const override { return {0, 1, 2}; }
  BilevelValues block_values(int64_t b, const double*, const double*) const override {
    return {F_[b], 0.0};
  }
  void block_grad_y(int64_t, Blend, const double*, const double*, double* g) const override {
    *g = 0;
  }
  void block_hvp_yy(int64_t, Blend, const double*, const double*, const double*,
                    double* Hv) const override {
    *Hv = 0;
  }
  void grad_x(Blend, const double*, const double*, double* g) const override { *g = 0; }
  void mixed_xy(Blend, const double*, const double*, const double*, double* o) const override {
    *o = 0;
  }

 private:
  std::vector<double> F_;
};

// The exact reduction adds the block parts exactly and rounds once: 1 + 2^-53 + 2^-53 is the
// double after 1, where float64 additions in block order round twice back to 1. Parts beyond
// ±2^31 (or non-finite) are an error that names the quantity and the block.
TEST(SlBamm, ExactReductionSumsBlocksExactlyAndRefusesPartsOutOfRange) {
  const double tiny = std::ldexp(1.0, -53);
  const ThreeParts p({1.0, tiny, tiny});
  SlBammOptions o;
  EXPECT_EQ(SlBamm(p, o).step().F, 1.0 + 2 * tiny);
  o.reduce = SlBammOptions::Reduce::kFloat;
  EXPECT_EQ(SlBamm(p, o).step().F, 1.0);
  o.reduce = SlBammOptions::Reduce::kExact;
  for (double bad : {3e9, std::nan("")}) {
    const ThreeParts q({1.0, bad, 0.0});
    try {
      SlBamm(q, o).step();
      ADD_FAILURE() << "no error for " << bad;
    } catch (const SlBammRangeError& e) {
      EXPECT_NE(std::string(e.what()).find("element 0 of the values F, f (block 1) is "),
                std::string::npos)
          << e.what();
      EXPECT_NE(std::string(e.what()).find("the iteration diverged"), std::string::npos);
    }
  }
}

TEST(BilevelCheckpoint, RoundTripsExactlyAndNamesTheBadField) {
  const std::string dir = ::testing::TempDir() + "/bilevel_ckpt_test";
  const std::string path = dir + "/a.h5";
  BilevelCheckpoint c;
  c.solver = {12, {0.1, -2.5, 1e-300}, {3.0, 1.0 / 3.0}, {-0.0, 7e10}};
  c.config_yaml = "algo: slbamm\n";
  c.world_size = 2;
  write_bilevel_checkpoint(path, c);
  const BilevelCheckpoint r = read_bilevel_checkpoint(path, 3, 2);
  EXPECT_EQ(r.solver.step, 12);
  EXPECT_TRUE(r.solver.x == c.solver.x && r.solver.y == c.solver.y && r.solver.z == c.solver.z);
  EXPECT_EQ(r.config_yaml, c.config_yaml);
  EXPECT_EQ(r.world_size, 2);
  EXPECT_EQ(h5::File::open_read(path).get_attr_string("/", "kind"), "slbamm");

  auto message = [&](const std::string& p, int64_t dx, int64_t dy) {
    try {
      read_bilevel_checkpoint(p, dx, dy);
    } catch (const UsageError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(path, 4, 2).find("checkpoint " + path + ": /slbamm/x: holds 3 values"),
            std::string::npos);
  EXPECT_NE(message(path, 3, 5).find("/slbamm/y: holds 2 values"), std::string::npos);
  c.solver.z[1] = std::nan("");
  write_bilevel_checkpoint(dir + "/nan.h5", c);
  EXPECT_NE(message(dir + "/nan.h5", 3, 2).find("/slbamm/z[1]: is not finite"), std::string::npos);
  EXPECT_NE(message(dir + "/missing.h5", 3, 2).find("checkpoint " + dir + "/missing.h5: cannot"),
            std::string::npos)
      << message(dir + "/missing.h5", 3, 2);
  {
    h5::File f = h5::File::create(dir + "/plain.h5");
    f.set_attr("/", "format_version", 1);
  }
  EXPECT_NE(message(dir + "/plain.h5", 3, 2).find("kind: absent: not an sl-BAMM checkpoint"),
            std::string::npos);
}

}  // namespace
}  // namespace mt
