// Bilevel problems min_x F(x, y) s.t. y ∈ argmin_y f(x, y) over flat float64 variables, as the
// sl-BAMM solver (core/slbamm.h) sees them: values, gradients, y-Hessian-vector products and the
// mixed products ∇²_xy · z of any blend a·F + b·f, all exact (analytic or R-passes, never finite
// differences). Sharded problems return this rank's partial sums; the solver sums over ranks.
#pragma once

#include <cstdint>
#include <vector>

namespace mt {

// The objective a·F + b·f: {1, 0} is F, {0, 1} is f, {μ, 1 − μ} is φ_μ.
struct Blend {
  double a = 0;  // weight of F
  double b = 0;  // weight of f
};

struct BilevelValues {
  double F = 0;  // upper-level objective
  double f = 0;  // lower-level objective
};

// Every method overwrites its output buffer (dim_x or dim_y doubles) and reads nothing else of
// it. A problem whose examples are sharded over ranks returns the contribution of this rank's
// examples, so that the sum over ranks is the full quantity; x and y are replicated.
class BilevelProblem {
 public:
  virtual ~BilevelProblem() = default;
  virtual int64_t dim_x() const = 0;
  virtual int64_t dim_y() const = 0;
  // The starting point (the same on every rank).
  virtual void init(double* x, double* y) const = 0;
  // The upper-level solution when it is known (for x_err); empty otherwise.
  virtual std::vector<double> x_star() const { return {}; }

  virtual BilevelValues values(const double* x, const double* y) const = 0;
  // g ← ∇_y (a F + b f)(x, y).
  virtual void grad_y(Blend w, const double* x, const double* y, double* g) const = 0;
  // g ← ∇_x (a F + b f)(x, y).
  virtual void grad_x(Blend w, const double* x, const double* y, double* g) const = 0;
  // Hv ← ∇²_yy (a F + b f)(x, y) · v.
  virtual void hvp_yy(Blend w, const double* x, const double* y, const double* v,
                      double* Hv) const = 0;
  // out ← ∇²_xy (a F + b f)(x, y) · z = ∂/∂x ⟨∇_y (a F + b f)(x, y), z⟩  (dim_x values).
  virtual void mixed_xy(Blend w, const double* x, const double* y, const double* z,
                        double* out) const = 0;
};

// ⟨a, b⟩ and ‖a‖ over n doubles.
double dot(int64_t n, const double* a, const double* b);
double norm2(int64_t n, const double* a);

}  // namespace mt
