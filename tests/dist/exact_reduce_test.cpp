// The exact reduction alone under mpiexec with 1 … 4 ranks: int64 sum-allreduce is exact (also
// chunked and near the int64 range), and fixed-point task sums split over the ranks in any
// assignment, reduced through MpiComm, give on every rank the bits one process gets for all
// tasks; so do MetaStepSums' per-task scalars after pack_exact / unpack_exact.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "core/exact_sum.h"
#include "core/meta_step.h"
#include "dist/mpi_comm.h"

namespace mt::dist {
namespace {

TEST(ExactReduce, Int64SumIsExactNearTheRangeAndChunked) {
  MpiComm comm(/*max_count_per_call=*/3);
  const int n = comm.size(), r = comm.rank();
  const int64_t big = std::numeric_limits<int64_t>::max() / 4 / n;
  std::vector<int64_t> buf = {big, -big, r, int64_t{1} << 52, -(int64_t{1} << 40) * (r + 1), 0, 7};
  comm.allreduce_sum(buf.data(), buf.size());
  EXPECT_EQ(buf[0], big * n);
  EXPECT_EQ(buf[1], -big * n);
  EXPECT_EQ(buf[2], static_cast<int64_t>(n) * (n - 1) / 2);
  EXPECT_EQ(buf[3], (int64_t{1} << 52) * n);
  EXPECT_EQ(buf[4], -(int64_t{1} << 40) * n * (n + 1) / 2);
  EXPECT_EQ(buf[5], 0);
  EXPECT_EQ(buf[6], 7 * n);
}

// kB tasks of adversarial values (2^-70 … 2^30, zeros, 1e8 + 1 − 1e8, the largest admitted).
constexpr int kB = 23;
ParamLayout layout() {
  ParamLayout l;
  l.add("conv.weight", {4, 5});
  l.add("head.bias", {3});
  return l;
}
std::vector<float> task_values(int t) {
  std::mt19937_64 rng(1000 + t);
  std::vector<float> g(layout().total());
  const float largest = std::nextafter(static_cast<float>(kFixedRange), 0.0f);
  for (size_t j = 0; j < g.size(); ++j) {
    switch (j % 5) {
      case 0:
        g[j] = 0;
        break;
      case 1:
        g[j] = t % 3 == 0 ? 1e8f : t % 3 == 1 ? 1.0f : -1e8f;
        break;
      case 2:
        g[j] = (t % 2 ? -1 : 1) * largest;
        break;
      default:
        g[j] = std::ldexp(1.0f + static_cast<float>(rng() % 4096) / 4096,
                          static_cast<int>(rng() % 101) - 70) *
               (rng() & 1 ? 1.0f : -1.0f);
    }
  }
  return g;
}

// Σ over `tasks` (one at a time, in the given order) into acc.
void accumulate(const std::vector<int>& tasks, std::vector<Fixed>& acc) {
  const auto ops = make_host_exact_sum_ops<float>(1);
  const BatchedLayout one(layout(), 1);
  for (int t : tasks) {
    const std::vector<float> g = task_values(t);
    ASSERT_FALSE(ops->sum_tasks(one, g.data(), acc.data()));
  }
}

std::vector<float> reduce_over(Comm& comm, const std::vector<int>& mine) {
  const size_t d = static_cast<size_t>(layout().total());
  std::vector<Fixed> acc(d, 0);
  accumulate(mine, acc);
  std::vector<int64_t> limbs(2 * d);
  for (size_t j = 0; j < d; ++j) split_limbs(acc[j], &limbs[j], &limbs[d + j]);
  comm.allreduce_sum(limbs.data(), limbs.size());
  std::vector<float> out(d);
  for (size_t j = 0; j < d; ++j) out[j] = fixed_to_real<float>(join_limbs(limbs[j], limbs[d + j]));
  return out;
}

TEST(ExactReduce, AnyAssignmentGivesTheBitsOfOneProcess) {
  MpiComm comm;
  const int n = comm.size(), r = comm.rank();
  std::vector<int> all;
  for (int t = kB - 1; t >= 0; --t) all.push_back(t);  // reversed order
  std::vector<Fixed> whole(layout().total(), 0);
  accumulate(all, whole);
  std::vector<float> expected(whole.size());
  for (size_t j = 0; j < whole.size(); ++j) expected[j] = fixed_to_real<float>(whole[j]);
  EXPECT_EQ(expected[1], 1e8f + (kB + 1) / 3);  // 8 × 1e8, 8 × 1, 7 × −1e8 for kB = 23

  for (int scheme = 0; scheme < 3; ++scheme) {
    std::vector<int> mine;
    for (int t = 0; t < kB; ++t) {
      const int owner = scheme == 0   ? t % n                                   // modulo
                        : scheme == 1 ? (t * n) / kB                            // blocks
                                      : static_cast<int>((t * 7 + 3) % 5) % n;  // scattered
      if (owner == r) mine.push_back(t);
    }
    const std::vector<float> got = reduce_over(comm, mine);
    EXPECT_EQ(0, std::memcmp(got.data(), expected.data(), got.size() * sizeof(float)))
        << "scheme " << scheme << " on " << n << " ranks";
  }
}

TEST(ExactReduce, PerTaskScalarsSumInTaskOrderWhoeverRanThem) {
  MpiComm comm;
  const int n = comm.size(), r = comm.rank();
  const int64_t d = layout().total();
  MetaStepSums<float> s;
  s.reset_exact(d, kB);
  double loss = 0, v2 = 0;  // the one-process sums, in task order
  for (int t = 0; t < kB; ++t) {
    const double l = 1.0 / (t + 3) + 1e-17 * t, v = std::ldexp(1.0, t % 40 - 20);
    loss += l;
    if (t % 4 == 1) v2 += v;
    if ((t * 5 + 2) % n != r) continue;
    double* slot = &s.task_stats[t * MetaStepSums<float>::kTaskStats];
    slot[MetaStepSums<float>::kLoss] = l;
    slot[MetaStepSums<float>::kGradEvals] = 3;
    if (t % 4 == 1) {
      slot[MetaStepSums<float>::kV2] = v;
      slot[MetaStepSums<float>::kExact] = 1;
    }
    s.task_owned[t] = 1;
  }
  std::vector<int64_t> buf = s.pack_exact(false);
  comm.allreduce_sum(buf.data(), buf.size());
  s.unpack_exact(buf, false);
  EXPECT_EQ(s.loss, loss);
  EXPECT_EQ(s.v2, v2);
  EXPECT_EQ(s.tasks, kB);
  EXPECT_EQ(s.exact_tasks, (kB + 2) / 4);
  EXPECT_EQ(s.grad_evals, 3 * kB);
}

}  // namespace
}  // namespace mt::dist
