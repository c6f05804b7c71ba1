// Task-to-rank assignment: modulo ownership, and the longest-first balance of UFOM's uneven
// per-task costs (every task exactly once, deterministic, never worse than modulo here).
#include "dist/task_assignment.h"

#include <gtest/gtest.h>

#include <vector>

namespace mt::dist {
namespace {

TEST(TaskAssignment, ModuloOwnsTasksCongruentToTheRank) {
  EXPECT_EQ(modulo_tasks(10, 1, 4), (std::vector<int64_t>{1, 5, 9}));
  EXPECT_EQ(modulo_tasks(3, 3, 4), (std::vector<int64_t>{}));
  EXPECT_EQ(modulo_tasks(4, 0, 1), (std::vector<int64_t>{0, 1, 2, 3}));
}

TEST(TaskAssignment, BalancedCoversEveryTaskOnceAndEvensTheCost) {
  // 8 tasks, exact ones (cost 1 + 3) at 0, 2, 4, 6: modulo over 2 ranks puts all four on rank 0.
  const std::vector<double> cost = {4, 1, 4, 1, 4, 1, 4, 1};
  std::vector<std::vector<int64_t>> modulo(2);
  for (int r = 0; r < 2; ++r) modulo[r] = modulo_tasks(8, r, 2);
  EXPECT_DOUBLE_EQ(imbalance(modulo, cost), 16.0 / 10.0);

  const auto balanced = balanced_tasks(cost, 2);
  ASSERT_EQ(balanced.size(), 2u);
  // Longest first, each to the least-loaded rank: 0→r0, 2→r1, 4→r0, 6→r1, 1→r0, 3→r1, ...
  EXPECT_EQ(balanced[0], (std::vector<int64_t>{0, 1, 4, 5}));
  EXPECT_EQ(balanced[1], (std::vector<int64_t>{2, 3, 6, 7}));
  EXPECT_DOUBLE_EQ(imbalance(balanced, cost), 1.0);

  const std::vector<double> uneven = {5, 3, 3, 2, 2, 2, 9};
  std::vector<int> seen(uneven.size(), 0);
  const auto three = balanced_tasks(uneven, 3);
  for (const auto& tasks : three)
    for (int64_t t : tasks) ++seen[t];
  EXPECT_EQ(seen, std::vector<int>(uneven.size(), 1));
  EXPECT_EQ(three, balanced_tasks(uneven, 3));               // deterministic
  EXPECT_DOUBLE_EQ(imbalance(three, uneven), 9.0 * 3 / 26);  // task 6 alone bounds it
}

}  // namespace
}  // namespace mt::dist
