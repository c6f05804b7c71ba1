// Inner loop, FOMAML and the exact adjoint meta-gradient (core/meta_gradient.h).
#include "core/meta_gradient.h"

#include <algorithm>

#include "core/check.h"

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

int64_t first_order_cost(const InnerLoop& inner) { return inner.steps + 1; }

int64_t exact_path_cost(const InnerLoop& inner) {
  const int r = inner.steps, k = inner.adjoint_steps(), c = inner.state_interval();
  int64_t cost = k;
  for (int j = r - k; j < r; ++j) cost += j % c;  // steps from the checkpoint below φ_j
  return cost;
}

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
  s.ws = model_.make_workspace();
  const size_t d = model_.layout().total();
  s.phi.resize(d);
  s.grad.resize(d);
  s.hv.resize(d);
  return s;
}

template <typename T>
void MetaGradient<T>::inner_step(T* phi, const Batch<T>& support, TaskScratch<T>& s) const {
  model_.loss_grad(phi, support, s.grad.data(), *s.ws);
  const T lr = static_cast<T>(inner_.lr);
  const int64_t d = model_.layout().total();
  for (int64_t i = 0; i < d; ++i) phi[i] -= lr * s.grad[i];
}

template <typename T>
TaskOutcome MetaGradient<T>::compute(const T* theta, const Episode<T>& ep, T* g_fo, T* g_exact,
                                     TaskScratch<T>& s) const {
  const int r = inner_.steps, k = inner_.adjoint_steps(), c = inner_.state_interval();
  const int64_t d = model_.layout().total();
  const bool exact = g_exact != nullptr;
  TaskOutcome out;

  // Forward: the inner loop, storing φ_j for j = C, 2C, … below r when the exact path needs them.
  if (exact) s.states.resize((r - 1) / c + 1);
  std::copy(theta, theta + d, s.phi.begin());
  for (int j = 0; j < r; ++j) {
    if (exact && j > 0 && j % c == 0) s.states[j / c].assign(s.phi.begin(), s.phi.end());
    inner_step(s.phi.data(), ep.support, s);
  }
  out.query = model_.loss_grad(s.phi.data(), ep.query, g_fo, *s.ws);
  out.grad_evals = first_order_cost(inner_);
  if (!exact) return out;

  // Backward: the adjoint sweep over the last k inner steps, λ in g_exact.
  const T lr = static_cast<T>(inner_.lr);
  const T clip = static_cast<T>(inner_.adjoint_clip);
  auto clip_lambda = [&] {
    if (clip > 0)
      for (int64_t i = 0; i < d; ++i) g_exact[i] = std::clamp(g_exact[i], -clip, clip);
  };
  std::copy(g_fo, g_fo + d, g_exact);
  clip_lambda();
  for (int j = r - 1; j >= r - k; --j) {
    const int base = (j / c) * c;
    const T* start = base == 0 ? theta : s.states[base / c].data();
    std::copy(start, start + d, s.phi.begin());
    for (int i = base; i < j; ++i) inner_step(s.phi.data(), ep.support, s);
    model_.hvp(s.phi.data(), ep.support, g_exact, nullptr, s.hv.data(), *s.ws);
    for (int64_t i = 0; i < d; ++i) g_exact[i] -= lr * s.hv[i];
    clip_lambda();
    out.grad_evals += 1 + (j - base);
  }
  return out;
}

template <typename T>
LossStats MetaGradient<T>::adapt_and_evaluate(const T* theta, const Episode<T>& ep, int steps,
                                              TaskScratch<T>& s) const {
  const int64_t d = model_.layout().total();
  std::copy(theta, theta + d, s.phi.begin());
  for (int j = 0; j < steps; ++j) inner_step(s.phi.data(), ep.support, s);
  return model_.loss_grad(s.phi.data(), ep.query, nullptr, *s.ws);
}

template class MetaGradient<float>;
template class MetaGradient<double>;

}  // namespace mt
