// UFOM, the unbiased first-order meta-gradient (Likhosherstov et al., ICML 2021), DESIGN §3.5–3.6.
// Per task t at outer step s: ξ_t ~ Bernoulli(q) from the stream (seed, s, t, kUfom), and
//   g_t = g_F + (ξ_t / q)(g_E − g_F),   computed as (1/q) g_E + (1 − 1/q) g_F when ξ_t = 1,
// which is exactly g_E at q = 1 (no rounding), and g_F when ξ_t = 0. E[g_t] = g_E.
// Adaptive q picks q each step to minimise cost × variance from running estimates of
// V² = ‖g_E‖² and D² = ‖g_E − g_F‖².
#pragma once

#include <cstdint>

namespace mt {

// ξ_t for task t of outer step s. q = 0 never takes the exact path, q = 1 always does.
bool ufom_takes_exact(uint64_t seed, uint64_t step, uint64_t task, double q);

// The q minimising (C_F + q C_E)(V² + (1/q − 1) D²)²: 1 when D² ≥ ½ C_E V² / (C_F + C_E),
// else the root in (0, 1] of C_E (V² − D²) q² − C_E D² q − 2 C_F D² = 0, floored at q_min.
double optimal_q(double v2, double d2, double cost_fo, double cost_exact, double q_min);

// Bias-corrected exponential moving averages (β = 0.99) of V² and D² over exact tasks.
// The official code feeds the already-debiased UFOM estimate into D²; we use g_E − g_F, the
// quantity the variance formula is about. Updated once per outer step from statistics summed
// over all ranks, so every rank computes the same q.
class AdaptiveQ {
 public:
  static constexpr double kBeta = 0.99;
  AdaptiveQ(double q_min, double d2_scale) : q_min_(q_min), d2_scale_(d2_scale) {}

  // Mean ‖g_E‖² and ‖g_E − g_F‖² over the n_exact > 0 exact tasks of one outer step.
  void update(double mean_v2, double mean_d2);
  // q for the next outer step; q_min until the first exact sample has been seen.
  double q(double cost_fo, double cost_exact) const;
  double v2() const;  // bias-corrected V²
  double d2() const;  // bias-corrected, scaled D²

  // Raw state, for checkpoints.
  double v2_ema = 0, d2_ema = 0;
  int64_t count = 0;

 private:
  double q_min_, d2_scale_;
};

}  // namespace mt
