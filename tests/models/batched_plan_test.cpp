// One plan for every task count, checked without a GPU on the host twin of the CUDA backend
// (models/batched_twin.h, the same BatchedNet and layouts as the GPU): built once for max_tasks,
// a call of any T <= max_tasks gives every task the bits it has alone and in the full batch
// (what dist.reduce=exact's promise rests on), and no call of any T allocates memory.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "core/batched_layout.h"
#include "core/vec_ops.h"
#include "models/batched_twin.h"
#include "models/conv4.h"
#include "tests/support/episodes.h"

// Every heap allocation of this test binary is counted while `counting` is set.
namespace {
std::atomic<bool> counting{false};
std::atomic<long> allocations{0};
}  // namespace

void* operator new(std::size_t n) {
  if (counting) ++allocations;
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace mt {
namespace {

constexpr int kMaxTasks = 5;

struct Outputs {  // per split: gradient and Hv in the batched layout of the call, losses
  std::vector<float> grad[2], hv[2];
  std::vector<LossStats> stats[2];
};

// Parameters of the tasks in `pick`, gathered from a kMaxTasks-task batched buffer into a
// pick.size()-task one.
std::vector<float> gather(const ParamLayout& layout, const std::vector<float>& all,
                          const std::vector<int>& pick) {
  const BatchedLayout from(layout, kMaxTasks), to(layout, static_cast<int>(pick.size()));
  std::vector<float> out(to.total());
  for (size_t k = 0; k < pick.size(); ++k)
    for (int64_t j = 0; j < layout.total(); ++j)
      out[to.index(static_cast<int>(k), j)] = all[from.index(pick[k], j)];
  return out;
}

Outputs run(TwinBatchedModel<float>& twin, const std::vector<const Episode<float>*>& eps,
            const std::vector<float>& phi, const std::vector<float>& v, long* allocated) {
  auto batch = twin.make_batch();
  twin.load(eps, *batch);
  const int T = static_cast<int>(eps.size());
  Outputs o;
  for (int k = 0; k < 2; ++k) {
    o.grad[k].resize(phi.size());
    o.hv[k].resize(phi.size());
    o.stats[k].resize(T);
  }
  allocations = 0;
  counting = true;
  for (int k = 0; k < 2; ++k) {
    const Split s = k == 0 ? Split::kSupport : Split::kQuery;
    twin.loss_grad(*batch, s, phi.data(), o.grad[k].data(), o.stats[k].data());
    twin.hvp(*batch, s, phi.data(), v.data(), o.hv[k].data(), nullptr);
  }
  counting = false;
  *allocated = allocations;
  return o;
}

TEST(BatchedPlan, EveryTaskCountGivesEachTaskItsOwnBitsAndAllocatesNothing) {
  const Conv4Spec spec{{1, 16, 16}, 6, 4, Conv4Pool::kMax};
  auto net = make_conv4<float>(spec);
  const ParamLayout& layout = net->layout();
  std::vector<Episode<float>> eps;
  for (int t = 0; t < kMaxTasks; ++t)
    eps.push_back(testing::noise_episode<float>(spec.input, spec.ways, 2, 3, 70 + t));
  // Per-task parameters and directions that differ, so that a task-mixing offset fails.
  const BatchedLayout full(layout, kMaxTasks);
  std::vector<float> theta(layout.total()), phi(full.total()), v(full.total());
  net->init(theta.data(), 4);
  host_vec_ops<float>().broadcast(full, theta.data(), phi.data());
  Rng rng(9, 0, 0, Stream::kTest);
  for (auto& x : phi) x += static_cast<float>(0.05 * rng.uniform(-1, 1));
  for (auto& x : v) x = static_cast<float>(rng.uniform(-1, 1));

  TwinBatchedModel<float> twin(*net, kMaxTasks, 3 * spec.ways);
  std::vector<const Episode<float>*> all;
  for (const auto& e : eps) all.push_back(&e);
  long allocated = -1;
  const Outputs whole = run(twin, all, phi, v, &allocated);
  EXPECT_EQ(allocated, 0) << "a call of " << kMaxTasks << " tasks allocated";

  std::vector<std::vector<int>> picks;
  for (int T = 1; T < kMaxTasks; ++T) {
    picks.emplace_back();
    for (int t = 0; t < T; ++t) picks.back().push_back(t);
  }
  for (int t = 0; t < kMaxTasks; ++t) picks.push_back({t});
  picks.push_back({4, 1, 2});
  for (const std::vector<int>& pick : picks) {
    std::vector<const Episode<float>*> some;
    for (int t : pick) some.push_back(&eps[t]);
    const int T = static_cast<int>(pick.size());
    const Outputs part =
        run(twin, some, gather(layout, phi, pick), gather(layout, v, pick), &allocated);
    EXPECT_EQ(allocated, 0) << "a call of " << T << " tasks allocated";
    const BatchedLayout mine(layout, T);
    for (int k = 0; k < 2; ++k)
      for (int i = 0; i < T; ++i) {
        const int t = pick[i];
        for (int64_t j = 0; j < layout.total(); ++j) {
          const float g = part.grad[k][mine.index(i, j)], G = whole.grad[k][full.index(t, j)];
          const float h = part.hv[k][mine.index(i, j)], H = whole.hv[k][full.index(t, j)];
          ASSERT_EQ(std::memcmp(&g, &G, sizeof g), 0)
              << "split " << k << " task " << t << " of " << T << ": gradient element " << j;
          ASSERT_EQ(std::memcmp(&h, &H, sizeof h), 0)
              << "split " << k << " task " << t << " of " << T << ": Hv element " << j;
        }
        EXPECT_EQ(part.stats[k][i].loss, whole.stats[k][t].loss) << "task " << t << " of " << T;
        EXPECT_EQ(part.stats[k][i].acc, whole.stats[k][t].acc) << "task " << t << " of " << T;
      }
  }
  EXPECT_THROW(
      {
        std::vector<Episode<float>> six(kMaxTasks + 1, eps[0]);
        std::vector<const Episode<float>*> p;
        for (const auto& e : six) p.push_back(&e);
        auto b = twin.make_batch();
        twin.load(p, *b);
      },
      Error);
}

}  // namespace
}  // namespace mt
