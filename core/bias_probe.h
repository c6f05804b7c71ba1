// Measures the bias of first-order meta-gradients (issue 7; DESIGN §3.4–3.6): at a fixed θ, on
// tasks that training never sees, every task's exact g_E and first-order g_F, and UFOM's estimate
// g_U = g_F + (ξ/q)(g_E − g_F) averaged over kCoinDraws coins per task. A pure FOMAML run logs no
// bias of its own (it never computes g_E); this probe does, without touching the run's state.
#pragma once

#include <vector>

#include "core/exact_sum.h"
#include "core/meta_step.h"

namespace mt {

// Sums over this rank's probe tasks; a sum-allreduce of pack()ed buffers combines ranks.
template <typename T>
struct BiasSums {
  std::vector<T> fo, ufom, exact;  // Σ (g_F − g_E), Σ (mean over coins of g_U − g_E), Σ g_E
  double fo_sq = 0, ufom_sq = 0;   // Σ ‖·‖² of the two per-task errors
  double tasks = 0;

  void reset(int64_t d);
  std::vector<T> pack() const;
  void unpack(const std::vector<T>& buf);

  // The exact reduction (dist.reduce = exact), on after reset_exact, like MetaStepSums': run()
  // adds every task's float64 error vectors and g_E into fixed-point accumulators
  // (core/exact_sum.h; elements must stay below 2^31, else an Error names the element) and puts
  // its two squared norms in the task's slot, task − first_task. After one int64 sum-allreduce
  // of pack_exact()ed buffers, unpack_exact gives fo, ufom, exact as the exact sums rounded once
  // to T and the scalars summed in slot order: the same bits for any number of ranks.
  enum TaskStat { kFoSq, kUfomSq, kTaskStats };
  bool exact_reduce = false;
  int64_t first_task = 0;
  std::vector<Fixed> fo_fixed, ufom_fixed, exact_fixed;  // d accumulators each
  std::vector<double> task_stats;                        // kTaskStats per slot
  std::vector<int64_t> task_owned;                       // 1 for the slots this rank ran

  // Zeroes everything for the probe tasks first_task … first_task + tasks − 1.
  void reset_exact(int64_t d, int64_t first_task, int64_t tasks);
  // The limbs of the three accumulators, then per slot its statistics' bit patterns and its
  // owner count: 6d + (kTaskStats + 1)·tasks int64.
  std::vector<int64_t> pack_exact() const;
  // From the summed buffer; checks that every slot was run by exactly one rank.
  void unpack_exact(const std::vector<int64_t>& buf);
};

// What the sums say. For an estimator with per-task error e_t = g − g_E over K tasks:
// `bias` = ‖mean e_t‖, and `noise` = sqrt(tr Σ̂ / K) with tr Σ̂ = (Σ‖e_t‖² − K‖mean e_t‖²)/(K−1),
// the root-mean-square `bias` that K draws of a zero-mean error of the same spread would show.
// bias ≫ noise: a real bias; bias ≈ noise: consistent with zero.
struct BiasReport {
  double tasks = 0;
  double fo = 0, fo_noise = 0;      // FOMAML: g_F − g_E
  double ufom = 0, ufom_noise = 0;  // UFOM at the probe's q: g_U − g_E (NaN when not measured)
  double exact_norm = 0;            // ‖mean g_E‖, the scale of the true meta-gradient
};

template <typename T>
BiasReport bias_report(const BiasSums<T>& sums, bool with_ufom);

template <typename T>
class BiasProbe {
 public:
  BiasProbe(const MetaGradient<T>& mg, uint64_t seed, int threads);
  // On any backend (which must outlive the probe).
  BiasProbe(BatchedModel<T>& model, const InnerLoop& inner, uint64_t seed, int threads);

  // Coins per task for UFOM's error: g_U − g_E = (1 − ξ/q)(g_F − g_E), so the mean over coins
  // is c̄ (g_F − g_E) with E[c̄] = 0 and Var[c̄] = (1 − q)/(q kCoinDraws). One coin per task would
  // leave the error exactly g_F − g_E whenever no coin of the probe comes up (likely at q = 0.05),
  // and a sample spread that says nothing about the estimator's.
  static constexpr int kCoinDraws = 1000;

  // Adds the probe's tasks (global indices < 2^44) at θ to `sums` (after reset_exact, every task
  // must have a slot). UFOM's coins are ufom_takes_exact(seed, step, task·2^16 + m, q),
  // m < kCoinDraws; q ≤ 0 skips UFOM.
  void run(const T* theta, uint64_t step, const std::vector<int64_t>& tasks,
           const typename MetaStep<T>::EpisodeFn& episode, double q, BiasSums<T>& sums);

 private:
  uint64_t seed_;
  MetaStep<T> exact_;  // runs every task on the exact path, keeping g_F and g_E per task
  MetaStepSums<T> scratch_sums_;
};

}  // namespace mt
