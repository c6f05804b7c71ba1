// Host checks of the vector ops: host_vec_ops against plain reference loops, the MT_HD kernel
// bodies of core/vec_ops_kernels.h run on the host in the kernels' decomposition against
// host_vec_ops, and the batched index maps. Needs no GPU; the device side is vec_ops_cuda_test.
#include "core/vec_ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <set>
#include <type_traits>
#include <vector>

#include "core/batched_layout.h"
#include "core/param_layout.h"
#include "core/rng.h"
#include "core/vec_ops_kernels.h"
#include "tests/support/bits.h"

namespace mt {
namespace {

constexpr int kTasks = 3;

// Tensors of different sizes, one of them empty.
ParamLayout test_params() {
  ParamLayout p;
  p.add("conv.weight", {4, 3, 3, 3});
  p.add("bn.gamma", {4});
  p.add("unused", {0});
  p.add("head.weight", {5, 7});
  p.add("head.bias", {5});
  return p;
}

template <typename T>
std::vector<T> random_vector(size_t n, uint64_t seed) {
  Rng rng(seed, 0, 0, Stream::kTest);
  std::vector<T> v(n);
  for (T& x : v) x = static_cast<T>(rng.uniform(-2, 2));
  return v;
}

template <typename T>
bool same_bits(T a, T b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

using testing::expect_same_bits;

template <typename T>
class HostVecOpsTest : public ::testing::Test {
 protected:
  const VecOps<T>& ops = host_vec_ops<T>();
  ParamLayout params = test_params();
  BatchedLayout layout{params, kTasks};
  int64_t d = layout.dim();
  int64_t n = layout.total();
};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(HostVecOpsTest, Scalars);

// (a) host_vec_ops against reference loops.

TYPED_TEST(HostVecOpsTest, ElementWiseOpsMatchReferenceLoops) {
  using T = TypeParam;
  const auto& ops = this->ops;
  const int64_t n = this->n;
  const std::vector<T> x = random_vector<T>(n, 1), y = random_vector<T>(n, 2);
  const T a = static_cast<T>(-0.37), b = static_cast<T>(1.9);

  std::vector<T> got = y, want = y;
  ops.axpy(n, a, x.data(), got.data());
  // y + a·x and a·x + b·y round once, as on the device (core/vec_ops_kernels.h).
  for (int64_t i = 0; i < n; ++i) want[i] = std::fma(a, x[i], want[i]);
  expect_same_bits(got, want, "axpy");

  ops.combine(n, a, x.data(), b, y.data(), got.data());
  for (int64_t i = 0; i < n; ++i) want[i] = std::fma(a, x[i], b * y[i]);
  expect_same_bits(got, want, "combine");
  got = x;  // z aliasing x
  ops.combine(n, a, got.data(), b, y.data(), got.data());
  expect_same_bits(got, want, "combine in place");

  ops.sub(n, x.data(), y.data(), got.data());
  for (int64_t i = 0; i < n; ++i) want[i] = x[i] - y[i];
  expect_same_bits(got, want, "sub");

  const T c = static_cast<T>(0.75);
  got = x;
  got[0] = c;
  got[1] = -c;
  got[2] = std::numeric_limits<T>::quiet_NaN();
  want = got;
  ops.clamp(n, c, got.data());
  int clipped = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (want[i] > c) want[i] = c, ++clipped;
    if (want[i] < -c) want[i] = -c, ++clipped;
  }
  EXPECT_GT(clipped, 10) << "the data must exercise both bounds";
  EXPECT_TRUE(std::isnan(got[2])) << "clamp keeps a NaN visible";
  expect_same_bits(got, want, "clamp");

  ops.fill(n, static_cast<T>(3.5), got.data());
  expect_same_bits(got, std::vector<T>(n, static_cast<T>(3.5)), "fill");
  ops.copy(n, x.data(), got.data());
  expect_same_bits(got, x, "copy");
}

TYPED_TEST(HostVecOpsTest, BroadcastWritesThetaIntoEveryTask) {
  using T = TypeParam;
  const std::vector<T> theta = random_vector<T>(this->d, 3);
  std::vector<T> got(this->n, std::numeric_limits<T>::quiet_NaN()), want(this->n);
  this->ops.broadcast(this->layout, theta.data(), got.data());
  for (int t = 0; t < kTasks; ++t)
    for (int64_t j = 0; j < this->d; ++j) want[this->layout.index(t, j)] = theta[j];
  expect_same_bits(got, want, "broadcast");
}

TYPED_TEST(HostVecOpsTest, SumTasksAccumulatesInTaskOrder) {
  using T = TypeParam;
  const BatchedLayout& l = this->layout;
  std::vector<T> x = random_vector<T>(this->n, 4);
  // Element 0 is order-sensitive: (big − big) + 1 = 1 in task order, (1 − big) + big = 0 reversed.
  const T big = 4 / std::numeric_limits<T>::epsilon();
  x[l.index(0, 0)] = big;
  x[l.index(1, 0)] = -big;
  x[l.index(2, 0)] = 1;
  const std::vector<T> s0 = random_vector<T>(this->d, 5);
  std::vector<T> got = s0, want = s0, reversed = s0;
  got[0] = want[0] = reversed[0] = 0;
  this->ops.sum_tasks(l, x.data(), got.data());
  for (int64_t j = 0; j < this->d; ++j) {
    for (int t = 0; t < kTasks; ++t) want[j] += x[l.index(t, j)];
    for (int t = kTasks - 1; t >= 0; --t) reversed[j] += x[l.index(t, j)];
  }
  expect_same_bits(got, want, "sum_tasks");
  EXPECT_EQ(got[0], static_cast<T>(1));
  EXPECT_NE(want[0], reversed[0]) << "the data must tell the summation orders apart";
}

TYPED_TEST(HostVecOpsTest, GatherScatterRoundTrip) {
  using T = TypeParam;
  const BatchedLayout& full = this->layout;
  const std::vector<int> tasks = {2, 0};
  const BatchedLayout sub = full.with_tasks(2);
  const std::vector<T> x = random_vector<T>(this->n, 6);
  std::vector<T> y(sub.total(), std::numeric_limits<T>::quiet_NaN());
  this->ops.gather(full, x.data(), tasks, y.data());
  std::vector<T> want_y(sub.total());
  for (size_t i = 0; i < tasks.size(); ++i)
    for (int64_t j = 0; j < this->d; ++j)
      want_y[sub.index(static_cast<int>(i), j)] = x[full.index(tasks[i], j)];
  expect_same_bits(y, want_y, "gather");

  std::vector<T> z = random_vector<T>(this->n, 7);
  const std::vector<T> z0 = z;
  this->ops.scatter(full, y.data(), tasks, z.data());
  for (int t = 0; t < kTasks; ++t) {
    const bool written = t == 0 || t == 2;
    for (int64_t j = 0; j < this->d; ++j) {
      const int64_t i = full.index(t, j);
      ASSERT_TRUE(same_bits(z[i], written ? x[i] : z0[i])) << "task " << t << ", j " << j;
    }
  }
  EXPECT_THROW(this->ops.gather(full, x.data(), {0, kTasks}, y.data()), Error);
  EXPECT_THROW(this->ops.scatter(full, y.data(), {-1, 0}, z.data()), Error);
}

TYPED_TEST(HostVecOpsTest, TaskSquaredNormsAndDistancesInThetaOrder) {
  using T = TypeParam;
  const BatchedLayout& l = this->layout;
  const std::vector<T> x = random_vector<T>(this->n, 8), y = random_vector<T>(this->n, 9);
  double norms[kTasks], dists[kTasks];
  this->ops.task_sq_norms(l, x.data(), norms);
  this->ops.task_sq_dists(l, x.data(), y.data(), dists);
  // Same order of terms as the host; whether the compiler fuses s + v·v into an fma changes a
  // rounding per term, except for float norms, whose squares are exact in double. Otherwise
  // both sides are within d·2⁻⁵³ relative of the exact sum of non-negative terms.
  const double bound = 2.0 * static_cast<double>(this->d) * std::ldexp(1.0, -53);
  for (int t = 0; t < kTasks; ++t) {
    double norm = 0, dist = 0;
    for (int64_t j = 0; j < this->d; ++j) {
      const double v = x[l.index(t, j)], diff = v - static_cast<double>(y[l.index(t, j)]);
      norm += v * v;
      dist += diff * diff;
    }
    if (std::is_same_v<T, float>)
      EXPECT_EQ(norms[t], norm) << "task " << t;
    else
      EXPECT_NEAR(norms[t], norm, bound * norm) << "task " << t;
    EXPECT_NEAR(dists[t], dist, bound * dist) << "task " << t;
    EXPECT_GT(norm, 1.0);
  }
  EXPECT_NE(norms[0], norms[1]) << "tasks must hold different data";
}

// (b) The kernel bodies, run on the host in the kernels' decomposition.

TYPED_TEST(HostVecOpsTest, ElementBodiesEqualHostOpsBitForBit) {
  using T = TypeParam;
  const auto& ops = this->ops;
  const int64_t n = this->n;
  const std::vector<T> x = random_vector<T>(n, 11), y = random_vector<T>(n, 12);
  const T a = static_cast<T>(0.61), b = static_cast<T>(-1.3), c = static_cast<T>(0.5);

  // These two compare the spelled-out fma with the host build's contraction of y + a·x and
  // a·x + b·y: a failure means the host compiler rounds differently from the device.
  std::vector<T> host = y, body = y;
  ops.axpy(n, a, x.data(), host.data());
  for (int64_t i = 0; i < n; ++i) axpy_element(i, a, x.data(), body.data());
  expect_same_bits(body, host, "axpy_element");
  ops.combine(n, a, x.data(), b, y.data(), host.data());
  for (int64_t i = 0; i < n; ++i) combine_element(i, a, x.data(), b, y.data(), body.data());
  expect_same_bits(body, host, "combine_element");

  ops.sub(n, x.data(), y.data(), host.data());
  for (int64_t i = 0; i < n; ++i) sub_element(i, x.data(), y.data(), body.data());
  expect_same_bits(body, host, "sub_element");

  host = x;
  host[5] = std::numeric_limits<T>::quiet_NaN();
  host[6] = c;
  body = host;
  ops.clamp(n, c, host.data());
  for (int64_t i = 0; i < n; ++i) clamp_element(i, c, body.data());
  expect_same_bits(body, host, "clamp_element");

  ops.fill(n, b, host.data());
  for (int64_t i = 0; i < n; ++i) fill_element(i, b, body.data());
  expect_same_bits(body, host, "fill_element");

  ops.mul(n, x.data(), y.data(), host.data());
  for (int64_t i = 0; i < n; ++i) mul_element(i, x.data(), y.data(), body.data());
  expect_same_bits(body, host, "mul_element");
  for (int64_t i = 0; i < n; ++i) EXPECT_TRUE(same_bits(host[i], static_cast<T>(x[i] * y[i])));
  host = y;
  body = y;
  ops.mul_add(n, a, x.data(), y.data(), host.data());
  for (int64_t i = 0; i < n; ++i) mul_add_element(i, a, x.data(), y.data(), body.data());
  expect_same_bits(body, host, "mul_add_element");
  for (int64_t i = 0; i < n; ++i)
    EXPECT_TRUE(same_bits(host[i], static_cast<T>(std::fma(a, static_cast<T>(x[i] * y[i]), y[i]))));
}

TYPED_TEST(HostVecOpsTest, BatchedBodiesEqualHostOpsBitForBit) {
  using T = TypeParam;
  const BatchedLayout& l = this->layout;
  const LayoutArgs args = make_layout_args(l);
  const int64_t d = this->d, n = this->n;
  const std::vector<T> theta = random_vector<T>(d, 13), x = random_vector<T>(n, 14);

  std::vector<T> host(n), body(n, std::numeric_limits<T>::quiet_NaN());
  this->ops.broadcast(l, theta.data(), host.data());
  for (int64_t q = 0; q < n; ++q) broadcast_element(args, q, theta.data(), body.data());
  expect_same_bits(body, host, "broadcast_element");

  std::vector<T> s_host = random_vector<T>(d, 15), s_body = s_host;
  this->ops.sum_tasks(l, x.data(), s_host.data());
  for (int64_t j = 0; j < d; ++j) sum_tasks_element(args, j, x.data(), s_body.data());
  expect_same_bits(s_body, s_host, "sum_tasks_element");
  // T = 1: the sum adds the one task.
  const BatchedLayout one = l.with_tasks(1);
  const LayoutArgs one_args = make_layout_args(one);
  std::vector<T> s1_host(d, 1), s1_body(d, 1);
  this->ops.sum_tasks(one, x.data(), s1_host.data());
  for (int64_t j = 0; j < d; ++j) sum_tasks_element(one_args, j, x.data(), s1_body.data());
  expect_same_bits(s1_body, s1_host, "sum_tasks_element, one task");

  const std::vector<int> tasks = {1, 2, 0};  // a permutation: scatter inverts gather exactly
  const TaskList list = make_task_list(tasks, kTasks);
  std::vector<T> g_host(n), g_body(n, std::numeric_limits<T>::quiet_NaN());
  this->ops.gather(l, x.data(), tasks, g_host.data());
  for (int64_t q = 0; q < list.count * d; ++q)
    gather_element(args, list, q, x.data(), g_body.data());
  expect_same_bits(g_body, g_host, "gather_element");
  EXPECT_FALSE(same_bits(g_body[0], x[0])) << "the permutation must move data";
  std::vector<T> back(n, std::numeric_limits<T>::quiet_NaN());
  for (int64_t q = 0; q < list.count * d; ++q)
    scatter_element(args, list, q, g_body.data(), back.data());
  expect_same_bits(back, x, "scatter_element after gather_element");
  std::vector<T> sc_host(n, std::numeric_limits<T>::quiet_NaN());
  this->ops.scatter(l, g_host.data(), tasks, sc_host.data());
  expect_same_bits(back, sc_host, "scatter_element vs scatter");
}

// task_axpy: y_t += a_t·x_t with each task's own coefficient (element body: the same bits), and
// task_dots: Σ_j x_t[j]·y_t[j] against its twin, within the bound of two summation orders of
// d terms relative to Σ|x·y| (the terms have both signs).
TYPED_TEST(HostVecOpsTest, PerTaskAxpyAndDotsMatchReferenceAndTwin) {
  using T = TypeParam;
  const BatchedLayout& l = this->layout;
  const LayoutArgs args = make_layout_args(l);
  const std::vector<T> x = random_vector<T>(this->n, 18), y = random_vector<T>(this->n, 19);
  double a[kTasks];
  for (int t = 0; t < kTasks; ++t) a[t] = 0.25 * (t + 1) - 0.6;
  std::vector<T> host = y, body = y;
  this->ops.task_axpy(l, a, x.data(), host.data());
  for (int64_t q = 0; q < this->n; ++q) task_axpy_element(args, q, a, x.data(), body.data());
  expect_same_bits(body, host, "task_axpy_element");
  for (int t = 0; t < kTasks; ++t)
    for (int64_t j = 0; j < this->d; ++j) {
      const int64_t i = l.index(t, j);
      EXPECT_TRUE(same_bits(host[i], static_cast<T>(std::fma(static_cast<T>(a[t]), x[i], y[i]))));
    }
  double dots[kTasks];
  this->ops.task_dots(l, x.data(), y.data(), dots);
  for (int t = 0; t < kTasks; ++t) {
    double want = 0, scale = 0;
    for (int64_t j = 0; j < this->d; ++j) {
      const int64_t i = l.index(t, j);
      want += static_cast<double>(x[i]) * y[i];
      scale += std::abs(static_cast<double>(x[i]) * y[i]);
    }
    const double bound = 2.0 * (static_cast<double>(this->d) + 8) * std::ldexp(1.0, -53) * scale;
    EXPECT_NEAR(dots[t], want, bound) << "task " << t;
    EXPECT_NEAR(host_task_sum<T>(args, x.data(), y.data(), TaskSum::kDots, t), dots[t], bound)
        << "task " << t;
  }
}

TYPED_TEST(HostVecOpsTest, ReductionTwinMatchesHostNormsWithinRoundingBound) {
  using T = TypeParam;
  const BatchedLayout& l = this->layout;
  const LayoutArgs args = make_layout_args(l);
  const std::vector<T> x = random_vector<T>(this->n, 16), y = random_vector<T>(this->n, 17);
  double norms[kTasks], dists[kTasks];
  this->ops.task_sq_norms(l, x.data(), norms);
  this->ops.task_sq_dists(l, x.data(), y.data(), dists);
  // Both sides add d non-negative terms in double, sequentially (host) or in lanes and a tree
  // of depth log2(kReduceThreads) (twin); each result is within (d + 8)·2⁻⁵³ of the exact sum
  // relative, so they differ by at most twice that.
  const double bound = 2.0 * (static_cast<double>(this->d) + 8) * std::ldexp(1.0, -53);
  for (int t = 0; t < kTasks; ++t) {
    const double twin_norm = host_task_sum<T>(args, x.data(), nullptr, TaskSum::kSquares, t);
    const double twin_dist =
        host_task_sum<T>(args, x.data(), y.data(), TaskSum::kSquaredDistances, t);
    EXPECT_NEAR(twin_norm, norms[t], bound * norms[t]) << "task " << t;
    EXPECT_NEAR(twin_dist, dists[t], bound * dists[t]) << "task " << t;
  }
}

TEST(KernelArgs, LimitsAreCheckedAndIndicesAgreeWithTheLayout) {
  ParamLayout many;
  for (int k = 0; k <= kMaxLayoutTensors; ++k) many.add("w" + std::to_string(k), {2});
  EXPECT_THROW(make_layout_args(BatchedLayout(many, 2)), Error);
  ParamLayout at_limit;
  for (int k = 0; k < kMaxLayoutTensors; ++k) at_limit.add("w" + std::to_string(k), {k % 3 + 1});
  const BatchedLayout l(at_limit, 5);
  const LayoutArgs args = make_layout_args(l);
  EXPECT_EQ(args.tensors, kMaxLayoutTensors);
  EXPECT_EQ(args.dim(), l.dim());
  for (int t = 0; t < 5; ++t)
    for (int64_t j = 0; j < l.dim(); ++j) ASSERT_EQ(args.index(t, j), l.index(t, j));

  EXPECT_NO_THROW(make_task_list(std::vector<int>(kMaxTaskList, 0), 1));
  EXPECT_THROW(make_task_list(std::vector<int>(kMaxTaskList + 1, 0), 1), Error);
  EXPECT_THROW(make_task_list({0, 3}, 3), Error);
  EXPECT_THROW(make_task_list({-1}, 3), Error);
  const TaskList list = make_task_list({4, 1}, 5);
  EXPECT_EQ(list.count, 2);
  EXPECT_EQ(list.task[0], 4);
  EXPECT_EQ(list.task[1], 1);
}

// (c) The batched index maps.

TEST(BatchedIndex, EveryTaskElementHasItsOwnSlotAndTensorsAreContiguous) {
  const ParamLayout params = test_params();
  for (int tasks : {1, 2, kTasks, 7}) {
    const BatchedLayout l(params, tasks);
    std::set<int64_t> seen;
    for (int t = 0; t < tasks; ++t) {
      for (int64_t j = 0; j < l.dim(); ++j) {
        const int64_t i = l.index(t, j);
        ASSERT_GE(i, 0);
        ASSERT_LT(i, l.total());
        ASSERT_TRUE(seen.insert(i).second) << "T " << tasks << ": (" << t << ", " << j << ")";
      }
      for (int k = 0; k < l.tensors(); ++k) {
        const int64_t offset = l.ends()[k], size = l.ends()[k + 1] - offset;
        EXPECT_EQ(l.tensor_start(k, t), tasks * offset + t * size);
        for (int64_t e = 0; e < size; ++e)
          ASSERT_EQ(l.index(t, offset + e), l.tensor_start(k, t) + e) << "tensor " << k;
      }
    }
    EXPECT_EQ(static_cast<int64_t>(seen.size()), l.total());
  }
  const BatchedLayout flat(params, 1);
  for (int64_t j = 0; j < flat.dim(); ++j) ASSERT_EQ(flat.index(0, j), j);
  // Task t's copies of one tensor follow one another: the grouped-filter layout.
  const BatchedLayout three(params, kTasks);
  EXPECT_EQ(three.tensor_start(0, 1), 108);
  EXPECT_EQ(three.tensor_start(1, 0), kTasks * 108);
}

}  // namespace
}  // namespace mt
