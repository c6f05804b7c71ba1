// Inner loop, FOMAML and the exact adjoint meta-gradient (core/meta_gradient.h).
#include "core/meta_gradient.h"

#include "core/batched_model_cpu.h"
#include "core/check.h"
#include "core/meta_engine.h"

namespace mt {

int InnerLoop::state_interval() const {
  switch (trajectory.kind) {
    case TrajectoryMode::kStore:
      return 1;
    case TrajectoryMode::kCheckpoint:
      return trajectory.every;
    case TrajectoryMode::kRecompute:
      break;
  }
  return steps + 1;
}

namespace {
// Gradients of a sweep's first-order part over steps [0, top): the inner steps that rebuild
// each φ_j from the state below it, plus per step the support gradient (learned rates) and the
// query gradient (multi-step loss, j ≥ 1).
int64_t first_order_sweep_cost(const InnerLoop& inner, int top) {
  const int c = inner.state_interval();
  int64_t cost = 0;
  for (int j = 0; j < top; ++j)
    cost += j % c + (inner.rates != Rates::kFixed ? 1 : 0) + (inner.multi_step_loss && j ? 1 : 0);
  return cost;
}
bool sweeps_first_order(const InnerLoop& inner) {
  return inner.method == Method::kUnrolled &&
         (inner.rates != Rates::kFixed || inner.multi_step_loss);
}
}  // namespace

int64_t first_order_cost(const InnerLoop& inner) {
  const int64_t forward = inner.steps + 1;
  return forward + (sweeps_first_order(inner) ? first_order_sweep_cost(inner, inner.steps) : 0);
}

int64_t exact_path_cost(const InnerLoop& inner) {
  if (inner.method == Method::kImplicit) return inner.cg_steps;
  if (inner.method == Method::kReptile) return 0;
  const int r = inner.steps, k = inner.adjoint_steps(), c = inner.state_interval();
  int64_t cost = k;
  for (int j = r - k; j < r; ++j) {
    cost += j % c;  // steps from the checkpoint below φ_j
    if (inner.rates != Rates::kFixed) cost += 1;
    if (inner.multi_step_loss && j) cost += 1;
  }
  if (sweeps_first_order(inner)) cost += first_order_sweep_cost(inner, r - k);
  return cost;
}

template <typename T>
TaskScratch<T>::TaskScratch() = default;
template <typename T>
TaskScratch<T>::TaskScratch(TaskScratch&&) noexcept = default;
template <typename T>
TaskScratch<T>& TaskScratch<T>::operator=(TaskScratch&&) noexcept = default;
template <typename T>
TaskScratch<T>::~TaskScratch() = default;

template <typename T>
MetaGradient<T>::MetaGradient(const Model<T>& model, InnerLoop inner)
    : model_(model), inner_(inner) {
  MT_CHECK(inner.steps >= 0, "inner steps must be >= 0");
  MT_CHECK(inner.adjoint_steps() <= inner.steps, "truncation exceeds inner steps");
  MT_CHECK(inner.state_interval() >= 1, "checkpoint interval must be >= 1");
}

template <typename T>
TaskScratch<T> MetaGradient<T>::make_scratch() const {
  TaskScratch<T> s;
  s.model = std::make_unique<CpuBatchedModel<T>>(model_, /*threads=*/1, /*max_tasks=*/1);
  s.engine = std::make_unique<MetaEngine<T>>(*s.model, inner_);
  s.batch = s.model->make_batch();
  return s;
}

template <typename T>
TaskOutcome MetaGradient<T>::compute(const T* theta, const Episode<T>& ep, T* g_fo, T* g_exact,
                                     TaskScratch<T>& s) const {
  TaskOutcome out;
  s.model->load({&ep}, *s.batch);
  const bool exact = g_exact != nullptr;
  s.engine->run(theta, *s.batch, exact ? std::vector<int>{0} : std::vector<int>{}, g_fo, g_exact,
                &out.query);
  out.grad_evals = first_order_cost(inner_) + (exact ? exact_path_cost(inner_) : 0);
  return out;
}

template <typename T>
LossStats MetaGradient<T>::adapt_and_evaluate(const T* theta, const Episode<T>& ep, int steps,
                                              TaskScratch<T>& s) const {
  LossStats out;
  s.model->load({&ep}, *s.batch);
  s.engine->adapt_and_evaluate(theta, *s.batch, steps, &out);
  return out;
}

template struct TaskScratch<float>;
template struct TaskScratch<double>;
template class MetaGradient<float>;
template class MetaGradient<double>;

}  // namespace mt
