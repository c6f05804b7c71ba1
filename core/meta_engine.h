// The meta-gradient algorithms written once over the task-batched model (DESIGN §3.3–3.4, §5.1):
// the inner loop φ_{j+1} = φ_j − α ∇L_S(φ_j) of every task of a batch at once, the first-order
// gradient g_F = ∇L_Q(φ_r), and the exact adjoint sweep λ ← λ − α H_S(φ_j) λ (j = r−1 … r−k,
// optional clipping of λ) for the tasks that take the exact path, run as a gathered sub-batch.
// Stored inner states follow the trajectory mode (store / recompute / checkpoint:C) and are
// kept only for the exact tasks. Every buffer is the backend's memory; nothing here knows
// whether that is a CPU or a GPU.
#pragma once

#include <vector>

#include "core/batched_model.h"
#include "core/meta_gradient.h"

namespace mt {

template <typename T>
class MetaEngine {
 public:
  MetaEngine(BatchedModel<T>& model, InnerLoop inner);

  BatchedModel<T>& model() { return model_; }
  const InnerLoop& inner() const { return inner_; }
  const VecOps<T>& ops() const { return model_.ops(); }

  // θ: d elements (θ layout, backend memory). Overwrites g_fo [b.tasks, d] with every task's
  // g_F and g_exact [exact.size(), d] with the exact (or k-truncated) meta-gradient of tasks
  // exact[i] (ascending indices into b; both buffers batched). Host query[t]: the query
  // loss/accuracy after adaptation. g_exact may be null when exact is empty.
  void run(const T* theta, const TaskBatch& b, const std::vector<int>& exact, T* g_fo, T* g_exact,
           LossStats* query);

  // Evaluation: `steps` inner steps on every task's support, then host query[t].
  void adapt_and_evaluate(const T* theta, const TaskBatch& b, int steps, LossStats* query);
  // The batch evaluations load their episodes into: made once and reused, so that every
  // evaluation of a run runs on the same buffers (and, on a GPU, replays the same graphs).
  TaskBatch& eval_batch();

 private:
  // φ ← φ − α ∇L_S(φ) for every task of b: the one inner update used everywhere.
  void inner_step(const TaskBatch& b, T* phi);
  void clip(int64_t n, T* lambda) const;
  // Grows buf to at least n elements (never shrinks, never reallocates in the steady state).
  void reserve(Buffer<T>& buf, int64_t n) const;

  BatchedModel<T>& model_;
  InnerLoop inner_;
  BatchedLayout layout_;  // one task; with_tasks() gives a batch's
  Buffer<T> phi_, grad_, hv_, phi_exact_;
  std::vector<Buffer<T>> states_;  // φ_j of the exact tasks, j = C, 2C, … (φ_0 = θ is not kept)
  std::unique_ptr<TaskBatch> exact_batch_;
  std::unique_ptr<TaskBatch> eval_batch_;  // made at the first evaluation
};

}  // namespace mt
