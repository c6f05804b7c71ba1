// The first-order bias probe (core/bias_probe.h): its sums and report against per-task gradients
// computed directly, q = 1 giving UFOM no error at all, UFOM's error averaging to zero over
// independent probes while FOMAML's does not, and the rank combination of its sums (float, and
// exact with the same bits for any number of ranks). float64.
#include "core/bias_probe.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "tests/support/episodes.h"

namespace mt {
namespace {

// Softmax regression with 3 inner steps of size 1: g_E differs from g_F through the curvature.
struct Problem {
  std::unique_ptr<Sequential<double>> net = testing::softmax_regression<double>(3, 3);
  InnerLoop inner{3, 1.0, {}, -1, 0};
  MetaGradient<double> mg{*net, inner};
  int64_t d = net->layout().total();
  std::vector<double> theta = std::vector<double>(d);
  Problem() { net->init(theta.data(), 1); }
  MetaStep<double>::EpisodeFn episodes() const {
    return [](int64_t t, Episode<double>& ep) {
      ep = testing::gaussian_episode<double>(3, 3, 2, 5, 7, static_cast<uint64_t>(t));
    };
  }
};

std::vector<int64_t> range(int64_t lo, int64_t hi) {
  std::vector<int64_t> v;
  for (int64_t t = lo; t < hi; ++t) v.push_back(t);
  return v;
}

TEST(BiasProbe, ReportMatchesPerTaskGradientsComputedDirectly) {
  Problem p;
  const int k = 12;
  BiasProbe<double> probe(p.mg, 3, 2);
  BiasSums<double> sums;
  sums.reset(p.d);
  probe.run(p.theta.data(), 0, range(0, k), p.episodes(), 0.0, sums);
  const BiasReport r = bias_report(sums, false);

  // Direct: e_t = g_F − g_E per task, its mean, and the unbiased trace of its covariance.
  std::vector<std::vector<double>> e(k, std::vector<double>(p.d));
  std::vector<double> mean(p.d, 0), mean_exact(p.d, 0);
  auto scratch = p.mg.make_scratch();
  for (int t = 0; t < k; ++t) {
    Episode<double> ep;
    p.episodes()(t, ep);
    std::vector<double> gf(p.d), ge(p.d);
    p.mg.compute(p.theta.data(), ep, gf.data(), ge.data(), scratch);
    for (int64_t i = 0; i < p.d; ++i) {
      e[t][i] = gf[i] - ge[i];
      mean[i] += e[t][i] / k;
      mean_exact[i] += ge[i] / k;
    }
  }
  double bias2 = 0, trace = 0, exact2 = 0;
  for (int64_t i = 0; i < p.d; ++i) {
    bias2 += mean[i] * mean[i];
    exact2 += mean_exact[i] * mean_exact[i];
    for (int t = 0; t < k; ++t) trace += (e[t][i] - mean[i]) * (e[t][i] - mean[i]) / (k - 1);
  }
  // Same arithmetic in another order: agreement to 1e-12 relative (float64 rounding ~1e-16
  // per operation over a few hundred operations).
  EXPECT_NEAR(r.fo, std::sqrt(bias2), 1e-12 * std::sqrt(bias2));
  EXPECT_NEAR(r.fo_noise, std::sqrt(trace / k), 1e-12 * std::sqrt(trace / k));
  EXPECT_NEAR(r.exact_norm, std::sqrt(exact2), 1e-12 * std::sqrt(exact2));
  EXPECT_EQ(r.tasks, k);
  EXPECT_TRUE(std::isnan(r.ufom));       // not measured without a q
  EXPECT_GT(r.fo, 0.05 * r.exact_norm);  // the problem really has a first-order error
}

TEST(BiasProbe, QOneLeavesUfomNoErrorAtAll) {
  Problem p;
  BiasProbe<double> probe(p.mg, 3, 1);
  BiasSums<double> sums;
  sums.reset(p.d);
  probe.run(p.theta.data(), 5, range(0, 6), p.episodes(), 1.0, sums);
  const BiasReport r = bias_report(sums, true);
  EXPECT_EQ(r.ufom, 0.0);
  EXPECT_EQ(r.ufom_noise, 0.0);
  EXPECT_GT(r.fo, 0.0);
}

// Over many probes of the same tasks (only the coins change with the step), UFOM's mean error
// goes to zero while FOMAML's stays put: the "zero in expectation" vs "does not vanish".
TEST(BiasProbe, UfomErrorAveragesToZeroAndFomamlErrorDoesNot) {
  Problem p;
  const int k = 8, probes = 300;
  const double q = 0.25;
  BiasProbe<double> probe(p.mg, 11, 2);
  std::vector<double> ufom_sum(p.d, 0), fo(p.d, 0), spread(p.d, 0);
  for (int s = 0; s < probes; ++s) {
    BiasSums<double> sums;
    sums.reset(p.d);
    probe.run(p.theta.data(), s, range(0, k), p.episodes(), q, sums);
    for (int64_t i = 0; i < p.d; ++i) {
      ufom_sum[i] += sums.ufom[i] / k;
      fo[i] = sums.fo[i] / k;  // the same every probe: FOMAML's error is deterministic
    }
  }
  // Per coordinate, the probe's UFOM error is (1/K) Σ_t c̄_t e_t with independent c̄_t of mean 0
  // and variance (1 − q)/(q M): over P probes the mean has sd sqrt((1−q)/(qMP) Σ_t e_ti²)/K.
  BiasSums<double> once;
  once.reset(p.d);
  probe.run(p.theta.data(), 0, range(0, k), p.episodes(), 0.0, once);
  double fo_norm = 0, sd_norm = 0;
  for (int64_t i = 0; i < p.d; ++i) {
    double sq = 0;
    for (int t = 0; t < k; ++t) {
      Episode<double> ep;
      p.episodes()(t, ep);
      auto scratch = p.mg.make_scratch();
      std::vector<double> gf(p.d), ge(p.d);
      p.mg.compute(p.theta.data(), ep, gf.data(), ge.data(), scratch);
      sq += (gf[i] - ge[i]) * (gf[i] - ge[i]);
    }
    const double sd = std::sqrt((1 - q) / (q * BiasProbe<double>::kCoinDraws * probes) * sq) / k;
    // 4.5 sd per coordinate: with 12 coordinates a false failure has probability < 1e-4.
    EXPECT_LE(std::abs(ufom_sum[i] / probes), 4.5 * sd) << "coordinate " << i;
    fo_norm += fo[i] * fo[i];
    sd_norm += sd * sd;
  }
  // FOMAML's error, the same at every probe, is hundreds of standard deviations from zero.
  EXPECT_GT(std::sqrt(fo_norm), 100 * std::sqrt(sd_norm));
}

// Ranks sum their probe sums: splitting the tasks over two "ranks" and adding the packed
// buffers gives the single-rank sums (to rounding: the additions happen in another order).
TEST(BiasProbe, SumsOfTwoRanksAddUpToOneRank) {
  Problem p;
  BiasProbe<double> probe(p.mg, 3, 1);
  BiasSums<double> all, a, b;
  all.reset(p.d);
  a.reset(p.d);
  b.reset(p.d);
  probe.run(p.theta.data(), 2, range(0, 10), p.episodes(), 0.5, all);
  probe.run(p.theta.data(), 2, {0, 2, 4, 6, 8}, p.episodes(), 0.5, a);
  probe.run(p.theta.data(), 2, {1, 3, 5, 7, 9}, p.episodes(), 0.5, b);
  std::vector<double> pa = a.pack(), pb = b.pack();
  for (size_t i = 0; i < pa.size(); ++i) pa[i] += pb[i];
  BiasSums<double> combined;
  combined.reset(p.d);
  combined.unpack(pa);
  const BiasReport r1 = bias_report(all, true), r2 = bias_report(combined, true);
  EXPECT_NEAR(r1.fo, r2.fo, 1e-12 * r1.fo);
  EXPECT_NEAR(r1.fo_noise, r2.fo_noise, 1e-12 * r1.fo_noise);
  EXPECT_NEAR(r1.ufom, r2.ufom, 1e-12 * r1.ufom);
  EXPECT_NEAR(r1.ufom_noise, r2.ufom_noise, 1e-12 * r1.ufom_noise);
  EXPECT_EQ(r2.tasks, 10);
}

// The exact reduction: one rank, or three ranks with interleaved tasks whose packed int64 buffers
// are added, give the same bits of every sum and of the report; and the float sums to rounding.
TEST(BiasProbe, ExactSumsHaveTheSameBitsOnAnyNumberOfRanks) {
  Problem p;
  BiasProbe<double> probe(p.mg, 3, 1);
  auto exact_sums = [&](int ranks) {
    std::vector<int64_t> total;
    for (int r = 0; r < ranks; ++r) {
      BiasSums<double> s;
      s.reset_exact(p.d, 100, 10);
      std::vector<int64_t> mine;
      for (int64_t t = 100 + r; t < 110; t += ranks) mine.push_back(t);
      probe.run(p.theta.data(), 2, mine, p.episodes(), 0.5, s);
      const std::vector<int64_t> packed = s.pack_exact();
      if (total.empty()) total.assign(packed.size(), 0);
      for (size_t i = 0; i < packed.size(); ++i) total[i] += packed[i];
    }
    BiasSums<double> s;
    s.reset_exact(p.d, 100, 10);
    s.unpack_exact(total);
    return s;
  };
  const BiasSums<double> one = exact_sums(1), three = exact_sums(3);
  EXPECT_TRUE(one.fo == three.fo && one.ufom == three.ufom && one.exact == three.exact);
  EXPECT_EQ(std::memcmp(&one.fo_sq, &three.fo_sq, sizeof(double)), 0);
  EXPECT_EQ(std::memcmp(&one.ufom_sq, &three.ufom_sq, sizeof(double)), 0);
  EXPECT_EQ(three.tasks, 10);
  const BiasReport r1 = bias_report(one, true), r3 = bias_report(three, true);
  EXPECT_TRUE(r1.fo == r3.fo && r1.fo_noise == r3.fo_noise && r1.ufom == r3.ufom &&
              r1.ufom_noise == r3.ufom_noise && r1.exact_norm == r3.exact_norm);

  BiasSums<double> plain;
  plain.reset(p.d);
  probe.run(p.theta.data(), 2, range(100, 110), p.episodes(), 0.5, plain);
  const BiasReport rf = bias_report(plain, true);
  EXPECT_NEAR(rf.fo, r1.fo, 1e-12 * r1.fo);
  EXPECT_NEAR(rf.ufom_noise, r1.ufom_noise, 1e-12 * r1.ufom_noise);

  // A task run on no rank, or on two, is refused.
  BiasSums<double> s;
  s.reset_exact(p.d, 100, 10);
  std::vector<int64_t> missing = s.pack_exact();
  EXPECT_THROW(s.unpack_exact(missing), Error);
}

}  // namespace
}  // namespace mt
