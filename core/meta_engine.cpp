// The batched meta-gradient algorithms (core/meta_engine.h).
#include "core/meta_engine.h"

#include <algorithm>
#include <utility>

#include "core/check.h"
#include "core/meta_params.h"

namespace mt {

template <typename T>
MetaEngine<T>::MetaEngine(BatchedModel<T>& model, InnerLoop inner)
    : model_(model),
      inner_(inner),
      meta_(meta_layout(model.layout(), inner)),
      layout_(model.layout(), 1),
      meta_layout_(meta_, 1) {
  MT_CHECK(inner.steps >= 0, "inner steps must be >= 0");
  MT_CHECK(inner.adjoint_steps() <= inner.steps, "truncation exceeds inner steps");
  MT_CHECK(inner.state_interval() >= 1, "checkpoint interval must be >= 1");
  const bool unrolled = inner.method == Method::kUnrolled;
  MT_CHECK(unrolled || !learned_rates(), "learned inner rates need the unrolled method");
  MT_CHECK(unrolled || !inner.multi_step_loss, "the multi-step loss needs the unrolled method");
  MT_CHECK(inner.method != Method::kImplicit || (inner.prox > 0 && inner.cg_steps >= 1),
           "iMAML needs prox > 0 and cg_steps >= 1");
  const auto& tensors = model.layout().tensors();
  rate_of_.assign(tensors.size(), -1);
  int next = static_cast<int>(tensors.size());
  for (size_t k = 0; k < tensors.size(); ++k) {
    if (!adapts(inner, tensors[k].name)) continue;
    adapted_.push_back(static_cast<int>(k));
    if (learned_rates()) rate_of_[k] = next++;
  }
  MT_CHECK(!adapted_.empty(), "the inner loop adapts no tensor of this model");
  keep_from_ = adapted_.front();  // > 0: the tensors before it keep θ's values (ANIL)
  weights_ = msl_weights(inner.steps, 0, inner.msl_anneal_steps);
  exact_batch_ = model.make_batch();
}

template <typename T>
void MetaEngine<T>::set_step_weights(std::vector<double> w) {
  MT_CHECK(static_cast<int>(w.size()) == inner_.steps, "multi-step loss weights: ", w.size(),
           " for ", inner_.steps, " inner steps");
  weights_ = std::move(w);
}

template <typename T>
double MetaEngine<T>::step_weight(int j) const {
  if (!inner_.multi_step_loss) return j == inner_.steps ? 1.0 : 0.0;
  return weights_[static_cast<size_t>(j - 1)];
}

template <typename T>
int64_t MetaEngine<T>::rate_start(int k) const {
  return meta_.tensors()[static_cast<size_t>(rate_of_[k])].offset - layout_.dim();
}

template <typename T>
void MetaEngine<T>::reserve(Buffer<T>& buf, int64_t n) const {
  if (buf.size() < n) buf = ops().alloc(n);
}

template <typename T>
void MetaEngine<T>::prepare(const T* psi, int tasks) {
  const int64_t d = layout_.dim(), nr = meta_.total() - d;
  const BatchedLayout l = layout_.with_tasks(tasks);
  if (inner_.rates == Rates::kPerLayerStep) {
    lslr_.resize(static_cast<size_t>(nr));
    ops().download(nr, psi + d, lslr_.data());
  }
  if (inner_.rates == Rates::kPerParam) {
    // Per task: θ-shaped rates, zero on the tensors the inner loop leaves alone.
    std::vector<T> rates(static_cast<size_t>(nr)), full(static_cast<size_t>(d), T(0));
    ops().download(nr, psi + d, rates.data());
    for (int k : adapted_) {
      const TensorSpec& t = meta_.tensors()[static_cast<size_t>(k)];
      std::copy_n(rates.begin() + rate_start(k), t.size(), full.begin() + t.offset);
    }
    reserve(rates_, d + l.total());
    ops().upload(d, full.data(), rates_.data());
    rates_tasks_ = 0;
  }
  if (inner_.method != Method::kUnrolled) {
    reserve(theta_b_, l.total());
    ops().broadcast(l, psi, theta_b_.data());
  }
}

template <typename T>
const T* MetaEngine<T>::per_param_rates(int tasks) {
  const BatchedLayout l = layout_.with_tasks(tasks);
  if (rates_tasks_ != tasks) {
    MT_CHECK(rates_.size() >= l.dim() + l.total(), "rates of ", tasks, " tasks before prepare");
    ops().broadcast(l, rates_.data(), rates_.data() + l.dim());
    rates_tasks_ = tasks;
  }
  return rates_.data() + l.dim();
}

// Tensor k's T copies in a θ-layout batch: [start, start + length).
namespace {
struct Segment {
  int64_t start, length;
};
Segment segment(const BatchedLayout& l, int k) {
  return {l.tensor_start(k, 0), l.tasks() * (l.ends()[k + 1] - l.ends()[k])};
}
}  // namespace

template <typename T>
void MetaEngine<T>::keep_support(const TaskBatch& b, const T* phi) {
  kept_ = keep_from_ > 0 && model_.keep_features(b, Split::kSupport, phi, keep_from_);
}

template <typename T>
void MetaEngine<T>::inner_step(const TaskBatch& b, int j, T* phi) {
  const BatchedLayout l = layout_.with_tasks(b.tasks());
  const int64_t n = l.total();
  const int step = std::min(j, inner_.steps - 1);  // evaluation may run more steps than r
  if (kept_)  // the same bits for the adapted tensors; zeros for the others, which stay
    model_.loss_grad_kept(b, Split::kSupport, phi, grad_.data(), nullptr);
  else
    model_.loss_grad(b, Split::kSupport, phi, grad_.data(), nullptr);
  if (inner_.method == Method::kImplicit) {  // + μ(φ − θ)
    ops().axpy(n, static_cast<T>(inner_.prox), phi, grad_.data());
    ops().axpy(n, static_cast<T>(-inner_.prox), theta_b_.data(), grad_.data());
  }
  switch (inner_.rates) {
    case Rates::kFixed:
      if (adapted_.size() == layout_.ends().size() - 1) {
        ops().axpy(n, static_cast<T>(-inner_.lr), grad_.data(), phi);
        return;
      }
      for (int k : adapted_) {
        const Segment s = segment(l, k);
        ops().axpy(s.length, static_cast<T>(-inner_.lr), grad_.data() + s.start, phi + s.start);
      }
      return;
    case Rates::kPerLayerStep:
      for (int k : adapted_) {
        const Segment s = segment(l, k);
        const T rate = lslr_[static_cast<size_t>(rate_start(k) + step)];
        ops().axpy(s.length, -rate, grad_.data() + s.start, phi + s.start);
      }
      return;
    case Rates::kPerParam:
      ops().mul_add(n, T(-1), per_param_rates(b.tasks()), grad_.data(), phi);
      return;
  }
}

template <typename T>
void MetaEngine<T>::direction(int tasks, int j, const T* lambda, T* v) {
  const BatchedLayout l = layout_.with_tasks(tasks);
  if (inner_.rates == Rates::kPerParam) {
    ops().mul(l.total(), per_param_rates(tasks), lambda, v);
    return;
  }
  ops().fill(l.total(), T(0), v);
  for (int k : adapted_) {
    const Segment s = segment(l, k);
    const T rate = inner_.rates == Rates::kFixed ? static_cast<T>(inner_.lr)
                                                 : lslr_[static_cast<size_t>(rate_start(k) + j)];
    ops().axpy(s.length, rate, lambda + s.start, v + s.start);
  }
}

template <typename T>
void MetaEngine<T>::add_rate_grads(int tasks, int j, const T* grad, const T* lambda, T* g) {
  const BatchedLayout l = layout_.with_tasks(tasks), ml = meta_layout_.with_tasks(tasks);
  const int64_t nr = meta_.total() - l.dim();
  std::vector<double> dots(static_cast<size_t>(tasks));
  for (int k : adapted_) {
    const Segment s = segment(l, k);
    if (inner_.rates == Rates::kPerParam) {
      ops().mul_add(s.length, T(-1), grad + s.start, lambda + s.start,
                    g + ml.tensor_start(rate_of_[k], 0));
      continue;
    }
    // LSLR: per task, −Σ over the tensor of grad ⊙ λ, for rate (k, j).
    ParamLayout one;
    one.add("t", {s.length / tasks});
    ops().task_dots(BatchedLayout(one, tasks), grad + s.start, lambda + s.start, dots.data());
    const int64_t at = rate_start(k) + j;
    for (int t = 0; t < tasks; ++t) lslr_grad_[static_cast<size_t>(t * nr + at)] -= dots[t];
  }
}

template <typename T>
void MetaEngine<T>::clip(int64_t n, T* lambda) const {
  if (inner_.adjoint_clip > 0) ops().clamp(n, static_cast<T>(inner_.adjoint_clip), lambda);
}

template <typename T>
void MetaEngine<T>::sweep(const TaskBatch& b, const T* psi, std::vector<Buffer<T>>& states, T* g,
                          int hessian_from, int stop) {
  const int tasks = b.tasks(), r = inner_.steps, c = inner_.state_interval();
  const BatchedLayout l = layout_.with_tasks(tasks), ml = meta_layout_.with_tasks(tasks);
  const int64_t n = l.total(), nr = meta_.total() - l.dim();
  const bool plain = inner_.rates == Rates::kFixed && adapted_.size() == layout_.ends().size() - 1;
  if (inner_.rates == Rates::kPerParam) ops().fill(tasks * nr, T(0), g + n);
  if (inner_.rates == Rates::kPerLayerStep) lslr_grad_.assign(static_cast<size_t>(tasks * nr), 0);
  T* phi = phi_exact_.data();
  if (keep_from_ > 0) {  // the fixed layers' output on this batch at φ_0 = θ
    ops().broadcast(l, psi, phi);
    keep_support(b, phi);
  }
  for (int j = r - 1; j >= stop; --j) {
    const int base = (j / c) * c;  // φ_j from the state below it
    if (base == 0)
      ops().broadcast(l, psi, phi);
    else
      ops().copy(n, states[static_cast<size_t>(base / c)].data(), phi);
    for (int i = base; i < j; ++i) inner_step(b, i, phi);
    if (learned_rates()) {  // with λ_{j+1}
      model_.loss_grad(b, Split::kSupport, phi, grad_.data(), nullptr);
      add_rate_grads(tasks, j, grad_.data(), g, g);
    }
    if (j >= hessian_from) {  // λ ← λ − H_j (P_j ⊙ λ)
      if (plain) {
        model_.hvp(b, Split::kSupport, phi, g, hv_.data(), nullptr);
        ops().axpy(n, static_cast<T>(-inner_.lr), hv_.data(), g);
      } else {
        direction(tasks, j, g, v_.data());
        model_.hvp(b, Split::kSupport, phi, v_.data(), hv_.data(), nullptr);
        ops().axpy(n, T(-1), hv_.data(), g);
      }
      clip(n, g);
    }
    const double w = j >= 1 ? step_weight(j) : 0.0;
    if (w != 0) {  // λ ← λ + w_j ∇L_Q(φ_j)
      model_.loss_grad(b, Split::kQuery, phi, query_grad_.data(), nullptr);
      ops().axpy(n, static_cast<T>(w), query_grad_.data(), g);
    }
  }
  if (inner_.rates == Rates::kPerLayerStep) {  // into ψ's batched layout
    std::vector<T> host(static_cast<size_t>(tasks * nr));
    for (size_t q = layout_.ends().size() - 1; q < meta_.tensors().size(); ++q) {
      const int64_t size = meta_.tensors()[q].size(), off = meta_.tensors()[q].offset - l.dim();
      for (int t = 0; t < tasks; ++t)
        for (int64_t e = 0; e < size; ++e)
          host[static_cast<size_t>(ml.tensor_start(static_cast<int>(q), t) - n + e)] =
              static_cast<T>(lslr_grad_[static_cast<size_t>(t * nr + off + e)]);
    }
    ops().upload(tasks * nr, host.data(), g + n);
  }
}

template <typename T>
void MetaEngine<T>::solve_implicit(const TaskBatch& b, const T* phi, T* g) {
  const int tasks = b.tasks();
  const BatchedLayout l = layout_.with_tasks(tasks);
  const int64_t n = l.total();
  for (Buffer<T>* buf : {&cg_r_, &cg_p_, &cg_ap_}) reserve(*buf, n);
  const size_t nt = static_cast<size_t>(tasks);
  std::vector<double> rr(nt), rr_next(nt), pap(nt), alpha(nt), beta(nt);
  // Solve A x = g, A = I + H/μ, from x = 0: residual r = g, direction p = r.
  ops().copy(n, g, cg_r_.data());
  ops().copy(n, g, cg_p_.data());
  ops().fill(n, T(0), g);
  ops().task_dots(l, cg_r_.data(), cg_r_.data(), rr.data());
  for (int i = 0; i < inner_.cg_steps; ++i) {
    model_.hvp(b, Split::kSupport, phi, cg_p_.data(), hv_.data(), nullptr);
    ops().combine(n, T(1), cg_p_.data(), static_cast<T>(1.0 / inner_.prox), hv_.data(),
                  cg_ap_.data());
    ops().task_dots(l, cg_p_.data(), cg_ap_.data(), pap.data());
    // A task whose residual vanished, or whose A is not positive along p, stops where it is.
    for (size_t t = 0; t < nt; ++t) alpha[t] = pap[t] > 0 && rr[t] > 0 ? rr[t] / pap[t] : 0.0;
    ops().task_axpy(l, alpha.data(), cg_p_.data(), g);
    for (double& a : alpha) a = -a;
    ops().task_axpy(l, alpha.data(), cg_ap_.data(), cg_r_.data());
    ops().task_dots(l, cg_r_.data(), cg_r_.data(), rr_next.data());
    for (size_t t = 0; t < nt; ++t) beta[t] = rr[t] > 0 ? rr_next[t] / rr[t] : 0.0;
    // p ← r + β p (in cg_ap_, then swapped in)
    ops().copy(n, cg_r_.data(), cg_ap_.data());
    ops().task_axpy(l, beta.data(), cg_p_.data(), cg_ap_.data());
    std::swap(cg_p_, cg_ap_);
    rr.swap(rr_next);
  }
}

template <typename T>
void MetaEngine<T>::run(const T* psi, const TaskBatch& b, const std::vector<int>& exact, T* g_fo,
                        T* g_exact, LossStats* query) {
  const int r = inner_.steps, k = inner_.adjoint_steps(), c = inner_.state_interval();
  const BatchedLayout all = layout_.with_tasks(b.tasks());
  const BatchedLayout meta_all = meta_layout_.with_tasks(b.tasks());
  for (Buffer<T>* buf : {&phi_, &grad_, &phi_exact_, &hv_, &v_, &query_grad_})
    reserve(*buf, all.total());
  prepare(psi, b.tasks());

  // Forward: the inner loop of every task; φ_j, j = C, 2C, … below r, kept for the sweeps.
  const bool any_exact = !exact.empty();
  const bool unrolled = inner_.method == Method::kUnrolled;
  const bool keep_exact = any_exact && unrolled, keep_all = unrolled && needs_fo_sweep();
  const size_t kept = static_cast<size_t>((r - 1) / c + 1);
  // Sub-batch buffers are sized for the whole batch: a varying count of exact tasks (UFOM)
  // then never reallocates them (fixed addresses for graph replay, no steady-state allocation).
  for (auto [keep, states] : {std::pair{keep_exact, &states_}, std::pair{keep_all, &states_all_}}) {
    if (!keep) continue;
    if (states->size() < kept) states->resize(kept);
    for (size_t i = 1; i < kept; ++i) reserve((*states)[i], all.total());
  }
  ops().broadcast(all, psi, phi_.data());
  keep_support(b, phi_.data());
  for (int j = 0; j < r; ++j) {
    if (j > 0 && j % c == 0) {
      if (keep_exact) ops().gather(all, phi_.data(), exact, states_[j / c].data());
      if (keep_all) ops().copy(all.total(), phi_.data(), states_all_[j / c].data());
    }
    inner_step(b, j, phi_.data());
  }
  if (inner_.method == Method::kReptile) {  // θ − φ_r; the query set only for the metrics
    MT_CHECK(!any_exact, "Reptile has no exact path");
    model_.loss_grad(b, Split::kQuery, phi_.data(), nullptr, query);
    ops().sub(all.total(), theta_b_.data(), phi_.data(), g_fo);
    return;
  }
  model_.loss_grad(b, Split::kQuery, phi_.data(), g_fo, query);
  if (inner_.multi_step_loss)  // λ_r = w_r ∇L_Q(φ_r)
    ops().combine(all.total(), static_cast<T>(step_weight(r)), g_fo, T(0), g_fo, g_fo);

  if (any_exact) {
    MT_CHECK(g_exact != nullptr, "exact tasks without a buffer for their gradients");
    model_.gather(b, exact, *exact_batch_);
    ops().gather(meta_all, g_fo, exact, g_exact);
    if (inner_.method == Method::kImplicit) {
      ops().gather(all, phi_.data(), exact, phi_exact_.data());
      solve_implicit(*exact_batch_, phi_exact_.data(), g_exact);
    } else {
      const BatchedLayout sub = all.with_tasks(static_cast<int>(exact.size()));
      clip(sub.total(), g_exact);
      sweep(*exact_batch_, psi, states_, g_exact, r - k, needs_fo_sweep() ? 0 : r - k);
    }
  }
  if (keep_all) sweep(b, psi, states_all_, g_fo, r, 0);
}

template <typename T>
void MetaEngine<T>::adapt_and_evaluate(const T* psi, const TaskBatch& b, int steps,
                                       LossStats* query) {
  const BatchedLayout all = layout_.with_tasks(b.tasks());
  reserve(phi_, all.total());
  reserve(grad_, all.total());
  prepare(psi, b.tasks());
  ops().broadcast(all, psi, phi_.data());
  keep_support(b, phi_.data());
  for (int j = 0; j < steps; ++j) inner_step(b, j, phi_.data());
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
