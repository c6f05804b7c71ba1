// One outer step's gradient work on this rank (DESIGN §2 steps 2–5): for each owned task, get
// its episode, run the per-task meta-gradient of the chosen algorithm, and sum the task
// gradients and statistics in task-index order (so results do not depend on thread timing).
// Tasks run in parallel on CPU threads, each with its own scratch; BLAS stays single-threaded.
// The caller allreduces the sums across ranks and divides by the global meta-batch.
#pragma once

#include <functional>
#include <vector>

#include "core/meta_gradient.h"

namespace mt {

struct MetaStepSettings {
  Algo algo = Algo::kMaml;
  uint64_t seed = 0;  // keys the UFOM draws
  int threads = 1;    // CPU worker threads
};

// Sums over this rank's tasks. Everything here is summed, so a sum-allreduce of
// pack()ed buffers combines ranks.
template <typename T>
struct MetaStepSums {
  std::vector<T> grad;       // Σ_t g_t
  std::vector<T> fo_gap;     // Σ over exact tasks of (g_E − g_F): the FO bias estimate
  double loss = 0, acc = 0;  // Σ query loss / accuracy after adaptation
  double tasks = 0, exact_tasks = 0;
  double v2 = 0, d2 = 0;  // Σ over exact tasks of ‖g_E‖², ‖g_E − g_F‖²
  double grad_evals = 0;

  void reset(int64_t d);
  // grad, then fo_gap when with_fo_gap (only needed where the FO bias is logged: it doubles the
  // allreduce), then the scalars.
  std::vector<T> pack(bool with_fo_gap) const;
  void unpack(const std::vector<T>& buf, bool with_fo_gap);
};

template <typename T>
class MetaStep {
 public:
  using EpisodeFn = std::function<void(int64_t task, Episode<T>& ep)>;

  MetaStep(const MetaGradient<T>& mg, MetaStepSettings settings);

  // Runs the given global task indices of outer step `step` with UFOM probability q (ignored
  // unless algo is UFOM). episode(t, ep) must be thread-safe. When keep_task_gradients is set,
  // per-task g_F / g_E stay readable through task_fo() / task_exact() (for debug dumps).
  void run(const T* theta, uint64_t step, const std::vector<int64_t>& tasks,
           const EpisodeFn& episode, double q, MetaStepSums<T>& sums);

  const Episode<T>& task_episode(size_t i) const { return episodes_[i]; }
  const T* task_fo(size_t i) const { return g_fo_.data() + i * dim_; }
  const T* task_exact(size_t i) const { return g_exact_.data() + i * dim_; }
  bool task_has_exact(size_t i) const { return exact_[i] != 0; }

 private:
  const MetaGradient<T>& mg_;
  MetaStepSettings settings_;
  int64_t dim_;
  std::vector<TaskScratch<T>> scratch_;  // one per thread
  std::vector<Episode<T>> episodes_;     // one per task of the current step
  std::vector<T> g_fo_, g_exact_;        // [tasks, d]
  std::vector<char> exact_;
  std::vector<TaskOutcome> outcomes_;
};

}  // namespace mt
