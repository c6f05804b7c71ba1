// CUDA launchers of the task-batched kernels (models/batched_kernels_cuda.h) against their host
// twins in float (models/batched_kernels.h), every pass and the optional-null cases. The host
// twins are judged against the CPU layers by batched_kernels_test; skips without a GPU.
//
// Bounds. Device and host run the same bodies in the same decomposition (batch norm: one block
// of kBnReduceThreads lanes per channel, strided partials in double, the same tree; see
// batched_kernels.h); they differ by FMA contraction (nvcc and the host compiler each may fuse an
// a·b + c in T, not necessarily the same ones) and by expf / logf of the device math library
// (≤ 2 ulp). Batch norm's R-backward amplifies an ulp by its cancellations to ~10 ulp of the
// largest term, so we require 1e-5 relative to max(1, max |host|) for every float output. Batch
// norm's σ, x̂, dγ, dβ and R{dβ} have no a·b + c in one precision on their path (products are
// formed in float and added in double, the divisions and sqrt are IEEE without fast math), so
// they must match the twin bit for bit; and a second device run must reproduce every output bit
// for bit (the tree is fixed). Routing passes (ReLU, max-pool, argmax, counts) involve no
// arithmetic, LeakyReLU and the sum one rounded operation each, so they must match bit for bit.
#include "models/batched_kernels_cuda.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iterator>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "core/cuda_check.h"
#include "core/device.h"
#include "core/rng.h"
#include "models/batched_kernels.h"

namespace mt {
namespace {

constexpr double kTol = 1e-5;

#define MT_REQUIRE_GPU()                                                    \
  do {                                                                      \
    if (gpu_count() == 0) GTEST_SKIP() << "no GPU: " << describe_devices(); \
    select_gpu(0);                                                          \
  } while (0)

std::vector<float> random_floats(size_t count, Rng& rng, double lo, double hi) {
  std::vector<float> v(count);
  for (float& e : v) e = static_cast<float>(rng.uniform(lo, hi));
  return v;
}

// Task t's values in a batched [n, T·S] buffer offset by t and scaled by 1 + t.
std::vector<float> task_varied(int n, int tasks, int64_t S, Rng& rng) {
  std::vector<float> v(static_cast<size_t>(n) * tasks * S);
  for (size_t k = 0; k < v.size(); ++k) {
    const int t = static_cast<int>((static_cast<int64_t>(k) / S) % tasks);
    v[k] = static_cast<float>((0.7 * t - 0.5) + (1.0 + t) * rng.uniform(-1, 1));
  }
  return v;
}

// A device copy of host values; or, from a count, a device buffer filled with NaN (int: −1) so
// that an unwritten entry fails the comparison.
template <typename T>
DeviceBuffer<T> to_device(const std::vector<T>& host) {
  DeviceBuffer<T> d(host.size());
  d.copy_from_host(host.data(), host.size());
  return d;
}
template <typename T>
DeviceBuffer<T> poisoned_device(size_t count) {
  const T poison =
      std::numeric_limits<T>::has_quiet_NaN ? std::numeric_limits<T>::quiet_NaN() : T(-1);
  return to_device(std::vector<T>(count, poison));
}
template <typename T>
std::vector<T> to_host(const DeviceBuffer<T>& d) {
  MT_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<T> h(d.size());
  d.copy_to_host(h.data(), h.size());
  return h;
}

// |device − host| ≤ tol · max(1, max |host|) element-wise; NaN fails.
::testing::AssertionResult close(const std::vector<float>& dev, const std::vector<float>& host,
                                 double tol, const std::string& what) {
  if (dev.size() != host.size())
    return ::testing::AssertionFailure()
           << what << ": size " << dev.size() << " vs " << host.size();
  double scale = 1;
  for (float h : host) scale = std::max(scale, std::fabs(static_cast<double>(h)));
  for (size_t k = 0; k < dev.size(); ++k) {
    const double d = std::fabs(static_cast<double>(dev[k]) - host[k]);
    if (!(d <= tol * scale))
      return ::testing::AssertionFailure() << what << "[" << k << "] device " << dev[k] << ", host "
                                           << host[k] << " (|diff| " << d << ")";
  }
  return ::testing::AssertionSuccess();
}

// Every batch-norm pass on device vs host twin at n examples of tasks × C channels of H·W.
void check_batch_norm(int n, int tasks, int C, int HW, uint64_t seed) {
  const int TC = tasks * C;
  const int64_t S = static_cast<int64_t>(C) * HW;
  const size_t count = static_cast<size_t>(n) * tasks * S;
  Rng rng(seed, 0, 0, Stream::kTest);
  const auto x = task_varied(n, tasks, S, rng), dy = task_varied(n, tasks, S, rng);
  const auto R_x = task_varied(n, tasks, S, rng), R_dy = task_varied(n, tasks, S, rng);
  const auto gamma = random_floats(TC, rng, 0.5, 1.5), beta = random_floats(TC, rng, -1, 1);
  const auto R_gamma = random_floats(TC, rng, -1, 1), R_beta = random_floats(TC, rng, -1, 1);
  const size_t nw = bn_work_size(tasks, C);

  // Host twin.
  std::vector<float> y(count), xhat(count), sigma(TC), dx(count), dg(TC), db(TC), work(nw);
  std::vector<float> R_y(count), R_y0(count), R_dx(count), R_dg(TC), R_db(TC);
  std::vector<float> R_dx0(count), R_dg0(TC), R_db0(TC);
  bn_forward_host(n, tasks, C, HW, x.data(), gamma.data(), beta.data(), y.data(), xhat.data(),
                  sigma.data());
  bn_backward_host(n, tasks, C, HW, gamma.data(), xhat.data(), sigma.data(), dy.data(), dx.data(),
                   dg.data(), db.data());
  bn_r_forward_host(n, tasks, C, HW, gamma.data(), R_gamma.data(), R_beta.data(), xhat.data(),
                    sigma.data(), R_x.data(), R_y.data(), work.data());
  bn_r_forward_host(n, tasks, C, HW, gamma.data(), R_gamma.data(), R_beta.data(), xhat.data(),
                    sigma.data(), static_cast<const float*>(nullptr), R_y0.data(), work.data());
  bn_r_backward_host(n, tasks, C, HW, gamma.data(), R_gamma.data(), xhat.data(), sigma.data(),
                     R_x.data(), dy.data(), R_dy.data(), R_dx.data(), R_dg.data(), R_db.data(),
                     work.data());
  bn_r_backward_host(n, tasks, C, HW, gamma.data(), R_gamma.data(), xhat.data(), sigma.data(),
                     static_cast<const float*>(nullptr), dy.data(), R_dy.data(), R_dx0.data(),
                     R_dg0.data(), R_db0.data(), work.data());

  // Device, twice: every pass reads the device's own forward outputs.
  struct DeviceRun {
    std::vector<float> y, xhat, sigma, dx, dg, db, dg1, db1, R_y, R_y0, R_dx, R_dg, R_db, R_dx0,
        R_dg0, R_db0, R_dg1, R_db1;
  };
  auto run_device = [&] {
    auto d_x = to_device(x), d_dy = to_device(dy), d_R_x = to_device(R_x), d_R_dy = to_device(R_dy);
    auto d_gamma = to_device(gamma), d_beta = to_device(beta);
    auto d_R_gamma = to_device(R_gamma), d_R_beta = to_device(R_beta);
    auto d_y = poisoned_device<float>(count), d_xhat = poisoned_device<float>(count);
    auto d_sigma = poisoned_device<float>(TC), d_work = poisoned_device<float>(nw);
    auto d_dx = poisoned_device<float>(count), d_dg = poisoned_device<float>(TC),
         d_db = poisoned_device<float>(TC), d_dg1 = poisoned_device<float>(TC),
         d_db1 = poisoned_device<float>(TC);
    auto d_R_y = poisoned_device<float>(count), d_R_y0 = poisoned_device<float>(count);
    auto d_R_dx = poisoned_device<float>(count), d_R_dg = poisoned_device<float>(TC),
         d_R_db = poisoned_device<float>(TC);
    auto d_R_dx0 = poisoned_device<float>(count), d_R_dg0 = poisoned_device<float>(TC),
         d_R_db0 = poisoned_device<float>(TC);
    auto d_R_dg1 = poisoned_device<float>(TC), d_R_db1 = poisoned_device<float>(TC);
    bn_forward_cuda(n, tasks, C, HW, d_x.data(), d_gamma.data(), d_beta.data(), d_y.data(),
                    d_xhat.data(), d_sigma.data(), nullptr);
    bn_backward_cuda(n, tasks, C, HW, d_gamma.data(), d_xhat.data(), d_sigma.data(), d_dy.data(),
                     d_dx.data(), d_dg.data(), d_db.data(), nullptr);
    bn_backward_cuda(n, tasks, C, HW, d_gamma.data(), d_xhat.data(), d_sigma.data(), d_dy.data(),
                     nullptr, d_dg1.data(), d_db1.data(), nullptr);
    bn_r_forward_cuda(n, tasks, C, HW, d_gamma.data(), d_R_gamma.data(), d_R_beta.data(),
                      d_xhat.data(), d_sigma.data(), d_R_x.data(), d_R_y.data(), d_work.data(),
                      nullptr);
    bn_r_forward_cuda(n, tasks, C, HW, d_gamma.data(), d_R_gamma.data(), d_R_beta.data(),
                      d_xhat.data(), d_sigma.data(), nullptr, d_R_y0.data(), d_work.data(),
                      nullptr);
    bn_r_backward_cuda(n, tasks, C, HW, d_gamma.data(), d_R_gamma.data(), d_xhat.data(),
                       d_sigma.data(), d_R_x.data(), d_dy.data(), d_R_dy.data(), d_R_dx.data(),
                       d_R_dg.data(), d_R_db.data(), d_work.data(), nullptr);
    bn_r_backward_cuda(n, tasks, C, HW, d_gamma.data(), d_R_gamma.data(), d_xhat.data(),
                       d_sigma.data(), nullptr, d_dy.data(), d_R_dy.data(), d_R_dx0.data(),
                       d_R_dg0.data(), d_R_db0.data(), d_work.data(), nullptr);
    bn_r_backward_cuda(n, tasks, C, HW, d_gamma.data(), d_R_gamma.data(), d_xhat.data(),
                       d_sigma.data(), d_R_x.data(), d_dy.data(), d_R_dy.data(), nullptr,
                       d_R_dg1.data(), d_R_db1.data(), d_work.data(), nullptr);
    return DeviceRun{to_host(d_y),     to_host(d_xhat),  to_host(d_sigma), to_host(d_dx),
                     to_host(d_dg),    to_host(d_db),    to_host(d_dg1),   to_host(d_db1),
                     to_host(d_R_y),   to_host(d_R_y0),  to_host(d_R_dx),  to_host(d_R_dg),
                     to_host(d_R_db),  to_host(d_R_dx0), to_host(d_R_dg0), to_host(d_R_db0),
                     to_host(d_R_dg1), to_host(d_R_db1)};
  };
  const DeviceRun d = run_device(), again = run_device();

  // No a·b + c in one precision on the path: bit for bit.
  EXPECT_TRUE(close(d.sigma, sigma, 0, "sigma"));
  EXPECT_TRUE(close(d.xhat, xhat, 0, "xhat"));
  EXPECT_TRUE(close(d.dg, dg, 0, "dgamma"));
  EXPECT_TRUE(close(d.db, db, 0, "dbeta"));
  EXPECT_TRUE(close(d.dg1, dg, 0, "dgamma without dx"));
  EXPECT_TRUE(close(d.db1, db, 0, "dbeta without dx"));
  EXPECT_TRUE(close(d.R_db, R_db, 0, "R_dbeta"));
  EXPECT_TRUE(close(d.R_db0, R_db0, 0, "R_dbeta with R_x = null"));
  EXPECT_TRUE(close(d.R_db1, R_db, 0, "R_dbeta without R_dx"));
  // Up to FMA contraction.
  EXPECT_TRUE(close(d.y, y, kTol, "y"));
  EXPECT_TRUE(close(d.dx, dx, kTol, "dx"));
  EXPECT_TRUE(close(d.R_y, R_y, kTol, "R_y"));
  EXPECT_TRUE(close(d.R_y0, R_y0, kTol, "R_y with R_x = null"));
  EXPECT_TRUE(close(d.R_dx, R_dx, kTol, "R_dx"));
  EXPECT_TRUE(close(d.R_dg, R_dg, kTol, "R_dgamma"));
  EXPECT_TRUE(close(d.R_dx0, R_dx0, kTol, "R_dx with R_x = null"));
  EXPECT_TRUE(close(d.R_dg0, R_dg0, kTol, "R_dgamma with R_x = null"));
  EXPECT_TRUE(close(d.R_dg1, R_dg, kTol, "R_dgamma without R_dx"));
  // The rerun reproduces them bit for bit (the exact ones above follow from the twin's).
  EXPECT_TRUE(close(again.y, d.y, 0, "rerun y"));
  EXPECT_TRUE(close(again.dx, d.dx, 0, "rerun dx"));
  EXPECT_TRUE(close(again.R_y, d.R_y, 0, "rerun R_y"));
  EXPECT_TRUE(close(again.R_y0, d.R_y0, 0, "rerun R_y with R_x = null"));
  EXPECT_TRUE(close(again.R_dx, d.R_dx, 0, "rerun R_dx"));
  EXPECT_TRUE(close(again.R_dg, d.R_dg, 0, "rerun R_dgamma"));
  EXPECT_TRUE(close(again.R_dx0, d.R_dx0, 0, "rerun R_dx with R_x = null"));
  EXPECT_TRUE(close(again.R_dg0, d.R_dg0, 0, "rerun R_dgamma with R_x = null"));
}

// n·H·W per channel: 294 (strided lanes, ragged last round), 12 (most lanes empty) and a
// realistic 58 800 (75 examples of 28×28: 230 values per lane).
TEST(BatchedKernelsCuda, BatchNormMatchesHostTwin) {
  MT_REQUIRE_GPU();
  check_batch_norm(6, 4, 8, 7 * 7, 21);
}
TEST(BatchedKernelsCuda, BatchNormFewerValuesThanLanesMatchesHostTwin) {
  MT_REQUIRE_GPU();
  check_batch_norm(3, 2, 4, 2 * 2, 26);
}
TEST(BatchedKernelsCuda, BatchNormRealisticSizeMatchesHostTwin) {
  MT_REQUIRE_GPU();
  check_batch_norm(75, 2, 8, 28 * 28, 27);
}

// ReLU (slope 0) and LeakyReLU (ResNet-12's 0.1): the same bits as the host twin.
void check_relu(float slope, uint64_t seed) {
  const int64_t count = 5 * 4 * 8 * 9 * 9;
  Rng rng(seed, 0, 0, Stream::kTest);
  auto x = random_floats(count, rng, -1, 1);
  for (int64_t k = 0; k < count; k += 5) x[k] = 0.0f;
  const auto dy = random_floats(count, rng, -1, 1), R_x = random_floats(count, rng, -1, 1),
             R_dy = random_floats(count, rng, -1, 1);
  std::vector<float> y(count), dx(count), R_y(count), R_y0(count), R_dx(count);
  relu_forward_host(count, slope, x.data(), y.data());
  relu_backward_host(count, slope, x.data(), dy.data(), dx.data());
  relu_r_forward_host(count, slope, x.data(), R_x.data(), R_y.data());
  relu_r_forward_host(count, slope, x.data(), static_cast<const float*>(nullptr), R_y0.data());
  relu_r_backward_host(count, slope, x.data(), R_dy.data(), R_dx.data());

  auto d_x = to_device(x), d_dy = to_device(dy), d_R_x = to_device(R_x), d_R_dy = to_device(R_dy);
  auto d_y = poisoned_device<float>(count), d_dx = poisoned_device<float>(count),
       d_R_y = poisoned_device<float>(count), d_R_y0 = poisoned_device<float>(count),
       d_R_dx = poisoned_device<float>(count);
  relu_forward_cuda(count, slope, d_x.data(), d_y.data(), nullptr);
  relu_backward_cuda(count, slope, d_x.data(), d_dy.data(), d_dx.data(), nullptr);
  relu_backward_cuda(count, slope, d_x.data(), d_dy.data(), nullptr, nullptr);
  relu_r_forward_cuda(count, slope, d_x.data(), d_R_x.data(), d_R_y.data(), nullptr);
  relu_r_forward_cuda(count, slope, d_x.data(), nullptr, d_R_y0.data(), nullptr);
  relu_r_backward_cuda(count, slope, d_x.data(), d_R_dy.data(), d_R_dx.data(), nullptr);
  relu_r_backward_cuda(count, slope, d_x.data(), d_R_dy.data(), nullptr, nullptr);
  EXPECT_TRUE(close(to_host(d_y), y, 0, "y"));
  EXPECT_TRUE(close(to_host(d_dx), dx, 0, "dx"));
  EXPECT_TRUE(close(to_host(d_R_y), R_y, 0, "R_y"));
  EXPECT_TRUE(close(to_host(d_R_y0), R_y0, 0, "R_y with R_x = null"));
  EXPECT_TRUE(close(to_host(d_R_dx), R_dx, 0, "R_dx"));
}

TEST(BatchedKernelsCuda, ReluMatchesHostTwin) {
  MT_REQUIRE_GPU();
  check_relu(0.0f, 22);
}
TEST(BatchedKernelsCuda, LeakyReluMatchesHostTwin) {
  MT_REQUIRE_GPU();
  check_relu(0.1f, 28);
}

// A residual block's sum and the gradient fan-in: one rounding, so the same bits as the twin;
// in place and with a null (zero) operand.
TEST(BatchedKernelsCuda, AddMatchesHostTwin) {
  MT_REQUIRE_GPU();
  const int64_t count = 3 * 4 * 5 * 7 * 7;
  Rng rng(29, 0, 0, Stream::kTest);
  const auto a = random_floats(count, rng, -1, 1), b = random_floats(count, rng, -1, 1);
  std::vector<float> y(count), y_a(count);
  add_host(count, a.data(), b.data(), y.data());
  add_host(count, a.data(), static_cast<const float*>(nullptr), y_a.data());
  auto d_a = to_device(a), d_b = to_device(b), d_y = poisoned_device<float>(count),
       d_y_a = poisoned_device<float>(count);
  add_cuda(count, d_a.data(), d_b.data(), d_y.data(), nullptr);
  add_cuda(count, d_a.data(), nullptr, d_y_a.data(), nullptr);
  add_cuda(count, d_a.data(), d_b.data(), d_b.data(), nullptr);  // y aliases b
  EXPECT_TRUE(close(to_host(d_y), y, 0, "a + b"));
  EXPECT_TRUE(close(to_host(d_y_a), y_a, 0, "a + null"));
  EXPECT_TRUE(close(to_host(d_b), y, 0, "a + b into b"));
}

TEST(BatchedKernelsCuda, MaxPoolMatchesHostTwin) {
  MT_REQUIRE_GPU();
  const int n = 5, tasks = 4, C = 8, H = 11, W = 9;  // odd: trailing row and column dropped
  const int64_t count = static_cast<int64_t>(n) * tasks * C * H * W;
  const int64_t count_out = static_cast<int64_t>(n) * tasks * C * (H / 2) * (W / 2);
  Rng rng(23, 0, 0, Stream::kTest);
  auto x = random_floats(count, rng, -1, 1);
  for (int64_t k = 0; k < count; k += 3) x[k] = 0.5f;  // some tied windows
  const auto dy = random_floats(count_out, rng, -1, 1), R_x = random_floats(count, rng, -1, 1),
             R_dy = random_floats(count_out, rng, -1, 1);
  std::vector<float> y(count_out), R_y(count_out), R_y0(count_out), dx(count), R_dx(count);
  std::vector<int32_t> index(count_out);
  max_pool_forward_host(n, tasks, C, H, W, x.data(), y.data(), index.data());
  max_pool_backward_host(n, tasks, C, H, W, index.data(), dy.data(), dx.data());
  max_pool_r_forward_host(n, tasks, C, H, W, index.data(), R_x.data(), R_y.data());
  max_pool_r_forward_host(n, tasks, C, H, W, index.data(), static_cast<const float*>(nullptr),
                          R_y0.data());
  max_pool_r_backward_host(n, tasks, C, H, W, index.data(), R_dy.data(), R_dx.data());

  auto d_x = to_device(x), d_dy = to_device(dy), d_R_x = to_device(R_x), d_R_dy = to_device(R_dy);
  auto d_y = poisoned_device<float>(count_out), d_R_y = poisoned_device<float>(count_out),
       d_R_y0 = poisoned_device<float>(count_out), d_dx = poisoned_device<float>(count),
       d_R_dx = poisoned_device<float>(count);
  auto d_index = poisoned_device<int32_t>(count_out);
  max_pool_forward_cuda(n, tasks, C, H, W, d_x.data(), d_y.data(), d_index.data(), nullptr);
  max_pool_backward_cuda(n, tasks, C, H, W, d_index.data(), d_dy.data(), d_dx.data(), nullptr);
  max_pool_backward_cuda(n, tasks, C, H, W, d_index.data(), d_dy.data(), nullptr, nullptr);
  max_pool_r_forward_cuda(n, tasks, C, H, W, d_index.data(), d_R_x.data(), d_R_y.data(), nullptr);
  max_pool_r_forward_cuda(n, tasks, C, H, W, d_index.data(), nullptr, d_R_y0.data(), nullptr);
  max_pool_r_backward_cuda(n, tasks, C, H, W, d_index.data(), d_R_dy.data(), d_R_dx.data(),
                           nullptr);
  EXPECT_EQ(to_host(d_index), index);
  EXPECT_TRUE(close(to_host(d_y), y, 0, "y"));
  EXPECT_TRUE(close(to_host(d_dx), dx, 0, "dx"));
  EXPECT_TRUE(close(to_host(d_R_y), R_y, 0, "R_y"));
  EXPECT_TRUE(close(to_host(d_R_y0), R_y0, 0, "R_y with R_x = null"));
  EXPECT_TRUE(close(to_host(d_R_dx), R_dx, 0, "R_dx"));
}

TEST(BatchedKernelsCuda, MeanPoolMatchesHostTwin) {
  MT_REQUIRE_GPU();
  const int n = 5, tasks = 4, C = 8, HW = 5 * 5;
  const int64_t count = static_cast<int64_t>(n) * tasks * C * HW, count_out = n * tasks * C;
  Rng rng(24, 0, 0, Stream::kTest);
  const auto x = random_floats(count, rng, -1, 1), dy = random_floats(count_out, rng, -1, 1),
             R_x = random_floats(count, rng, -1, 1), R_dy = random_floats(count_out, rng, -1, 1);
  std::vector<float> y(count_out), R_y(count_out), R_y0(count_out), dx(count), R_dx(count);
  mean_pool_forward_host(n, tasks, C, HW, x.data(), y.data());
  mean_pool_backward_host(n, tasks, C, HW, dy.data(), dx.data());
  mean_pool_r_forward_host(n, tasks, C, HW, R_x.data(), R_y.data());
  mean_pool_r_forward_host(n, tasks, C, HW, static_cast<const float*>(nullptr), R_y0.data());
  mean_pool_r_backward_host(n, tasks, C, HW, R_dy.data(), R_dx.data());

  auto d_x = to_device(x), d_dy = to_device(dy), d_R_x = to_device(R_x), d_R_dy = to_device(R_dy);
  auto d_y = poisoned_device<float>(count_out), d_R_y = poisoned_device<float>(count_out),
       d_R_y0 = poisoned_device<float>(count_out), d_dx = poisoned_device<float>(count),
       d_R_dx = poisoned_device<float>(count);
  mean_pool_forward_cuda(n, tasks, C, HW, d_x.data(), d_y.data(), nullptr);
  mean_pool_backward_cuda(n, tasks, C, HW, d_dy.data(), d_dx.data(), nullptr);
  mean_pool_backward_cuda(n, tasks, C, HW, d_dy.data(), nullptr, nullptr);
  mean_pool_r_forward_cuda(n, tasks, C, HW, d_R_x.data(), d_R_y.data(), nullptr);
  mean_pool_r_forward_cuda(n, tasks, C, HW, nullptr, d_R_y0.data(), nullptr);
  mean_pool_r_backward_cuda(n, tasks, C, HW, d_R_dy.data(), d_R_dx.data(), nullptr);
  EXPECT_TRUE(close(to_host(d_y), y, kTol, "y"));
  EXPECT_TRUE(close(to_host(d_dx), dx, kTol, "dx"));
  EXPECT_TRUE(close(to_host(d_R_y), R_y, kTol, "R_y"));
  EXPECT_TRUE(close(to_host(d_R_y0), R_y0, 0, "R_y with R_x = null"));
  EXPECT_TRUE(close(to_host(d_R_dx), R_dx, kTol, "R_dx"));
}

TEST(BatchedKernelsCuda, SoftmaxXentMatchesHostTwin) {
  MT_REQUIRE_GPU();
  const int n = 15, tasks = 6, K = 5;
  const int64_t count = static_cast<int64_t>(n) * tasks * K;
  Rng rng(25, 0, 0, Stream::kTest);
  auto z = task_varied(n, tasks, K, rng);
  z[3] = z[1] = 9.0f;  // a tied maximum in row 0
  std::vector<int32_t> labels(static_cast<size_t>(n) * tasks);
  for (int32_t& l : labels) l = static_cast<int32_t>(rng.below(K));
  const auto R_z = task_varied(n, tasks, K, rng);
  std::vector<float> prob(count), loss(tasks), dz(count), R_dz(count);
  std::vector<int32_t> correct(tasks);
  softmax_xent_forward_host(n, tasks, K, z.data(), labels.data(), prob.data(), loss.data(),
                            correct.data());
  softmax_xent_backward_host(n, tasks, K, prob.data(), labels.data(), dz.data());
  softmax_xent_r_backward_host(n, tasks, K, prob.data(), R_z.data(), R_dz.data());

  auto d_z = to_device(z), d_R_z = to_device(R_z);
  auto d_labels = to_device(labels);
  auto d_prob = poisoned_device<float>(count), d_loss = poisoned_device<float>(tasks),
       d_dz = poisoned_device<float>(count), d_R_dz = poisoned_device<float>(count);
  auto d_correct = poisoned_device<int32_t>(tasks);
  softmax_xent_forward_cuda(n, tasks, K, d_z.data(), d_labels.data(), d_prob.data(), d_loss.data(),
                            d_correct.data(), nullptr);
  softmax_xent_backward_cuda(n, tasks, K, d_prob.data(), d_labels.data(), d_dz.data(), nullptr);
  softmax_xent_r_backward_cuda(n, tasks, K, d_prob.data(), d_R_z.data(), d_R_dz.data(), nullptr);
  EXPECT_EQ(to_host(d_correct), correct);
  EXPECT_TRUE(close(to_host(d_prob), prob, kTol, "prob"));
  EXPECT_TRUE(close(to_host(d_loss), loss, kTol, "loss"));
  EXPECT_TRUE(close(to_host(d_dz), dz, kTol, "dz"));
  EXPECT_TRUE(close(to_host(d_R_dz), R_dz, kTol, "R_dz"));
}

}  // namespace
}  // namespace mt
