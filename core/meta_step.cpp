// The per-rank outer-step driver (core/meta_step.h).
#include "core/meta_step.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/batched_model_cpu.h"
#include "core/check.h"
#include "core/meta_params.h"
#include "core/parallel_for.h"

namespace mt {

template <typename T>
void MetaStepSums<T>::reset(int64_t d) {
  grad.assign(d, T(0));
  fo_gap.assign(d, T(0));
  loss = acc = tasks = exact_tasks = v2 = d2 = grad_evals = 0;
}

template <typename T>
std::vector<T> MetaStepSums<T>::pack(bool with_fo_gap) const {
  std::vector<T> buf(grad);
  if (with_fo_gap) buf.insert(buf.end(), fo_gap.begin(), fo_gap.end());
  for (double s : {loss, acc, tasks, exact_tasks, v2, d2, grad_evals})
    buf.push_back(static_cast<T>(s));
  return buf;
}

template <typename T>
void MetaStepSums<T>::unpack(const std::vector<T>& buf, bool with_fo_gap) {
  const size_t d = grad.size(), vectors = with_fo_gap ? 2 : 1;
  MT_CHECK(buf.size() == vectors * d + 7, "packed sums have the wrong size");
  std::copy(buf.begin(), buf.begin() + d, grad.begin());
  if (with_fo_gap) std::copy(buf.begin() + d, buf.begin() + 2 * d, fo_gap.begin());
  double* scalars[] = {&loss, &acc, &tasks, &exact_tasks, &v2, &d2, &grad_evals};
  for (int i = 0; i < 7; ++i) *scalars[i] = buf[vectors * d + i];
}

template <typename T>
void MetaStepSums<T>::reset_exact(int64_t d, int64_t tasks) {
  MT_CHECK(tasks >= 1 && tasks <= kExactMaxTasks, "the exact reduction takes 1 to ", kExactMaxTasks,
           " tasks per step, not ", tasks);
  reset(d);
  exact = true;
  grad_fixed.assign(d, 0);
  gap_fixed.assign(d, 0);
  task_stats.assign(static_cast<size_t>(tasks) * kTaskStats, 0.0);
  task_owned.assign(tasks, 0);
}

template <typename T>
std::vector<int64_t> MetaStepSums<T>::pack_exact(bool with_fo_gap) const {
  MT_CHECK(exact, "pack_exact needs reset_exact first");
  const size_t d = grad_fixed.size(), tasks = task_owned.size();
  std::vector<int64_t> buf((with_fo_gap ? 4 : 2) * d + (kTaskStats + 1) * tasks);
  int64_t* p = buf.data();
  auto limbs = [&](const std::vector<Fixed>& v) {
    for (size_t j = 0; j < d; ++j) split_limbs(v[j], &p[j], &p[d + j]);
    p += 2 * d;
  };
  limbs(grad_fixed);
  if (with_fo_gap) limbs(gap_fixed);
  for (size_t t = 0; t < tasks; ++t, p += kTaskStats + 1) {
    if (task_owned[t]) std::memcpy(p, &task_stats[t * kTaskStats], kTaskStats * sizeof(double));
    p[kTaskStats] = task_owned[t];
  }
  return buf;
}

template <typename T>
void MetaStepSums<T>::unpack_exact(const std::vector<int64_t>& buf, bool with_fo_gap) {
  const size_t d = grad_fixed.size(), tasks = task_owned.size();
  MT_CHECK(exact && buf.size() == (with_fo_gap ? 4 : 2) * d + (kTaskStats + 1) * tasks,
           "packed exact sums have the wrong size");
  const int64_t* p = buf.data();
  auto join = [&](std::vector<Fixed>& fixed, std::vector<T>& out) {
    for (size_t j = 0; j < d; ++j) {
      fixed[j] = join_limbs(p[j], p[d + j]);
      out[j] = fixed_to_real<T>(fixed[j]);
    }
    p += 2 * d;
  };
  join(grad_fixed, grad);
  if (with_fo_gap) join(gap_fixed, fo_gap);
  loss = acc = this->tasks = 0;
  exact_tasks = v2 = d2 = grad_evals = 0;
  for (size_t t = 0; t < tasks; ++t, p += kTaskStats + 1) {
    MT_CHECK(p[kTaskStats] == 1, "task ", t, " of the meta-batch was run by ", p[kTaskStats],
             " ranks, not one");
    double s[kTaskStats];
    std::memcpy(s, p, sizeof s);
    std::memcpy(&task_stats[t * kTaskStats], s, sizeof s);
    task_owned[t] = 1;
    loss += s[kLoss];
    acc += s[kAcc];
    grad_evals += s[kGradEvals];
    this->tasks += 1;
    if (s[kExact] != 0) {
      exact_tasks += 1;
      v2 += s[kV2];
      d2 += s[kD2];
    }
  }
}

namespace {
EstimatorSettings estimator_settings(const MetaStepSettings& s) {
  EstimatorSettings e;
  e.algo = s.algo;
  e.first_order_steps = s.first_order_steps;
  return e;
}
}  // namespace

template <typename T>
MetaStep<T>::MetaStep(BatchedModel<T>& model, const InnerLoop& inner, MetaStepSettings settings)
    : model_(model),
      settings_(settings),
      estimator_(make_estimator(estimator_settings(settings))),
      engine_(std::make_unique<MetaEngine<T>>(model, inner)),
      batch_(model.make_batch()),
      dim_(engine_->layout().total()),
      keep_(settings.keep_task_gradients) {
  MT_CHECK(settings_.threads >= 1, "threads must be >= 1");
}

template <typename T>
MetaStep<T>::MetaStep(const MetaGradient<T>& mg, MetaStepSettings settings)
    : owned_(std::make_unique<CpuBatchedModel<T>>(mg.model(), std::max(settings.threads, 1),
                                                  kCpuMaxTasks)),
      model_(*owned_),
      settings_(settings),
      estimator_(make_estimator(estimator_settings(settings))),
      engine_(std::make_unique<MetaEngine<T>>(*owned_, mg.inner())),
      batch_(owned_->make_batch()),
      dim_(engine_->layout().total()),
      keep_(true) {
  MT_CHECK(settings_.threads >= 1, "threads must be >= 1");
}

template <typename T>
MetaStep<T>::~MetaStep() = default;

template <typename T>
void MetaStep<T>::reserve(Buffer<T>& buf, int64_t n) const {
  if (buf.size() < n) buf = model_.ops().alloc(n);
}

template <typename T>
void MetaStep<T>::run(const T* theta, uint64_t step, const std::vector<int64_t>& tasks,
                      const EpisodeFn& episode, double q, MetaStepSums<T>& sums) {
  const size_t n = tasks.size();
  const VecOps<T>& ops = model_.ops();
  episodes_.resize(n);
  exact_.assign(n, 0);
  for (size_t i = 0; i < n; ++i)
    exact_[i] = estimator_->takes_exact(settings_.seed, step, static_cast<uint64_t>(tasks[i]), q);
  if (keep_) {
    host_fo_.resize(n * dim_);
    host_exact_.resize(n * dim_);
  }

  parallel_for(settings_.threads, static_cast<int64_t>(n),
               [&](int64_t i) { episode(tasks[i], episodes_[i]); });

  tasks_ = tasks;
  step_ = step;
  const InnerLoop& inner = engine_->inner();
  if (inner.multi_step_loss)
    engine_->set_step_weights(
        msl_weights(inner.steps, static_cast<int64_t>(step), inner.msl_anneal_steps));
  reserve(theta_, dim_);
  ops.upload(dim_, theta, theta_.data());
  // The sums continue from what `sums` holds, element by element in task order.
  if (sums.exact) {
    MT_CHECK(static_cast<int64_t>(sums.grad_fixed.size()) == dim_,
             "exact sums of the wrong size: call reset_exact");
    for (int64_t t : tasks)
      MT_CHECK(t >= 0 && t < static_cast<int64_t>(sums.task_owned.size()) && !sums.task_owned[t],
               "task ", t, " is not in the meta-batch of reset_exact, or ran twice");
    if (!exact_ops_) exact_ops_ = make_exact_sum_ops(ops, settings_.threads);
    if (grad_fixed_.size() < dim_) grad_fixed_ = exact_ops_->alloc(dim_);
    if (gap_fixed_.size() < dim_) gap_fixed_ = exact_ops_->alloc(dim_);
    exact_ops_->upload(dim_, sums.grad_fixed.data(), grad_fixed_.data());
    exact_ops_->upload(dim_, sums.gap_fixed.data(), gap_fixed_.data());
  } else {
    reserve(grad_sum_, dim_);
    reserve(gap_sum_, dim_);
    ops.upload(dim_, sums.grad.data(), grad_sum_.data());
    ops.upload(dim_, sums.fo_gap.data(), gap_sum_.data());
  }
  // Chunks in task order, each summed in task order: the same bits for any chunk size.
  const size_t chunk = static_cast<size_t>(model_.max_tasks());
  for (size_t first = 0; first < n; first += chunk)
    run_chunk(first, std::min(chunk, n - first), q, sums);
  if (sums.exact) {
    exact_ops_->download(dim_, grad_fixed_.data(), sums.grad_fixed.data());
    exact_ops_->download(dim_, gap_fixed_.data(), sums.gap_fixed.data());
  } else {
    ops.download(dim_, grad_sum_.data(), sums.grad.data());
    ops.download(dim_, gap_sum_.data(), sums.fo_gap.data());
  }
}

template <typename T>
void MetaStep<T>::add_exact(const BatchedLayout& l, const T* x, Fixed* acc, size_t first,
                            const std::vector<int>* ids, const char* what) const {
  const FixedFault f = exact_ops_->sum_tasks(l, x, acc);
  if (!f) return;
  const int64_t task = tasks_[first + static_cast<size_t>(ids ? (*ids)[f.task] : f.task)];
  const TensorSpec* tensor = engine_->layout().at(f.index);
  const bool finite = std::isfinite(f.value);
  const std::string where = detail::concat(
      " at step ", step_ + 1, " in ", tensor ? tensor->name : "?", " (element ",
      f.index - (tensor ? tensor->offset : 0), " of task ", task, "'s ", what, ": ", f.value, ")");
  if (!finite)
    throw Error(ExitCode::kRuntime,
                detail::concat("non-finite meta-gradient", where,
                               ": training diverged; lower inner.lr or outer.lr"));
  throw Error(ExitCode::kRuntime,
              detail::concat("meta-gradient beyond the exact reduction's range |g| < 2^31 = ",
                             static_cast<int64_t>(kFixedRange), where,
                             ": training diverges (lower inner.lr or outer.lr), or use "
                             "dist.reduce=float (plain float sums: no such range, but not the "
                             "same bits for different rank counts)"));
}

template <typename T>
void MetaStep<T>::run_chunk(size_t first, size_t count, double q, MetaStepSums<T>& sums) {
  const VecOps<T>& ops = model_.ops();
  const BatchedLayout all(engine_->layout(), static_cast<int>(count));
  std::vector<const Episode<T>*> eps;
  std::vector<int> exact;
  for (size_t i = 0; i < count; ++i) {
    eps.push_back(&episodes_[first + i]);
    if (exact_[first + i]) exact.push_back(static_cast<int>(i));
  }
  model_.load(eps, *batch_);
  const BatchedLayout sub = all.with_tasks(exact.empty() ? 1 : static_cast<int>(exact.size()));
  reserve(g_fo_, all.total());
  reserve(g_exact_, all.total());  // sized for the batch: see MetaEngine::run
  reserve(g_mix_, all.total());
  std::vector<LossStats> query(count);
  engine_->run(theta_.data(), *batch_, exact, g_fo_.data(), g_exact_.data(), query.data());

  if (keep_) {
    for (size_t i = 0; i < count; ++i) {
      ops.gather(all, g_fo_.data(), {static_cast<int>(i)}, g_mix_.data());
      ops.download(dim_, g_mix_.data(), host_fo_.data() + (first + i) * dim_);
    }
    const BatchedLayout ex = all.with_tasks(static_cast<int>(std::max<size_t>(exact.size(), 1)));
    for (size_t e = 0; e < exact.size(); ++e) {
      ops.gather(ex, g_exact_.data(), {static_cast<int>(e)}, g_mix_.data());
      ops.download(dim_, g_mix_.data(), host_exact_.data() + (first + exact[e]) * dim_);
    }
  }

  // Exact tasks: ‖g_E‖², ‖g_E − g_F‖² and Σ (g_E − g_F); their gradient (g_E, or UFOM's mix of
  // g_E and g_F) then replaces g_F in the batch that is summed.
  std::vector<double> v2(exact.size()), d2(exact.size());
  if (!exact.empty()) {
    T* g_e = g_exact_.data();
    T* g_f = g_mix_.data();
    ops.gather(all, g_fo_.data(), exact, g_f);
    ops.task_sq_norms(sub, g_e, v2.data());
    ops.task_sq_dists(sub, g_e, g_f, d2.data());
    ops.sub(sub.total(), g_e, g_f, g_f);
    if (sums.exact)
      add_exact(sub, g_f, gap_fixed_.data(), first, &exact, "first-order gap g_E - g_F");
    else
      ops.sum_tasks(sub, g_f, gap_sum_.data());
    const Estimator::Mix mix = estimator_->mix(q);
    if (!mix.plain) {
      ops.gather(all, g_fo_.data(), exact, g_f);
      ops.combine(sub.total(), static_cast<T>(mix.a), g_e, static_cast<T>(mix.b), g_f, g_e);
    }
    ops.scatter(all, g_e, exact, g_fo_.data());
  }
  if (sums.exact)
    add_exact(all, g_fo_.data(), grad_fixed_.data(), first, nullptr, "gradient");
  else
    ops.sum_tasks(all, g_fo_.data(), grad_sum_.data());
  for (size_t i = 0, e = 0; i < count; ++i) {
    const double evals =
        static_cast<double>(first_order_cost(engine_->inner()) +
                            (exact_[first + i] ? exact_path_cost(engine_->inner()) : 0));
    if (sums.exact) {  // the task's own slot: summed in task order after the collective
      const size_t t = static_cast<size_t>(tasks_[first + i]);
      double* s = &sums.task_stats[t * MetaStepSums<T>::kTaskStats];
      s[MetaStepSums<T>::kLoss] = query[i].loss;
      s[MetaStepSums<T>::kAcc] = query[i].acc;
      s[MetaStepSums<T>::kGradEvals] = evals;
      if (exact_[first + i]) {
        s[MetaStepSums<T>::kV2] = v2[e];
        s[MetaStepSums<T>::kD2] = d2[e];
        s[MetaStepSums<T>::kExact] = 1;
      }
      sums.task_owned[t] = 1;
    }
    if (exact_[first + i]) {
      sums.v2 += v2[e];
      sums.d2 += d2[e];
      sums.exact_tasks += 1;
      ++e;
    }
    sums.loss += query[i].loss;
    sums.acc += query[i].acc;
    sums.tasks += 1;
    sums.grad_evals += evals;
  }
}
template struct MetaStepSums<float>;
template struct MetaStepSums<double>;
template class MetaStep<float>;
template class MetaStep<double>;

}  // namespace mt
