// Per-task outer gradients (DESIGN §3.3–3.4). The inner loop adapts θ on the support set,
// φ_{j+1} = φ_j − α ∇L_S(φ_j); the FOMAML gradient is g_F = ∇L_Q(φ_r); the exact MAML gradient
// comes from the adjoint recursion λ ← λ − α H_S(φ_j) λ for j = r−1 … r−k, starting at λ = g_F.
// Each step is one Hessian-vector product that recomputes that step's activations, so memory
// does not grow with r beyond the stored inner states, chosen by the trajectory mode:
//   store: keep φ_0..φ_{r−1};  recompute: keep only θ, rebuild φ_j by j steps;
//   checkpoint:C: keep every C-th φ_j, rebuild the rest from the checkpoint below.
// All modes run the same arithmetic on the same states, so their gradients are bit-identical.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/model.h"

namespace mt {

// kSlbamm is the bilevel solver (core/slbamm.h), run by launch/bilevel_trainer; the
// meta-gradient code paths reject it. The names after it are presets of the three choices of
// InnerLoop below with the estimator of their gradient path (algo_preset, core/meta_params.h).
enum class Algo {
  kMaml,
  kFomaml,
  kUfom,
  kSlbamm,
  kMetaSgd,
  kMamlpp,
  kAnil,
  kBoil,
  kReptile,
  kImaml
};

struct TrajectoryMode {
  enum Kind { kStore, kRecompute, kCheckpoint } kind = kStore;
  int every = 1;  // checkpoint interval C (kCheckpoint only)
};

// The three choices that make the algorithm family (DESIGN §4.1, core/meta_params.h):
// the inner update's rates, what it adapts, and how the meta-gradient is formed.
enum class Rates {
  kFixed,        // one rate α for every parameter and step (MAML)
  kPerParam,     // a learned rate per parameter, the same at every step (Meta-SGD)
  kPerLayerStep  // a learned rate per tensor and step (MAML++'s LSLR)
};
enum class Adapt {
  kAll,   // every tensor
  kHead,  // the linear head only (ANIL); the body is learned in the outer loop alone
  kBody   // everything but the head (BOIL)
};
enum class Method {
  kUnrolled,  // the adjoint sweep through the inner steps (exact, truncated or first order)
  kReptile,   // θ − φ_r
  kImplicit   // iMAML: (I + H/μ)⁻¹ ∇L_Q(φ_r) by conjugate gradients, proximal inner loop
};

struct InnerLoop {
  int steps = 1;    // r
  double lr = 0.4;  // α (the fixed rate, and the learned rates' initial value)
  TrajectoryMode trajectory;
  int truncate = -1;        // k: adjoint through the last k steps; −1 = all r
  double adjoint_clip = 0;  // clip λ elementwise to ±c after every adjoint step; 0 = off
  Rates rates = Rates::kFixed;
  Adapt adapt = Adapt::kAll;
  Method method = Method::kUnrolled;
  bool multi_step_loss = false;  // MAML++: Σ_j w_j L_Q(φ_j) (weights: msl_weights)
  int64_t msl_anneal_steps = 0;  // outer steps over which the weights move to the last step
  double prox = 1.0;             // iMAML's μ: L_S(φ) + μ/2 ‖φ − θ‖²
  int cg_steps = 5;              // iMAML: Hessian-vector products of the solve

  int adjoint_steps() const { return truncate < 0 ? steps : truncate; }
  // Interval between stored inner states: 1 (store), C, or r + 1 (recompute: only φ_0 = θ).
  int state_interval() const;
};

// Gradient evaluations of the first-order path: r inner gradients + 1 query gradient.
int64_t first_order_cost(const InnerLoop& inner);
// Extra gradient evaluations of the exact path: k HVPs plus the inner steps recomputed to
// rebuild states (r(r+1)/2 in total for recompute with k = r, as in the UFOM paper).
int64_t exact_path_cost(const InnerLoop& inner);

template <typename T>
class MetaEngine;
template <typename T>
class CpuBatchedModel;
class TaskBatch;

// One task's engine on the CPU backend (core/meta_engine.h) with its buffers; reused across
// tasks by one thread.
template <typename T>
struct TaskScratch {
  TaskScratch();
  TaskScratch(TaskScratch&&) noexcept;
  TaskScratch& operator=(TaskScratch&&) noexcept;
  ~TaskScratch();
  std::unique_ptr<CpuBatchedModel<T>> model;
  std::unique_ptr<MetaEngine<T>> engine;
  std::unique_ptr<TaskBatch> batch;
};

struct TaskOutcome {
  LossStats query;         // at φ_r
  int64_t grad_evals = 0;  // gradient evaluations spent (HVPs count as one)
};

// The engine for a single task on the CPU: what tests, the debug dump and per-episode tools use.
template <typename T>
class MetaGradient {
 public:
  MetaGradient(const Model<T>& model, InnerLoop inner);

  const Model<T>& model() const { return model_; }
  const InnerLoop& inner() const { return inner_; }
  TaskScratch<T> make_scratch() const;

  // Overwrites g_fo with g_F and, when g_exact is non-null, g_exact with the exact (or
  // k-truncated) meta-gradient. Returns the query loss/accuracy after adaptation.
  TaskOutcome compute(const T* theta, const Episode<T>& ep, T* g_fo, T* g_exact,
                      TaskScratch<T>& s) const;

  // Evaluation: `steps` inner steps on the support, then loss/accuracy on the query.
  LossStats adapt_and_evaluate(const T* theta, const Episode<T>& ep, int steps,
                               TaskScratch<T>& s) const;

 private:
  const Model<T>& model_;
  InnerLoop inner_;
};

}  // namespace mt
