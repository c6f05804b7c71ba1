// The meta-gradient algorithms written once over the task-batched model (DESIGN §3.3–3.4, §4.1,
// §5.1). The inner loop of every task of a batch at once,
//   φ_{j+1} = φ_j − P_j ⊙ (∇L_S(φ_j) + μ(φ_j − θ)),
// where P_j holds the step's rates (α, Meta-SGD's per-parameter or LSLR's per-tensor rates,
// zero on tensors the inner loop does not adapt) and μ is iMAML's proximal weight (0 otherwise).
// The outer objective is L_Q(φ_r), or MAML++'s Σ_j w_j L_Q(φ_j). Its gradient by:
//   unrolled: the adjoint sweep λ_j = λ_{j+1} − H_j (P_j ⊙ λ_{j+1}) + w_j ∇L_Q(φ_j) from
//     λ_r = w_r ∇L_Q(φ_r), with the rate gradients −∇L_S(φ_j) ⊙ λ_{j+1} (summed per tensor for
//     LSLR) on the way; exact on the tasks that take the exact path (their Hessian terms for
//     the last k steps), first order (no Hessian terms) for every task. Without learned rates
//     or the multi-step loss the first-order gradient is just ∇L_Q(φ_r), with no sweep.
//   Reptile: θ − φ_r.   implicit (iMAML): x = (I + H(φ_r)/μ)⁻¹ ∇L_Q(φ_r) by conjugate gradients.
// Stored inner states follow the trajectory mode (store / recompute / checkpoint:C). Gradients
// are in the meta-parameter layout ψ = θ ⊕ rates (core/meta_params.h), whose θ part is the
// model's batched layout. Every buffer is the backend's memory; nothing here knows whether that
// is a CPU or a GPU. A new inner rule, objective or method is a branch in the few functions
// below that name it (inner_step, direction, add_rate_grads, sweep, solve_implicit).
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
  // ψ's layout: θ's tensors, then the learned rates.
  const ParamLayout& layout() const { return meta_; }

  // MAML++'s weights w_1 … w_r of the multi-step loss for the coming runs (msl_weights).
  void set_step_weights(std::vector<double> w);

  // ψ: layout().total() elements (backend memory). Overwrites g_fo [b.tasks, dψ] with every
  // task's first-order gradient and g_exact [exact.size(), dψ] with the exact (or k-truncated)
  // meta-gradient of tasks exact[i] (ascending indices into b; both buffers batched in ψ's
  // layout). Host query[t]: the query loss/accuracy after adaptation. g_exact may be null when
  // exact is empty.
  void run(const T* psi, const TaskBatch& b, const std::vector<int>& exact, T* g_fo, T* g_exact,
           LossStats* query);

  // Evaluation: `steps` inner steps on every task's support (with ψ's rates), then host query[t].
  void adapt_and_evaluate(const T* psi, const TaskBatch& b, int steps, LossStats* query);
  // The batch evaluations load their episodes into: made once and reused, so that every
  // evaluation of a run runs on the same buffers (and, on a GPU, replays the same graphs).
  TaskBatch& eval_batch();

 private:
  // The rates of this run from ψ (LSLR's on the host, Meta-SGD's broadcast over `tasks`), and
  // θ broadcast when the method needs it.
  void prepare(const T* psi, int tasks);
  // Meta-SGD: the rates broadcast over `tasks` tasks (θ-layout batch).
  const T* per_param_rates(int tasks);
  // ANIL: when the inner loop leaves the first tensors alone, the backend keeps the output of
  // their layers on b's support at φ_0 (phi) and inner steps run only the passes after them
  // (BatchedModel::keep_features); kept_ says whether it could. Called before the inner steps
  // of every batch (the run's, the exact sub-batch's sweep, an evaluation's).
  void keep_support(const TaskBatch& b, const T* phi);
  // φ ← φ − P_j ⊙ (∇L_S(φ) + μ(φ − θ)) for every task of b (j: the step, for LSLR).
  void inner_step(const TaskBatch& b, int j, T* phi);
  // v = P_j ⊙ λ over `tasks` tasks.
  void direction(int tasks, int j, const T* lambda, T* v);
  // The rate gradients of step j: g's rate part += −grad ⊙ λ (LSLR: into lslr_grad_, per tensor).
  void add_rate_grads(int tasks, int j, const T* grad, const T* lambda, T* g);
  // The adjoint sweep over batch b (its φ_j rebuilt from `states`) with λ_r in g's θ part on
  // entry; leaves the gradient of ψ in g. Hessian terms at steps j ≥ hessian_from.
  void sweep(const TaskBatch& b, const T* psi, std::vector<Buffer<T>>& states, T* g,
             int hessian_from, int stop);
  // iMAML: g ← (I + H/μ)⁻¹ g at φ (tasks of b), by cg_steps conjugate-gradient iterations.
  void solve_implicit(const TaskBatch& b, const T* phi, T* g);
  void clip(int64_t n, T* lambda) const;
  bool learned_rates() const { return inner_.rates != Rates::kFixed; }
  bool needs_fo_sweep() const { return learned_rates() || inner_.multi_step_loss; }
  double step_weight(int j) const;  // w_j of φ_j, j = 1 … r
  // Where θ tensor k's rates start in ψ's rate part (ψ offset − d); k must be adapted.
  int64_t rate_start(int k) const;
  // Grows buf to at least n elements (never shrinks, never reallocates in the steady state).
  void reserve(Buffer<T>& buf, int64_t n) const;

  BatchedModel<T>& model_;
  InnerLoop inner_;
  ParamLayout meta_;
  BatchedLayout layout_, meta_layout_;  // θ's and ψ's, one task; with_tasks() gives a batch's
  std::vector<int> adapted_;            // θ's tensors the inner loop adapts
  int keep_from_ = 0;                   // the first of them (> 0: features can be kept)
  bool kept_ = false;                   // inner steps run from the kept features
  std::vector<int> rate_of_;            // ψ's tensor holding tensor k's rates (−1: none)
  std::vector<double> weights_;         // w_1 … w_r (empty: the last step only)
  std::vector<T> lslr_;                 // host LSLR rates [rate tensors][r]
  std::vector<double> lslr_grad_;       // host LSLR gradients of a sweep [tasks][rates]
  Buffer<T> phi_, grad_, hv_, phi_exact_, v_, query_grad_, theta_b_;
  Buffer<T> rates_;      // Meta-SGD: θ-shaped rates, then their broadcast over rates_tasks_
  int rates_tasks_ = 0;  // tasks of the broadcast in rates_ (0: none yet)
  Buffer<T> cg_r_, cg_p_, cg_ap_;
  std::vector<Buffer<T>> states_;  // φ_j of the exact tasks, j = C, 2C, … (φ_0 = θ not kept)
  std::vector<Buffer<T>> states_all_;  // the same for every task, for the first-order sweep
  std::unique_ptr<TaskBatch> exact_batch_;
  std::unique_ptr<TaskBatch> eval_batch_;  // made at the first evaluation
};

}  // namespace mt
