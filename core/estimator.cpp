// FOMAML, exact MAML and UFOM (fixed or adaptive q) as Estimators (core/estimator.h).
#include "core/estimator.h"

#include "core/check.h"
#include "core/meta_params.h"

namespace mt {

namespace {

// g_F only: no task takes the exact path.
class Fomaml final : public Estimator {
 public:
  Algo algo() const override { return Algo::kFomaml; }
  double q() const override { return 0.0; }
  bool takes_exact(uint64_t, uint64_t, uint64_t, double) const override { return false; }
  Mix mix(double) const override { return {}; }
};

// g_E of every task; with derivative-order annealing (MAML++), g_F in outer steps below N.
class Maml final : public Estimator {
 public:
  explicit Maml(int64_t first_order_steps) : first_order_steps_(first_order_steps) {}
  Algo algo() const override { return Algo::kMaml; }
  double q() const override { return 1.0; }
  bool takes_exact(uint64_t, uint64_t step, uint64_t, double) const override {
    return step >= static_cast<uint64_t>(first_order_steps_);
  }
  Mix mix(double) const override { return {}; }

 private:
  int64_t first_order_steps_;
};

// g = g_F + (ξ/q)(g_E − g_F), ξ ~ Bernoulli(q) per task (core/ufom.h); q fixed or adaptive.
class Ufom final : public Estimator {
 public:
  explicit Ufom(const EstimatorSettings& s) : s_(s), adaptive_(s.q_min, s.d2_scale) {}
  Algo algo() const override { return Algo::kUfom; }
  double q() const override { return s_.adaptive ? adaptive_.q(s_.cost_fo, s_.cost_exact) : s_.q; }
  bool takes_exact(uint64_t seed, uint64_t step, uint64_t task, double q) const override {
    return ufom_takes_exact(seed, step, task, q);
  }
  // (1/q) g_E + (1 − 1/q) g_F, the form of ufom_combine: exactly g_E at q = 1.
  Mix mix(double q) const override { return {false, 1.0 / q, 1.0 - 1.0 / q}; }
  void update(double exact_tasks, double v2_sum, double d2_sum) override {
    if (s_.adaptive && exact_tasks > 0)
      adaptive_.update(v2_sum / exact_tasks, d2_sum / exact_tasks);
  }
  EstimatorState state() const override {
    return {adaptive_.v2_ema, adaptive_.d2_ema, adaptive_.count};
  }
  void restore(const EstimatorState& st) override {
    adaptive_.v2_ema = st.v2_ema;
    adaptive_.d2_ema = st.d2_ema;
    adaptive_.count = st.count;
  }

 private:
  EstimatorSettings s_;
  AdaptiveQ adaptive_;
};

}  // namespace

std::unique_ptr<Estimator> make_estimator(const EstimatorSettings& s) {
  if (s.algo != Algo::kSlbamm) {
    switch (algo_preset(s.algo).estimator) {
      case Algo::kFomaml:
        return std::make_unique<Fomaml>();
      case Algo::kUfom:
        return std::make_unique<Ufom>(s);
      default:
        return std::make_unique<Maml>(s.first_order_steps);
    }
  }
  throw UsageError(
      "algo = slbamm is a bilevel solver, not a meta-gradient; "
      "run it through metatrain (launch/bilevel_trainer.h)");
}

}  // namespace mt
