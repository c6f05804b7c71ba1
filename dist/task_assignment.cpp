// Task-to-rank assignment (dist/task_assignment.h).
#include "dist/task_assignment.h"

#include <algorithm>
#include <numeric>

#include "core/check.h"

namespace mt::dist {

std::vector<int64_t> modulo_tasks(int64_t meta_batch, int rank, int size) {
  MT_CHECK(size >= 1 && rank >= 0 && rank < size, "rank ", rank, " of ", size);
  std::vector<int64_t> tasks;
  for (int64_t t = rank; t < meta_batch; t += size) tasks.push_back(t);
  return tasks;
}

std::vector<std::vector<int64_t>> balanced_tasks(const std::vector<double>& cost, int size) {
  MT_CHECK(size >= 1, "size ", size);
  std::vector<int64_t> order(cost.size());
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return cost[a] > cost[b]; });
  std::vector<std::vector<int64_t>> tasks(size);
  std::vector<double> load(size, 0.0);
  for (int64_t t : order) {
    const int r = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
    load[r] += cost[t];
    tasks[r].push_back(t);
  }
  for (auto& v : tasks) std::sort(v.begin(), v.end());
  return tasks;
}

double imbalance(const std::vector<std::vector<int64_t>>& assignment,
                 const std::vector<double>& cost) {
  double most = 0, total = 0;
  for (const auto& tasks : assignment) {
    double load = 0;
    for (int64_t t : tasks) load += cost[t];
    most = std::max(most, load);
    total += load;
  }
  return total > 0 ? most * static_cast<double>(assignment.size()) / total : 1.0;
}

}  // namespace mt::dist
