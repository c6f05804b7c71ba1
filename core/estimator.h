// Estimators of the outer gradient (DESIGN §3.4–3.6, §5.1): FOMAML, exact MAML and UFOM (fixed
// or adaptive q) differ only in which tasks take the exact path, how an exact task's g_E and
// g_F combine, and, for adaptive UFOM, a state updated once per step from statistics summed over
// all ranks. That is this interface; a new estimator is one class in estimator.cpp plus its line
// in make_estimator. Nothing here touches buffers: MetaStep applies the combination. The
// algorithm presets (Meta-SGD, MAML++, …) take the estimator algo_preset names for them; their
// other choices live in InnerLoop and the engine (core/meta_engine.h).
#pragma once

#include <cstdint>
#include <memory>

#include "core/meta_gradient.h"
#include "core/ufom.h"

namespace mt {

// The adaptive-UFOM state a checkpoint keeps (all zero for the other estimators).
struct EstimatorState {
  double v2_ema = 0, d2_ema = 0;
  int64_t count = 0;
};

class Estimator {
 public:
  virtual ~Estimator() = default;
  virtual Algo algo() const = 0;
  // q of the coming step: 1 for MAML, 0 for FOMAML, UFOM's fixed or adaptive q.
  virtual double q() const = 0;
  // ξ_t: whether task `task` of outer step `step` takes the exact path at probability q.
  virtual bool takes_exact(uint64_t seed, uint64_t step, uint64_t task, double q) const = 0;
  // An exact task's gradient g = a·g_E + b·g_F, or g_E itself when `plain`.
  struct Mix {
    bool plain = true;
    double a = 1, b = 0;
  };
  virtual Mix mix(double q) const = 0;
  // Once per step, with the statistics of every rank: exact tasks, Σ‖g_E‖², Σ‖g_E − g_F‖².
  virtual void update(double exact_tasks, double v2_sum, double d2_sum) {
    (void)exact_tasks, (void)v2_sum, (void)d2_sum;
  }
  virtual EstimatorState state() const { return {}; }
  virtual void restore(const EstimatorState& s) { (void)s; }
};

struct EstimatorSettings {
  Algo algo = Algo::kMaml;
  double q = 0.1;         // UFOM's fixed q
  bool adaptive = false;  // UFOM: adaptive q
  double q_min = 0.05, d2_scale = 1.0;
  double cost_fo = 0, cost_exact = 0;  // gradient evaluations of each path (adaptive q)
  int64_t first_order_steps = 0;  // MAML: outer steps 0 … N−1 take the first-order path only
};

// The estimator of s.algo's gradient path (algo_preset). Throws UsageError for algo = slbamm
// (a bilevel solver, not a meta-gradient).
std::unique_ptr<Estimator> make_estimator(const EstimatorSettings& s);

}  // namespace mt
