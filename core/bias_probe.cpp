// The first-order bias probe (core/bias_probe.h).
#include "core/bias_probe.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "core/check.h"
#include "core/exact_sum.h"
#include "core/ufom.h"

namespace mt {

template <typename T>
void BiasSums<T>::reset(int64_t d) {
  fo.assign(d, T(0));
  ufom.assign(d, T(0));
  exact.assign(d, T(0));
  fo_sq = ufom_sq = tasks = 0;
}

template <typename T>
std::vector<T> BiasSums<T>::pack() const {
  std::vector<T> buf(fo);
  buf.insert(buf.end(), ufom.begin(), ufom.end());
  buf.insert(buf.end(), exact.begin(), exact.end());
  for (double s : {fo_sq, ufom_sq, tasks}) buf.push_back(static_cast<T>(s));
  return buf;
}

template <typename T>
void BiasSums<T>::unpack(const std::vector<T>& buf) {
  const size_t d = fo.size();
  MT_CHECK(buf.size() == 3 * d + 3, "packed bias sums have the wrong size");
  std::copy(buf.begin(), buf.begin() + d, fo.begin());
  std::copy(buf.begin() + d, buf.begin() + 2 * d, ufom.begin());
  std::copy(buf.begin() + 2 * d, buf.begin() + 3 * d, exact.begin());
  fo_sq = buf[3 * d];
  ufom_sq = buf[3 * d + 1];
  tasks = buf[3 * d + 2];
}

template <typename T>
void BiasSums<T>::reset_exact(int64_t d, int64_t first, int64_t count) {
  MT_CHECK(count >= 1 && count <= kExactMaxTasks, "the exact reduction takes 1 to ", kExactMaxTasks,
           " probe tasks, not ", count);
  reset(d);
  exact_reduce = true;
  first_task = first;
  for (auto* v : {&fo_fixed, &ufom_fixed, &exact_fixed}) v->assign(d, 0);
  task_stats.assign(static_cast<size_t>(count) * kTaskStats, 0.0);
  task_owned.assign(count, 0);
}

template <typename T>
std::vector<int64_t> BiasSums<T>::pack_exact() const {
  MT_CHECK(exact_reduce, "pack_exact needs reset_exact first");
  const size_t d = fo_fixed.size(), slots = task_owned.size();
  std::vector<int64_t> buf(6 * d + (kTaskStats + 1) * slots);
  int64_t* p = buf.data();
  for (const std::vector<Fixed>* v : {&fo_fixed, &ufom_fixed, &exact_fixed}) {
    for (size_t j = 0; j < d; ++j) split_limbs((*v)[j], &p[j], &p[d + j]);
    p += 2 * d;
  }
  for (size_t t = 0; t < slots; ++t, p += kTaskStats + 1) {
    if (task_owned[t]) std::memcpy(p, &task_stats[t * kTaskStats], kTaskStats * sizeof(double));
    p[kTaskStats] = task_owned[t];
  }
  return buf;
}

template <typename T>
void BiasSums<T>::unpack_exact(const std::vector<int64_t>& buf) {
  const size_t d = fo_fixed.size(), slots = task_owned.size();
  MT_CHECK(exact_reduce && buf.size() == 6 * d + (kTaskStats + 1) * slots,
           "packed exact bias sums have the wrong size");
  const int64_t* p = buf.data();
  std::vector<Fixed>* fixed[] = {&fo_fixed, &ufom_fixed, &exact_fixed};
  std::vector<T>* out[] = {&fo, &ufom, &exact};
  for (int v = 0; v < 3; ++v) {
    for (size_t j = 0; j < d; ++j) {
      (*fixed[v])[j] = join_limbs(p[j], p[d + j]);
      (*out[v])[j] = fixed_to_real<T>((*fixed[v])[j]);
    }
    p += 2 * d;
  }
  fo_sq = ufom_sq = tasks = 0;
  for (size_t t = 0; t < slots; ++t, p += kTaskStats + 1) {
    MT_CHECK(p[kTaskStats] == 1, "probe task ", first_task + static_cast<int64_t>(t),
             " was run by ", p[kTaskStats], " ranks, not one");
    double s[kTaskStats];
    std::memcpy(s, p, sizeof s);
    std::memcpy(&task_stats[t * kTaskStats], s, sizeof s);
    task_owned[t] = 1;
    fo_sq += s[kFoSq];
    ufom_sq += s[kUfomSq];
    tasks += 1;
  }
}

namespace {

// round(v·2^64) into acc, or an Error naming the element.
void add_fixed(double v, Fixed& acc, const char* what, int64_t k, int64_t task) {
  Fixed f;
  if (!to_fixed(v, &f))
    throw Error(ExitCode::kRuntime, detail::concat("bias probe: element ", k, " of ", what,
                                                   " of probe task ", task, " is ", v,
                                                   ", beyond the exact reduction's range ±2^31 "
                                                   "(dist.reduce = exact)"));
  acc += f;
}

// ‖Σ/K‖ and the zero-mean noise level of BiasReport, from Σ e_t and Σ ‖e_t‖².
template <typename T>
void mean_and_noise(const std::vector<T>& sum, double sum_sq, double k, double& bias,
                    double& noise) {
  double m2 = 0;
  for (T v : sum) m2 += (static_cast<double>(v) / k) * (static_cast<double>(v) / k);
  bias = std::sqrt(m2);
  const double trace = k > 1 ? std::max(0.0, (sum_sq - k * m2) / (k - 1)) : 0.0;
  noise = std::sqrt(trace / k);
}

}  // namespace

template <typename T>
BiasReport bias_report(const BiasSums<T>& sums, bool with_ufom) {
  MT_CHECK(sums.tasks >= 2, "the bias probe needs at least 2 tasks");
  BiasReport r;
  r.tasks = sums.tasks;
  mean_and_noise(sums.fo, sums.fo_sq, sums.tasks, r.fo, r.fo_noise);
  r.ufom = r.ufom_noise = std::numeric_limits<double>::quiet_NaN();
  if (with_ufom) mean_and_noise(sums.ufom, sums.ufom_sq, sums.tasks, r.ufom, r.ufom_noise);
  double n2 = 0;
  for (T v : sums.exact) n2 += (static_cast<double>(v) / sums.tasks) * (v / sums.tasks);
  r.exact_norm = std::sqrt(n2);
  return r;
}

template <typename T>
BiasProbe<T>::BiasProbe(const MetaGradient<T>& mg, uint64_t seed, int threads)
    : seed_(seed), exact_(mg, {Algo::kMaml, seed, threads}) {}

template <typename T>
BiasProbe<T>::BiasProbe(BatchedModel<T>& model, const InnerLoop& inner, uint64_t seed, int threads)
    : seed_(seed), exact_(model, inner, {Algo::kMaml, seed, threads, true}) {}

template <typename T>
void BiasProbe<T>::run(const T* theta, uint64_t step, const std::vector<int64_t>& tasks,
                       const typename MetaStep<T>::EpisodeFn& episode, double q,
                       BiasSums<T>& sums) {
  const int64_t d = static_cast<int64_t>(sums.fo.size());
  scratch_sums_.reset(d);
  exact_.run(theta, step, tasks, episode, 1.0, scratch_sums_);
  for (size_t i = 0; i < tasks.size(); ++i) {
    const T* gf = exact_.task_fo(i);
    const T* ge = exact_.task_exact(i);
    // c̄ = mean over coins of (1 − ξ/q): exactly 0 at q = 1, where every coin takes the exact path.
    MT_CHECK(tasks[i] >= 0 && tasks[i] < (int64_t{1} << 44), "bias probe task index out of range");
    int hits = 0;
    for (int m = 0; q > 0 && m < kCoinDraws; ++m)
      hits += ufom_takes_exact(seed_, step, (static_cast<uint64_t>(tasks[i]) << 16) + m, q);
    const double c = q > 0 ? 1.0 - hits / (q * kCoinDraws) : 0.0;
    double fo_sq = 0;
    if (sums.exact_reduce) {
      const int64_t slot = tasks[i] - sums.first_task;
      MT_CHECK(slot >= 0 && slot < static_cast<int64_t>(sums.task_owned.size()) &&
                   !sums.task_owned[slot],
               "probe task ", tasks[i], " has no slot in the exact sums, or ran twice");
      for (int64_t k = 0; k < d; ++k) {
        const double e = static_cast<double>(gf[k]) - ge[k];
        add_fixed(e, sums.fo_fixed[k], "g_F - g_E", k, tasks[i]);
        add_fixed(c * e, sums.ufom_fixed[k], "g_U - g_E", k, tasks[i]);
        add_fixed(ge[k], sums.exact_fixed[k], "g_E", k, tasks[i]);
        fo_sq += e * e;
      }
      sums.task_stats[slot * BiasSums<T>::kTaskStats + BiasSums<T>::kFoSq] = fo_sq;
      sums.task_stats[slot * BiasSums<T>::kTaskStats + BiasSums<T>::kUfomSq] = c * c * fo_sq;
      sums.task_owned[slot] = 1;
      sums.tasks += 1;
      continue;
    }
    for (int64_t k = 0; k < d; ++k) {
      const double e = static_cast<double>(gf[k]) - ge[k];
      sums.fo[k] += static_cast<T>(e);
      sums.ufom[k] += static_cast<T>(c * e);
      sums.exact[k] += ge[k];
      fo_sq += e * e;
    }
    sums.fo_sq += fo_sq;
    sums.ufom_sq += c * c * fo_sq;
    sums.tasks += 1;
  }
}

template struct BiasSums<float>;
template struct BiasSums<double>;
template BiasReport bias_report(const BiasSums<float>&, bool);
template BiasReport bias_report(const BiasSums<double>&, bool);
template class BiasProbe<float>;
template class BiasProbe<double>;

}  // namespace mt
