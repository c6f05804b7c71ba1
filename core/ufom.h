// UFOM, the unbiased first-order meta-gradient (Likhosherstov et al., ICML 2021), DESIGN §3.5–3.6.
// Per task t at outer step s: ξ_t ~ Bernoulli(q) from the stream (seed, s, t, kUfom), and
//   g_t = g_F + (ξ_t / q)(g_E − g_F),   computed as (1/q) g_E + (1 − 1/q) g_F when ξ_t = 1,
// which is exactly g_E at q = 1 (no rounding), and g_F when ξ_t = 0. E[g_t] = g_E.
// Adaptive q picks q each step to minimise cost × (second moment)² from running estimates of
// V² = ‖g_E‖² and D² = ‖g_E − g_F‖²; it is 1 (MAML) once D²/V² ≥ ½ C_E/(C_F + C_E).
#pragma once

#include <cstdint>

namespace mt {

// ξ_t for task t of outer step s. q = 0 never takes the exact path, q = 1 always does.
bool ufom_takes_exact(uint64_t seed, uint64_t step, uint64_t task, double q);

// The q minimising (C_F + q C_E)(V² + (1/q − 1) D²)²: 1 when D² ≥ ½ C_E V² / (C_F + C_E),
// else the root in (0, 1] of C_E (V² − D²) q² − C_E D² q − 2 C_F D² = 0, floored at q_min.
//
// V² + (1/q − 1) D² is E‖g‖² of one task's estimate. The derivative of the objective has the
// sign of that quadratic, which is −2 C_F D² < 0 at q = 0, so the objective falls until the
// quadratic's positive root; the root is ≥ 1, hence q = 1, exactly when the quadratic is ≤ 0 at
// q = 1. In plain terms, with ρ² = D²/V² (the squared error of the first-order gradient relative
// to the exact one's squared norm):
//     q = 1  ⇔  ρ² ≥ ½ C_E / (C_F + C_E)          (saturation_rho2 below)
// e.g. ½ · 15/21 = 0.357 for r = 5, recompute (FOMAML off by ≥ 60% of ‖g_E‖), ½ · 1/3 = 0.167 for
// the default r = 1, store; never above ½, so whatever the exact path costs, q = 1 once FOMAML's
// per-task error exceeds 71% of the exact gradient's norm. Sampling the exact path less often
// multiplies the squared error by 1/q − 1, and when that error is already comparable to ‖g_E‖²
// the saved evaluations never pay for the squared second moment.
// Checked against the official code (xingyousong/ufom, supervised_reptile/reptile.py, class
// UnbMAML, train_step, the branch for exact_prob < 0): the same threshold
// `D2 >= 0.5*Crnd*V2/(Cdet + Crnd)` → 1, the same quadratic (a = (V2 − D2) Crnd, b = −D2 Crnd,
// c = −2 D2 Cdet, larger root), Cdet = r + 1, Crnd = r(r + 1)/2, floor 0.05, β = 0.99, and
// `D2 = D2/10` (our d2_scale). That quadratic is the first-order condition of the *squared*
// second moment: for (C_F + q C_E)(V² + (1/q − 1) D²)^k it reads
// C_E (V² − D²) q² + (1 − k) C_E D² q − k C_F D² = 0, and the official coefficients are k = 2.
double optimal_q(double v2, double d2, double cost_fo, double cost_exact, double q_min);

// ½ C_E / (C_F + C_E): the ratio D²/V² (after AdaptiveQ's d2_scale) at and above which
// optimal_q returns 1.
double saturation_rho2(double cost_fo, double cost_exact);

// Bias-corrected exponential moving averages (β = 0.99) of V² and D² over exact tasks.
// The official code feeds the already-debiased UFOM estimate into D²; we use g_E − g_F, the
// quantity the variance formula is about. (Its sample is (1/q − 1)² ‖g_E − g_F‖²: zero at q = 1,
// so there q cannot stay at 1, and its factor 0.1 scales a different quantity from our
// d2_scale.) Updated once per outer step from statistics summed over all ranks, so every rank
// computes the same q (the official code updates once per exact task).
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
