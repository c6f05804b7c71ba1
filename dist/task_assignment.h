// Which tasks of an outer step each rank runs (DESIGN §6): task t on rank t mod N by default,
// or, when per-task costs are known before the step (UFOM draws every ξ_t up front), a greedy
// longest-first assignment that evens out the ranks' predicted cost.
#pragma once

#include <cstdint>
#include <vector>

namespace mt::dist {

// Tasks t in [0, meta_batch) with t ≡ rank (mod size), in increasing order.
std::vector<int64_t> modulo_tasks(int64_t meta_batch, int rank, int size);

// Longest processing time first: tasks in order of decreasing cost (ties: lower index first)
// each go to the rank with the least cost so far (ties: lower rank). Returns, for every rank,
// its tasks in increasing order. Deterministic, so every rank computes the same assignment.
std::vector<std::vector<int64_t>> balanced_tasks(const std::vector<double>& cost, int size);

// max over ranks of the summed cost / mean over ranks: 1 is perfect balance.
double imbalance(const std::vector<std::vector<int64_t>>& assignment,
                 const std::vector<double>& cost);

}  // namespace mt::dist
