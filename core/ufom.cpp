// UFOM estimator and adaptive q (core/ufom.h).
#include "core/ufom.h"

#include <algorithm>
#include <cmath>

#include "core/rng.h"

namespace mt {

bool ufom_takes_exact(uint64_t seed, uint64_t step, uint64_t task, double q) {
  Rng rng(seed, step, task, Stream::kUfom);
  return rng.uniform() < q;
}

double optimal_q(double v2, double d2, double cost_fo, double cost_exact, double q_min) {
  if (d2 >= 0.5 * cost_exact * v2 / (cost_fo + cost_exact)) return 1.0;
  // Here D² < ½ V² C_E/(C_F + C_E) < ½ V², so a > 0 and c ≤ 0: exactly one root is positive,
  // and the failed branch condition (the quadratic is negative at q = 1) puts it below 1.
  const double a = cost_exact * (v2 - d2), b = -cost_exact * d2, c = -2.0 * cost_fo * d2;
  const double root = (-b + std::sqrt(b * b - 4 * a * c)) / (2 * a);
  return std::clamp(root, q_min, 1.0);
}

double saturation_rho2(double cost_fo, double cost_exact) {
  return 0.5 * cost_exact / (cost_fo + cost_exact);
}

void AdaptiveQ::update(double mean_v2, double mean_d2) {
  v2_ema = kBeta * v2_ema + (1 - kBeta) * mean_v2;
  d2_ema = kBeta * d2_ema + (1 - kBeta) * mean_d2;
  ++count;
}

double AdaptiveQ::v2() const {
  return count ? v2_ema / (1 - std::pow(kBeta, static_cast<double>(count))) : 0.0;
}
double AdaptiveQ::d2() const {
  return count ? d2_scale_ * d2_ema / (1 - std::pow(kBeta, static_cast<double>(count))) : 0.0;
}

double AdaptiveQ::q(double cost_fo, double cost_exact) const {
  if (count == 0) return q_min_;
  return optimal_q(v2(), d2(), cost_fo, cost_exact, q_min_);
}

}  // namespace mt
