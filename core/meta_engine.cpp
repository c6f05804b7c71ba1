// The batched meta-gradient algorithms (core/meta_engine.h).
#include "core/meta_engine.h"

#include "core/check.h"

namespace mt {

template <typename T>
MetaEngine<T>::MetaEngine(BatchedModel<T>& model, InnerLoop inner)
    : model_(model), inner_(inner), layout_(model.layout(), 1) {
  MT_CHECK(inner.steps >= 0, "inner steps must be >= 0");
  MT_CHECK(inner.adjoint_steps() <= inner.steps, "truncation exceeds inner steps");
  MT_CHECK(inner.state_interval() >= 1, "checkpoint interval must be >= 1");
  exact_batch_ = model.make_batch();
}

template <typename T>
void MetaEngine<T>::reserve(Buffer<T>& buf, int64_t n) const {
  if (buf.size() < n) buf = ops().alloc(n);
}

template <typename T>
void MetaEngine<T>::inner_step(const TaskBatch& b, T* phi) {
  const int64_t n = layout_.with_tasks(b.tasks()).total();
  model_.loss_grad(b, Split::kSupport, phi, grad_.data(), nullptr);
  ops().axpy(n, static_cast<T>(-inner_.lr), grad_.data(), phi);
}

template <typename T>
void MetaEngine<T>::clip(int64_t n, T* lambda) const {
  if (inner_.adjoint_clip > 0) ops().clamp(n, static_cast<T>(inner_.adjoint_clip), lambda);
}

template <typename T>
void MetaEngine<T>::run(const T* theta, const TaskBatch& b, const std::vector<int>& exact, T* g_fo,
                        T* g_exact, LossStats* query) {
  const int r = inner_.steps, k = inner_.adjoint_steps(), c = inner_.state_interval();
  const BatchedLayout all = layout_.with_tasks(b.tasks());
  reserve(phi_, all.total());
  reserve(grad_, all.total());

  // Forward: the inner loop of every task; the exact tasks' φ_j, j = C, 2C, … below r, kept.
  const bool any_exact = !exact.empty();
  const BatchedLayout sub = layout_.with_tasks(any_exact ? static_cast<int>(exact.size()) : 1);
  if (any_exact) {
    MT_CHECK(g_exact != nullptr, "exact tasks without a buffer for their gradients");
    const size_t kept = static_cast<size_t>((r - 1) / c + 1);
    if (states_.size() < kept) states_.resize(kept);
    // Sub-batch buffers are sized for the whole batch: a varying count of exact tasks (UFOM)
    // then never reallocates them (fixed addresses for graph replay, no steady-state allocation).
    for (size_t i = 1; i < kept; ++i) reserve(states_[i], all.total());
  }
  ops().broadcast(all, theta, phi_.data());
  for (int j = 0; j < r; ++j) {
    if (any_exact && j > 0 && j % c == 0)
      ops().gather(all, phi_.data(), exact, states_[j / c].data());
    inner_step(b, phi_.data());
  }
  model_.loss_grad(b, Split::kQuery, phi_.data(), g_fo, query);
  if (!any_exact) return;

  // Backward: the adjoint sweep over the last k inner steps of the exact tasks, λ in g_exact.
  model_.gather(b, exact, *exact_batch_);
  reserve(phi_exact_, all.total());
  reserve(hv_, all.total());
  const T lr = static_cast<T>(inner_.lr);
  ops().gather(all, g_fo, exact, g_exact);
  clip(sub.total(), g_exact);
  for (int j = r - 1; j >= r - k; --j) {
    const int base = (j / c) * c;
    if (base == 0)
      ops().broadcast(sub, theta, phi_exact_.data());
    else
      ops().copy(sub.total(), states_[base / c].data(), phi_exact_.data());
    for (int i = base; i < j; ++i) inner_step(*exact_batch_, phi_exact_.data());
    model_.hvp(*exact_batch_, Split::kSupport, phi_exact_.data(), g_exact, hv_.data(), nullptr);
    ops().axpy(sub.total(), -lr, hv_.data(), g_exact);
    clip(sub.total(), g_exact);
  }
}

template <typename T>
void MetaEngine<T>::adapt_and_evaluate(const T* theta, const TaskBatch& b, int steps,
                                       LossStats* query) {
  const BatchedLayout all = layout_.with_tasks(b.tasks());
  reserve(phi_, all.total());
  reserve(grad_, all.total());
  ops().broadcast(all, theta, phi_.data());
  for (int j = 0; j < steps; ++j) inner_step(b, phi_.data());
  model_.loss_grad(b, Split::kQuery, phi_.data(), nullptr, query);
}

template <typename T>
TaskBatch& MetaEngine<T>::eval_batch() {
  if (!eval_batch_) eval_batch_ = model_.make_batch();
  return *eval_batch_;
}

template class MetaEngine<float>;
template class MetaEngine<double>;

}  // namespace mt
