// The per-rank outer-step driver (core/meta_step.h).
#include "core/meta_step.h"

#include <omp.h>

#include "core/check.h"
#include "core/ufom.h"

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
MetaStep<T>::MetaStep(const MetaGradient<T>& mg, MetaStepSettings settings)
    : mg_(mg), settings_(settings), dim_(mg.model().layout().total()) {
  MT_CHECK(settings_.threads >= 1, "threads must be >= 1");
  if (settings_.algo == Algo::kSlbamm)
    throw UsageError(
        "algo = slbamm is a bilevel solver, not a meta-gradient; "
        "run it through metatrain (launch/bilevel_trainer.h)");
  for (int i = 0; i < settings_.threads; ++i) scratch_.push_back(mg_.make_scratch());
}

template <typename T>
void MetaStep<T>::run(const T* theta, uint64_t step, const std::vector<int64_t>& tasks,
                      const EpisodeFn& episode, double q, MetaStepSums<T>& sums) {
  const size_t n = tasks.size();
  episodes_.resize(n);
  g_fo_.resize(n * dim_);
  g_exact_.resize(n * dim_);
  exact_.assign(n, 0);
  outcomes_.assign(n, TaskOutcome{});
  for (size_t i = 0; i < n; ++i) {
    switch (settings_.algo) {
      case Algo::kMaml:
        exact_[i] = 1;
        break;
      case Algo::kFomaml:
        exact_[i] = 0;
        break;
      case Algo::kUfom:
        exact_[i] = ufom_takes_exact(settings_.seed, step, tasks[i], q);
        break;
      case Algo::kSlbamm:
        throw UsageError(
            "algo = slbamm is a bilevel solver, not a meta-gradient; "
            "run it through metatrain (launch/bilevel_trainer.h)");
    }
  }

  std::exception_ptr failure;
#pragma omp parallel for schedule(dynamic, 1) num_threads(settings_.threads)
  for (size_t i = 0; i < n; ++i) {
    try {
      TaskScratch<T>& s = scratch_[omp_get_thread_num()];
      episode(tasks[i], episodes_[i]);
      outcomes_[i] = mg_.compute(theta, episodes_[i], g_fo_.data() + i * dim_,
                                 exact_[i] ? g_exact_.data() + i * dim_ : nullptr, s);
    } catch (...) {
#pragma omp critical
      if (!failure) failure = std::current_exception();
    }
  }
  if (failure) std::rethrow_exception(failure);

  // Sum in task order: the same bits for any thread count.
  std::vector<T> g(dim_);
  for (size_t i = 0; i < n; ++i) {
    const T* gf = g_fo_.data() + i * dim_;
    const T* ge = g_exact_.data() + i * dim_;
    const T* gi = gf;
    if (exact_[i]) {
      double v2 = 0, d2 = 0;
      for (int64_t k = 0; k < dim_; ++k) {
        const double diff = static_cast<double>(ge[k]) - gf[k];
        v2 += static_cast<double>(ge[k]) * ge[k];
        d2 += diff * diff;
        sums.fo_gap[k] += ge[k] - gf[k];
      }
      sums.v2 += v2;
      sums.d2 += d2;
      sums.exact_tasks += 1;
      if (settings_.algo == Algo::kMaml) {
        gi = ge;
      } else {
        ufom_combine(dim_, q, gf, ge, g.data());
        gi = g.data();
      }
    }
    for (int64_t k = 0; k < dim_; ++k) sums.grad[k] += gi[k];
    sums.loss += outcomes_[i].query.loss;
    sums.acc += outcomes_[i].query.acc;
    sums.tasks += 1;
    sums.grad_evals += outcomes_[i].grad_evals;
  }
}

template struct MetaStepSums<float>;
template struct MetaStepSums<double>;
template class MetaStep<float>;
template class MetaStep<double>;

}  // namespace mt
