// One outer step's gradient work on this rank (DESIGN §2 steps 2–5): for each owned task, get
// its episode, run the per-task meta-gradient of the chosen algorithm, and sum the task
// gradients and statistics in task-index order (so results do not depend on thread timing).
// The tasks run as batches of the task-batched model (any backend) through the shared engine;
// the estimator (FOMAML, MAML, UFOM) decides which take the exact path. The caller allreduces
// the sums across ranks (pack/unpack, or pack_exact/unpack_exact for the exact reduction) and
// divides by the global meta-batch.
#pragma once

#include <functional>
#include <vector>

#include "core/batched_model.h"
#include "core/estimator.h"
#include "core/exact_sum.h"
#include "core/meta_engine.h"
#include "core/meta_gradient.h"

namespace mt {

struct MetaStepSettings {
  Algo algo = Algo::kMaml;
  uint64_t seed = 0;                 // keys the UFOM draws
  int threads = 1;                   // CPU worker threads (the CPU backend's, and episode sampling)
  bool keep_task_gradients = false;  // host copies of every task's g_F / g_E (debug dumps)
  int64_t first_order_steps = 0;     // MAML's derivative-order annealing (EstimatorSettings)
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

  // The exact reduction (dist.reduce = exact, core/exact_sum.h), on after reset_exact: MetaStep
  // then accumulates grad and fo_gap as fixed-point integers (grad_fixed, gap_fixed) and puts
  // every task's scalars in that task's slot (task_stats) instead of summing them; pack_exact /
  // unpack_exact carry both through one int64 sum-allreduce. After unpack_exact, grad and fo_gap
  // are the exact sums rounded once and the scalars are summed in task-index order, so every
  // field has the same bits for any number of ranks and any task-to-rank assignment.
  enum TaskStat { kLoss, kAcc, kV2, kD2, kGradEvals, kExact, kTaskStats };
  bool exact = false;
  std::vector<Fixed> grad_fixed, gap_fixed;  // d accumulators each
  std::vector<double> task_stats;            // kTaskStats per task of the meta-batch
  std::vector<int64_t> task_owned;           // 1 for the tasks this rank ran

  // Zeroes everything for a meta-batch of `tasks` tasks (at most kExactMaxTasks).
  void reset_exact(int64_t d, int64_t tasks);
  // The limbs of grad_fixed (and gap_fixed when with_fo_gap), then per task its statistics' bit
  // patterns and its owner count: 2d (+ 2d) + (kTaskStats + 1)·tasks int64. Ranks that do not
  // own a task contribute zeros to its slots, so the integer sum is the owner's bits.
  std::vector<int64_t> pack_exact(bool with_fo_gap) const;
  // From the summed buffer; checks that every task was run by exactly one rank.
  void unpack_exact(const std::vector<int64_t>& buf, bool with_fo_gap);
};

template <typename T>
class MetaStep {
 public:
  using EpisodeFn = std::function<void(int64_t task, Episode<T>& ep)>;

  // Runs on `model` (any backend), which must outlive this object. settings.threads samples
  // episodes in parallel.
  MetaStep(BatchedModel<T>& model, const InnerLoop& inner, MetaStepSettings settings);
  // The CPU backend over mg's model with settings.threads worker threads; keeps every task's
  // gradients (task_fo / task_exact) whatever settings.keep_task_gradients says.
  MetaStep(const MetaGradient<T>& mg, MetaStepSettings settings);
  ~MetaStep();

  // Runs the given global task indices of outer step `step` with UFOM probability q (ignored
  // unless algo is UFOM). θ is host memory. episode(t, ep) must be thread-safe. Per-task g_F /
  // g_E stay readable through task_fo() / task_exact() until the next run (host copies, made
  // only when the MetaStep keeps task gradients).
  void run(const T* theta, uint64_t step, const std::vector<int64_t>& tasks,
           const EpisodeFn& episode, double q, MetaStepSums<T>& sums);

  const Episode<T>& task_episode(size_t i) const { return episodes_[i]; }
  const T* task_fo(size_t i) const { return host_fo_.data() + i * dim_; }
  const T* task_exact(size_t i) const { return host_exact_.data() + i * dim_; }
  bool task_has_exact(size_t i) const { return exact_[i] != 0; }

 private:
  // One chunk of at most max_tasks() tasks: tasks [first, first + count) of this step.
  void run_chunk(size_t first, size_t count, double q, MetaStepSums<T>& sums);
  void reserve(Buffer<T>& buf, int64_t n) const;
  // Exact mode: acc += the tasks of x (layout l; its task i is task tasks_[first + ids[i]] of
  // the step), or an Error naming the tensor and value of a refused element.
  void add_exact(const BatchedLayout& l, const T* x, Fixed* acc, size_t first,
                 const std::vector<int>* ids, const char* what) const;

  std::unique_ptr<BatchedModel<T>> owned_;  // the CPU backend made by the MetaGradient form
  BatchedModel<T>& model_;
  MetaStepSettings settings_;
  std::unique_ptr<Estimator> estimator_;
  std::unique_ptr<MetaEngine<T>> engine_;
  std::unique_ptr<TaskBatch> batch_;
  int64_t dim_;
  bool keep_;                         // host copies of per-task gradients
  std::vector<Episode<T>> episodes_;  // one per task of the current step
  std::vector<char> exact_;
  Buffer<T> theta_, g_fo_, g_exact_, g_mix_, grad_sum_, gap_sum_;
  std::unique_ptr<ExactSumOps<T>> exact_ops_;  // made on the first exact run
  Buffer<Fixed> grad_fixed_, gap_fixed_;
  std::vector<int64_t> tasks_;  // global indices of the current step's tasks
  uint64_t step_ = 0;
  std::vector<T> host_fo_, host_exact_;  // keep_task_gradients only
};

}  // namespace mt
