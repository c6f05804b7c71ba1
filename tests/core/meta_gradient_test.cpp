// Meta-gradient correctness: exact MAML against finite differences of the whole inner loop,
// bit-identity of the trajectory modes, truncation, and the gradient-evaluation counts.
#include "core/meta_gradient.h"

#include <gtest/gtest.h>

#include "tests/support/episodes.h"
#include "tests/support/grad_check.h"

namespace mt {
namespace {

using testing::Vec;

// Exact MAML through r inner steps of a small Conv-4 (with batch norm) against central
// differences of the meta-objective L_Q(φ_r(θ)), float64. Tolerance 1e-6 relative: see
// tests/support/grad_check.h for the error budget.
void check_against_finite_differences(const Conv4Spec& spec, int r, double lr, int shots,
                                      int queries, uint64_t seed) {
  auto net = make_conv4<double>(spec);
  const auto ep = testing::noise_episode<double>(spec.input, spec.ways, shots, queries, seed);
  InnerLoop inner;
  inner.steps = r;
  inner.lr = lr;
  MetaGradient<double> mg(*net, inner);
  auto s = mg.make_scratch();
  Vec theta(net->layout().total()), g_fo(theta.size()), g_exact(theta.size());
  net->init(theta.data(), seed);
  mg.compute(theta.data(), ep, g_fo.data(), g_exact.data(), s);
  const Vec fd = testing::fd_gradient(
      [&](const Vec& t) { return mg.adapt_and_evaluate(t.data(), ep, r, s).loss; }, theta);
  EXPECT_LT(testing::rel_err(g_exact, fd), 1e-6);
  // The first-order gradient is a different vector: the check above is not vacuous.
  EXPECT_GT(testing::rel_err(g_fo, fd), 1e-3);
}

TEST(MetaGradient, ExactMatchesFiniteDifferencesThroughThreeInnerSteps) {
  check_against_finite_differences({{2, 16, 16}, 3, 3, Conv4Pool::kMax}, 3, 0.3, 2, 3, 1);
}

TEST(MetaGradient, StrideVariantExactMatchesFiniteDifferences) {
  check_against_finite_differences({{1, 12, 12}, 3, 2, Conv4Pool::kStride}, 2, 0.5, 2, 2, 2);
}

// Runs one task with the given trajectory mode and truncation; returns (g_fo, g_exact, evals).
struct ModeRun {
  std::vector<float> g_fo, g_exact;
  int64_t evals;
};
ModeRun run_mode(TrajectoryMode mode, int r, int truncate) {
  auto net = make_conv4<float>({{1, 28, 28}, 8, 5, Conv4Pool::kMax});
  const auto ep = testing::noise_episode<float>({1, 28, 28}, 5, 1, 3, 7);
  InnerLoop inner;
  inner.steps = r;
  inner.lr = 0.4;
  inner.trajectory = mode;
  inner.truncate = truncate;
  MetaGradient<float> mg(*net, inner);
  auto s = mg.make_scratch();
  std::vector<float> theta(net->layout().total());
  net->init(theta.data(), 3);
  ModeRun out{std::vector<float>(theta.size()), std::vector<float>(theta.size()), 0};
  out.evals = mg.compute(theta.data(), ep, out.g_fo.data(), out.g_exact.data(), s).grad_evals;
  EXPECT_EQ(out.evals, first_order_cost(inner) + exact_path_cost(inner));
  return out;
}

TEST(MetaGradient, TrajectoryModesAreBitIdentical) {
  const int r = 5;
  const ModeRun store = run_mode({TrajectoryMode::kStore, 1}, r, -1);
  for (TrajectoryMode mode : {TrajectoryMode{TrajectoryMode::kRecompute, 1},
                              TrajectoryMode{TrajectoryMode::kCheckpoint, 1},
                              TrajectoryMode{TrajectoryMode::kCheckpoint, 2},
                              TrajectoryMode{TrajectoryMode::kCheckpoint, 3},
                              TrajectoryMode{TrajectoryMode::kCheckpoint, 7}}) {
    const ModeRun other = run_mode(mode, r, -1);
    EXPECT_EQ(other.g_fo, store.g_fo);
    EXPECT_EQ(other.g_exact, store.g_exact) << "mode " << mode.kind << ":" << mode.every;
  }
  EXPECT_NE(store.g_exact, store.g_fo);
}

TEST(MetaGradient, TruncationZeroIsFomamlAndTruncationChangesTheGradient) {
  const ModeRun k0 = run_mode({TrajectoryMode::kStore, 1}, 4, 0);
  EXPECT_EQ(k0.g_exact, k0.g_fo);
  const ModeRun k2 = run_mode({TrajectoryMode::kRecompute, 1}, 4, 2);
  const ModeRun k2_store = run_mode({TrajectoryMode::kStore, 1}, 4, 2);
  const ModeRun full = run_mode({TrajectoryMode::kStore, 1}, 4, -1);
  EXPECT_EQ(k2.g_exact, k2_store.g_exact);
  EXPECT_NE(k2.g_exact, full.g_exact);
  EXPECT_NE(k2.g_exact, k2.g_fo);
}

TEST(MetaGradient, GradientEvaluationCounts) {
  InnerLoop inner;
  inner.steps = 10;
  EXPECT_EQ(first_order_cost(inner), 11);
  EXPECT_EQ(exact_path_cost(inner), 10);  // store: one HVP per step
  inner.trajectory = {TrajectoryMode::kRecompute, 1};
  EXPECT_EQ(exact_path_cost(inner), 10 * 11 / 2);  // the UFOM paper's r(r+1)/2
  inner.trajectory = {TrajectoryMode::kCheckpoint, 4};
  EXPECT_EQ(exact_path_cost(inner), 10 + (0 + 1 + 2 + 3) * 2 + (0 + 1));
  inner.truncate = 3;  // j = 7, 8, 9 rebuild 3, 0, 1 steps from φ_4, φ_8, φ_8; plus 3 HVPs
  EXPECT_EQ(exact_path_cost(inner), 3 + (3 + 0 + 1));
}

TEST(MetaGradient, AdjointClipBoundsTheExactGradient) {
  auto net = make_conv4<float>({{1, 28, 28}, 8, 5, Conv4Pool::kMax});
  const auto ep = testing::noise_episode<float>({1, 28, 28}, 5, 1, 3, 7);
  InnerLoop inner;
  inner.steps = 2;
  inner.adjoint_clip = 1e-3;
  MetaGradient<float> mg(*net, inner);
  auto s = mg.make_scratch();
  std::vector<float> theta(net->layout().total()), g_fo(theta.size()), g_exact(theta.size());
  net->init(theta.data(), 3);
  mg.compute(theta.data(), ep, g_fo.data(), g_exact.data(), s);
  float max_abs = 0, max_fo = 0;
  for (size_t i = 0; i < theta.size(); ++i) {
    max_abs = std::max(max_abs, std::abs(g_exact[i]));
    max_fo = std::max(max_fo, std::abs(g_fo[i]));
  }
  EXPECT_LE(max_abs, 1e-3f);
  EXPECT_GT(max_fo, 1e-3f);  // clipping was active
}

}  // namespace
}  // namespace mt
