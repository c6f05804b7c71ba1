// The exact reduction's arithmetic (core/exact_sum.h) on the host: conversions exact or rounded
// to nearest as stated, limbs that round-trip, a final rounding that is correctly rounded, sums
// with the same bits for any split of the tasks over "ranks" and any order, within the stated
// bound of the exact sum on adversarial inputs; refused elements named; MetaStep's exact mode
// equal to its float mode where float sums are exact, and its error naming the tensor.
#include "core/exact_sum.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "core/batched_model_cpu.h"
#include "core/meta_step.h"
#include "tests/support/episodes.h"

namespace mt {
namespace {

Fixed fixed(float g) {
  Fixed v = 0;
  EXPECT_TRUE(to_fixed(g, &v)) << g;
  return v;
}
// r·2^64 for any float with 2^-41 ≤ |r| < 2^63 (no range check), or 0.
Fixed exact_fixed(float r) {
  if (r == 0) return 0;
  int e;
  const auto m = static_cast<int64_t>(std::ldexp(std::frexp(r, &e), 24));  // r = m·2^(e−24)
  const int shift = e - 24 + kFixedFracBits;
  EXPECT_GE(shift, 0) << r;
  return static_cast<Fixed>(m) * (static_cast<Fixed>(1) << shift);
}
Fixed pow2_fixed(int e) { return static_cast<Fixed>(1) << (e + kFixedFracBits); }  // 2^e

TEST(ExactSum, ConversionIsExactDownTo2PowMinus41) {
  std::mt19937 rng(1);
  for (int i = 0; i < 20000; ++i) {
    const float g = std::ldexp(static_cast<float>(rng() % (1u << 24)) / (1 << 24),
                               static_cast<int>(rng() % 72) - 40) *
                    (rng() & 1 ? 1.0f : -1.0f);
    if (g != 0 && std::fabs(g) < std::ldexp(1.0f, -41)) continue;
    // A fixed value of ≤ 24 significant bits converts back exactly, in float and in double.
    EXPECT_EQ(fixed_to_real<float>(fixed(g)), g);
    EXPECT_EQ(fixed_to_real<double>(fixed(g)), static_cast<double>(g));
  }
  EXPECT_EQ(fixed(1.0f), pow2_fixed(0));
  EXPECT_EQ(fixed(-0.0f), 0);
  EXPECT_EQ(fixed(std::ldexp(1.0f, -41)), static_cast<Fixed>(1) << 23);
}

TEST(ExactSum, SmallValuesRoundToNearestEven) {
  // units of 2^-64: 2^-66 = ¼ → 0, 3·2^-66 = ¾ → 1, 2^-65 = ½ → 0 (even), 3·2^-65 = 1½ → 2.
  EXPECT_EQ(fixed(std::ldexp(1.0f, -66)), 0);
  EXPECT_EQ(fixed(std::ldexp(3.0f, -66)), 1);
  EXPECT_EQ(fixed(std::ldexp(1.0f, -65)), 0);
  EXPECT_EQ(fixed(std::ldexp(3.0f, -65)), 2);
  EXPECT_EQ(fixed(-std::ldexp(3.0f, -65)), -2);
  EXPECT_EQ(fixed(std::ldexp(5.0f, -66)), 1);  // 1¼ → 1
  EXPECT_EQ(fixed(std::numeric_limits<float>::denorm_min()), 0);
  // Every float rounds to within ½ of its exact value.
  std::mt19937 rng(2);
  for (int i = 0; i < 20000; ++i) {
    const float g = std::ldexp(1.0f + static_cast<float>(rng() % (1u << 23)) / (1 << 23),
                               -static_cast<int>(rng() % 40) - 42);
    const long double exact = std::ldexp(static_cast<long double>(g), kFixedFracBits);
    EXPECT_LE(std::fabs(exact - static_cast<long double>(fixed(g))), 0.5L) << g;
  }
}

TEST(ExactSum, RangeIsBelow2Pow31AndNonFiniteIsRefused) {
  Fixed v = 7;
  const float largest = std::nextafter(static_cast<float>(kFixedRange), 0.0f);
  EXPECT_TRUE(to_fixed(largest, &v));
  EXPECT_EQ(v, static_cast<Fixed>(16777215) << (7 + 64));  // (2^24 − 1)·2^7
  EXPECT_TRUE(to_fixed(-largest, &v));
  for (float bad : {static_cast<float>(kFixedRange), -static_cast<float>(kFixedRange), 1e30f,
                    std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                    std::numeric_limits<float>::quiet_NaN()}) {
    v = 7;
    EXPECT_FALSE(to_fixed(bad, &v)) << bad;
    EXPECT_EQ(v, 7) << "untouched";
  }
  double w = std::nextafter(kFixedRange, 0.0);
  EXPECT_TRUE(to_fixed(w, &v));
  EXPECT_FALSE(to_fixed(kFixedRange, &v));
}

TEST(ExactSum, LimbsRoundTripAndAddAsIntegers) {
  const Fixed big = static_cast<Fixed>(kExactMaxTasks) * (pow2_fixed(31) - 1);  // the largest sum
  std::vector<Fixed> values = {0, 1, -1, big, -big, pow2_fixed(0), -pow2_fixed(-20) - 3};
  std::mt19937_64 rng(3);
  for (int i = 0; i < 1000; ++i)
    // A signed 64-bit value times 2^50 (a product: << of a negative value is undefined).
    values.push_back(
        (static_cast<Fixed>(static_cast<int64_t>(rng())) * (static_cast<Fixed>(1) << 50)) ^ rng());
  for (Fixed v : values) {
    int64_t lo, hi;
    split_limbs(v, &lo, &hi);
    EXPECT_GE(lo, 0);
    EXPECT_LT(lo, int64_t{1} << kFixedLoBits);
    EXPECT_TRUE(join_limbs(lo, hi) == v);
  }
  // Limb sums of many ranks join to the sum.
  Fixed total = 0;
  int64_t lo_sum = 0, hi_sum = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    const Fixed v = values[i] / 4096;  // keeps the total in range
    total += v;
    int64_t lo, hi;
    split_limbs(v, &lo, &hi);
    lo_sum += lo;
    hi_sum += hi;
  }
  EXPECT_TRUE(join_limbs(lo_sum, hi_sum) == total);
}

// |v − fixed(r)| for a float r ≥ 2^-41 in magnitude (exact), in units of 2^-64.
UFixed distance(Fixed v, float r) {
  const Fixed d = v - exact_fixed(r);
  return d < 0 ? UFixed(0) - static_cast<UFixed>(d) : static_cast<UFixed>(d);
}

TEST(ExactSum, FinalConversionIsCorrectlyRounded) {
  // Ties go to even: 2^24 + 1 → 2^24, 2^24 + 3 → 2^24 + 4 (in units of 1, i.e. ·2^64).
  EXPECT_EQ(fixed_to_real<float>(pow2_fixed(24) + pow2_fixed(0)), 16777216.0f);
  EXPECT_EQ(fixed_to_real<float>(pow2_fixed(24) + 3 * pow2_fixed(0)), 16777220.0f);
  EXPECT_EQ(fixed_to_real<float>(pow2_fixed(24) + pow2_fixed(0) + 1), 16777218.0f);  // past tie
  EXPECT_EQ(fixed_to_real<float>(1), std::ldexp(1.0f, -64));
  EXPECT_EQ(fixed_to_real<float>(-(pow2_fixed(25) - 1)), -33554432.0f);  // carry into exponent
  std::mt19937_64 rng(4);
  for (int i = 0; i < 20000; ++i) {
    const int bits = 26 + static_cast<int>(rng() % 88);  // 2^(bits−1) ≤ |v| < 2^bits
    const Fixed v = ((static_cast<Fixed>(rng() >> 1) << 64 | rng()) >> (127 - bits)) |
                    (static_cast<Fixed>(1) << (bits - 1));
    const Fixed s = rng() & 1 ? v : -v;
    const float r = fixed_to_real<float>(s);
    const UFixed here = distance(s, r);
    EXPECT_LE(here, distance(s, std::nextafter(r, INFINITY)));
    EXPECT_LE(here, distance(s, std::nextafter(r, -INFINITY)));
  }
}

// B tasks of d elements in the batched layout of `layout`.
struct Tasks {
  ParamLayout layout;
  int count = 0;
  std::vector<float> x;  // batched
  float& at(int t, int64_t j) { return x[BatchedLayout(layout, count).index(t, j)]; }
};

// Adversarial values: magnitudes 2^-70 … 2^30, zeros, cancelling pairs, the largest admitted.
Tasks adversarial(int tasks, uint64_t seed) {
  Tasks p;
  p.layout.add("block1.conv.weight", {7, 3});
  p.layout.add("head.bias", {5});
  p.count = tasks;
  const int64_t d = p.layout.total();
  p.x.assign(static_cast<size_t>(tasks) * d, 0.0f);
  std::mt19937_64 rng(seed);
  const float largest = std::nextafter(static_cast<float>(kFixedRange), 0.0f);
  for (int t = 0; t < tasks; ++t)
    for (int64_t j = 0; j < d; ++j) {
      float g;
      switch (j % 6) {
        case 0:
          g = 0;
          break;
        case 1:
          g = t % 3 == 0 ? 1e8f : t % 3 == 1 ? 1.0f : -1e8f;
          break;  // 1e8 + 1 − 1e8
        case 2:
          g = (t % 2 ? -1 : 1) * largest;
          break;
        default:
          g = std::ldexp(1.0f + static_cast<float>(rng() % 4096) / 4096,
                         static_cast<int>(rng() % 101) - 70) *
              (rng() & 1 ? 1.0f : -1.0f);
      }
      p.at(t, j) = g;
    }
  return p;
}

// The exact sum of the tasks `ids` of p (host ops, in the order given).
std::vector<Fixed> exact_sum(const Tasks& p, const std::vector<int>& ids, int threads) {
  const BatchedLayout all(p.layout, p.count);
  std::vector<float> sub(static_cast<size_t>(ids.size()) * p.layout.total());
  host_vec_ops<float>().gather(all, p.x.data(), ids, sub.data());
  std::vector<Fixed> acc(p.layout.total(), 0);
  const auto ops = make_host_exact_sum_ops<float>(threads);
  EXPECT_FALSE(
      ops->sum_tasks(all.with_tasks(static_cast<int>(ids.size())), sub.data(), acc.data()));
  return acc;
}

// The reduction over "ranks": each part's sum split into limbs, limbs summed as int64, joined.
std::vector<float> reduce(const Tasks& p, const std::vector<std::vector<int>>& parts) {
  const int64_t d = p.layout.total();
  std::vector<int64_t> lo(d, 0), hi(d, 0);
  for (const auto& part : parts) {
    const std::vector<Fixed> s = exact_sum(p, part, 1 + static_cast<int>(part.size() % 3));
    for (int64_t j = 0; j < d; ++j) {
      int64_t l, h;
      split_limbs(s[j], &l, &h);
      lo[j] += l;
      hi[j] += h;
    }
  }
  std::vector<float> out(d);
  for (int64_t j = 0; j < d; ++j) out[j] = fixed_to_real<float>(join_limbs(lo[j], hi[j]));
  return out;
}

TEST(ExactSum, SameBitsForAnySplitAndOrder) {
  constexpr int kB = 97;
  const Tasks p = adversarial(kB, 5);
  std::vector<int> all(kB);
  std::iota(all.begin(), all.end(), 0);
  const std::vector<float> one = reduce(p, {all});
  std::mt19937 rng(6);
  for (int ranks : {2, 3, 4, 7, 64}) {
    std::vector<int> order = all;
    std::shuffle(order.begin(), order.end(), rng);
    std::vector<std::vector<int>> parts(ranks);
    for (int i = 0; i < kB; ++i) parts[(i * 5 + i / 7) % ranks].push_back(order[i]);
    parts.erase(std::remove_if(parts.begin(), parts.end(), [](auto& v) { return v.empty(); }),
                parts.end());
    const std::vector<float> r = reduce(p, parts);
    EXPECT_EQ(0, std::memcmp(r.data(), one.data(), r.size() * sizeof(float))) << ranks;
  }
  // 1e8 + 1 − 1e8 (repeated): exactly the count of ones, where float sums lose them.
  const int ones = (kB + 1) / 3;  // tasks t ≡ 1 (mod 3)
  float plain = 0;
  for (int t = 0; t < kB; ++t) plain += p.x[BatchedLayout(p.layout, kB).index(t, 1)];
  EXPECT_EQ(one[1], 1e8f * ((kB + 2) / 3 - kB / 3) + ones);
  EXPECT_NE(plain, one[1]) << "the float sum happened to be exact; pick harder inputs";
  EXPECT_EQ(one[0], 0.0f);
  EXPECT_EQ(one[2], std::nextafter(static_cast<float>(kFixedRange), 0.0f));  // 49 − 48 copies
}

TEST(ExactSum, WithinTheStatedBoundOfTheExactSum) {
  // Reference: every element above 2^-41 converts exactly, so their sum is exact in __int128;
  // the smaller ones are summed in long double (64-bit significand: errors far below 2^-65).
  for (int tasks : {1, 6, 250}) {
    const Tasks p = adversarial(tasks, 7 + tasks);
    std::vector<int> all(tasks);
    std::iota(all.begin(), all.end(), 0);
    const std::vector<float> got = reduce(p, {all});
    const BatchedLayout l(p.layout, tasks);
    for (int64_t j = 0; j < p.layout.total(); ++j) {
      Fixed big = 0;
      long double tiny = 0, dsum = 0, abs_sum = 0;
      for (int t = 0; t < tasks; ++t) {
        const float g = p.x[l.index(t, j)];
        dsum = static_cast<double>(dsum) + static_cast<double>(g);  // the float64 sum
        abs_sum += std::fabs(g);
        if (std::fabs(g) >= std::ldexp(1.0f, -41))
          big += fixed(g);
        else
          tiny += g;
      }
      // |got − S| = |(fixed(got) − big)·2^-64 − tiny|; fixed(got) is exact unless got is tiny.
      const float r = got[j];
      long double err;
      if (std::fabs(r) >= std::ldexp(1.0f, -41) || r == 0)
        err = std::fabs(std::ldexp(static_cast<long double>(exact_fixed(r) - big), -64) - tiny);
      else
        err = std::fabs(static_cast<long double>(r) - (std::ldexp((long double)big, -64) + tiny));
      const long double half_ulp =
          r == 0 ? 0.0L : 0.5L * (std::nextafter(std::fabs(r), INFINITY) - std::fabs(r));
      EXPECT_LE(err, half_ulp + tasks * std::ldexp(1.0L, -65) + std::ldexp(1.0L, -100))
          << "element " << j << " of " << tasks << " tasks";
      // And within that bound plus the float64 sum's own error bound of the float64 sum.
      EXPECT_LE(std::fabs(static_cast<long double>(r) - dsum),
                half_ulp + tasks * std::ldexp(1.0L, -65) + tasks * std::ldexp(abs_sum, -53));
    }
  }
}

TEST(ExactSum, ManyTasksOfTheLargestValueStayInRange) {
  // kExactMaxTasks tasks of the largest admitted value on one "rank": the accumulator and its
  // high limb stay in range, and the int64 limb sums over ranks cannot overflow.
  const float largest = std::nextafter(static_cast<float>(kFixedRange), 0.0f);
  const Fixed sum = static_cast<Fixed>(kExactMaxTasks) * fixed(largest);
  int64_t lo, hi;
  split_limbs(sum, &lo, &hi);
  EXPECT_TRUE(join_limbs(lo, hi) == sum);
  EXPECT_LT(static_cast<long double>(hi) + kExactMaxRanks, std::ldexp(1.0L, 63));
  EXPECT_LT(static_cast<long double>(kExactMaxRanks) * std::ldexp(1.0L, kFixedLoBits),
            std::ldexp(1.0L, 63));
  EXPECT_EQ(fixed_to_real<double>(sum), static_cast<double>(kExactMaxTasks) * largest);
}

TEST(ExactSum, RefusedElementIsReportedWithItsTaskAndValue) {
  Tasks p = adversarial(4, 9);
  p.at(2, 23) = std::numeric_limits<float>::quiet_NaN();
  p.at(3, 23) = 3e9f;
  p.at(1, 24) = -1e10f;
  const auto ops = make_host_exact_sum_ops<float>(2);
  std::vector<Fixed> acc(p.layout.total(), 0);
  const FixedFault f = ops->sum_tasks(BatchedLayout(p.layout, 4), p.x.data(), acc.data());
  ASSERT_TRUE(f);
  EXPECT_EQ(f.index, 23);
  EXPECT_EQ(f.task, 2);
  EXPECT_TRUE(std::isnan(f.value));
}

// The CUDA kernel's body, exact_sum_tasks_element (one call per element j, as each GPU thread
// makes), run on the host: the same accumulators as the host ops bit for bit, and the same
// refused (element, task) as the first one the kernel's atomicMin would keep.
TEST(ExactSum, KernelBodyEqualsTheHostOpsBitForBit) {
  Tasks p = adversarial(5, 13);
  const BatchedLayout l(p.layout, 5);
  const LayoutArgs args = make_layout_args(l);
  const int64_t d = p.layout.total();
  std::vector<Fixed> host(d, 0), body(d, 0);
  for (int64_t j = 0; j < d; ++j) host[j] = body[j] = static_cast<Fixed>(j) * 12345 - 7;
  ASSERT_FALSE(make_host_exact_sum_ops<float>(2)->sum_tasks(l, p.x.data(), host.data()));
  for (int64_t j = 0; j < d; ++j)
    EXPECT_EQ(exact_sum_tasks_element(args, j, p.x.data(), body.data()), -1);
  EXPECT_TRUE(host == body);

  p.at(3, 17) = std::numeric_limits<float>::infinity();
  p.at(1, 17) = -4e9f;
  p.at(0, 30) = std::numeric_limits<float>::quiet_NaN();
  const FixedFault f = make_host_exact_sum_ops<float>(2)->sum_tasks(l, p.x.data(), host.data());
  int64_t first_j = -1;
  int first_t = -1;
  for (int64_t j = 0; j < d && first_j < 0; ++j) {
    const int t = exact_sum_tasks_element(args, j, p.x.data(), body.data());
    if (t >= 0) first_j = j, first_t = t;
  }
  ASSERT_TRUE(f);
  EXPECT_EQ(first_j, f.index);
  EXPECT_EQ(first_t, f.task);
}

// MetaStep in exact mode: a meta-batch split over "ranks" in any way gives the bits of the
// whole; and with inputs scaled so the gradient leaves the range, the error names the tensor.
struct SoftmaxProblem {
  std::unique_ptr<Sequential<float>> net = testing::softmax_regression<float>(6, 3);
  std::vector<float> theta;
  float scale = 1;
  SoftmaxProblem() {
    theta.resize(net->layout().total());
    net->init(theta.data(), 3);
  }
  MetaStep<float>::EpisodeFn episodes() const {
    return [this](int64_t t, Episode<float>& ep) {
      ep = testing::gaussian_episode<float>(6, 3, 2, 3, 11, static_cast<uint64_t>(t));
      for (float& x : ep.support.x) x *= scale;
      for (float& x : ep.query.x) x *= scale;
    };
  }
};

MetaStepSums<float> run_split(const SoftmaxProblem& p, Algo algo,
                              const std::vector<std::vector<int64_t>>& parts, int tasks,
                              int inner_steps = 2) {
  InnerLoop inner;
  inner.steps = inner_steps;
  inner.lr = 0.1;
  MetaGradient<float> mg(*p.net, inner);
  std::vector<int64_t> packed;
  MetaStepSums<float> total;
  for (const auto& part : parts) {
    MetaStep<float> ms(mg, {algo, 5, 2});
    MetaStepSums<float> s;
    s.reset_exact(p.net->layout().total(), tasks);
    ms.run(p.theta.data(), 3, part, p.episodes(), 0.5, s);
    const std::vector<int64_t> b = s.pack_exact(true);
    if (packed.empty()) packed.assign(b.size(), 0);
    // Added as MPI_SUM adds int64 on the hardware: modulo 2^64. A task run by two "ranks" (the
    // negative control below) adds its stats' double bit patterns twice, which may overflow;
    // only that task's owner count (2) is read then, and unpack_exact refuses it.
    for (size_t i = 0; i < b.size(); ++i)
      packed[i] =
          static_cast<int64_t>(static_cast<uint64_t>(packed[i]) + static_cast<uint64_t>(b[i]));
    total = s;
  }
  total.unpack_exact(packed, true);
  return total;
}

TEST(ExactSum, MetaStepSumsHaveTheSameBitsForAnySplit) {
  SoftmaxProblem p;
  for (Algo algo : {Algo::kFomaml, Algo::kUfom}) {
    const MetaStepSums<float> one = run_split(p, algo, {{0, 1, 2, 3, 4, 5}}, 6);
    const MetaStepSums<float> three = run_split(p, algo, {{5, 1}, {0, 3}, {4, 2}}, 6);
    const MetaStepSums<float> four = run_split(p, algo, {{3}, {0, 4, 1}, {5}, {2}}, 6);
    for (const MetaStepSums<float>* s : {&three, &four}) {
      EXPECT_EQ(s->grad, one.grad);
      EXPECT_EQ(s->fo_gap, one.fo_gap);
      EXPECT_EQ(s->loss, one.loss);
      EXPECT_EQ(s->acc, one.acc);
      EXPECT_EQ(s->v2, one.v2);
      EXPECT_EQ(s->d2, one.d2);
      EXPECT_EQ(s->exact_tasks, one.exact_tasks);
      EXPECT_EQ(s->grad_evals, one.grad_evals);
      EXPECT_EQ(s->tasks, 6);
    }
    if (algo == Algo::kUfom) EXPECT_GT(one.exact_tasks, 0);
    // Against the float path: the same per-task values, so close (not equal: float sums round).
    InnerLoop inner;
    inner.steps = 2;
    inner.lr = 0.1;
    MetaGradient<float> mg(*p.net, inner);
    MetaStep<float> ms(mg, {algo, 5, 1});
    MetaStepSums<float> f;
    f.reset(p.net->layout().total());
    ms.run(p.theta.data(), 3, {0, 1, 2, 3, 4, 5}, p.episodes(), 0.5, f);
    for (size_t j = 0; j < f.grad.size(); ++j)
      EXPECT_NEAR(f.grad[j], one.grad[j], 1e-5 * (1 + std::fabs(one.grad[j])));
    EXPECT_NEAR(f.loss, one.loss, 1e-9);
  }
  // A task run twice (or by two ranks) is refused.
  EXPECT_THROW(run_split(p, Algo::kFomaml, {{0, 1, 2}, {2, 3, 4, 5}}, 6), Error);
}

TEST(ExactSum, OutOfRangeGradientIsAnErrorNamingTheTensor) {
  SoftmaxProblem p;
  p.scale = 1e12f;
  try {
    run_split(p, Algo::kFomaml, {{0, 1}}, 2, /*inner_steps=*/0);
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("head."), std::string::npos) << m;
    EXPECT_NE(m.find("2^31"), std::string::npos) << m;
    EXPECT_NE(m.find("dist.reduce=float"), std::string::npos) << m;
    EXPECT_NE(m.find("task "), std::string::npos) << m;
  }
}

}  // namespace
}  // namespace mt
