// Bilevel problems min_x F(x, y) s.t. y ∈ argmin_y f(x, y) over flat float64 variables, as the
// sl-BAMM solver (core/slbamm.h) sees them: values, gradients, y-Hessian-vector products and the
// mixed products ∇²_xy · z of any blend a·F + b·f, all exact (analytic or R-passes, never finite
// differences). Sums over examples are split into a fixed partition of blocks that ranks share.
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

// The fixed partition. Every summed quantity — the values, ∇_y and ∇²_yy · v — is the sum over
// blocks 0 … blocks()−1 of a part computed from that block alone, and this rank computes the parts
// of owned_blocks() (each block is owned by exactly one rank). The partition does not depend on
// the number of ranks, so neither does the function: the solver may sum the parts in any order,
// exactly (dist.reduce = exact: fixed point, core/exact_sum.h) or in float64 (dist.reduce = float).
// The x-derivatives are per-example: every entry comes from the one rank that owns the entry's
// example, the other ranks return 0 there, and their sum over ranks is the owner's value.
// Every method overwrites its output buffer (dim_x or dim_y doubles) and reads nothing else of
// it; x and y are replicated.
class BilevelProblem {
 public:
  virtual ~BilevelProblem() = default;
  virtual int64_t dim_x() const = 0;
  virtual int64_t dim_y() const = 0;
  // The starting point (the same on every rank).
  virtual void init(double* x, double* y) const = 0;
  // The upper-level solution when it is known (for x_err); empty otherwise.
  virtual std::vector<double> x_star() const { return {}; }

  virtual int64_t blocks() const { return 1; }
  virtual std::vector<int64_t> owned_blocks() const { return {0}; }  // ascending

  // The parts of block b (one of owned_blocks()):
  virtual BilevelValues block_values(int64_t b, const double* x, const double* y) const = 0;
  // g ← block b's part of ∇_y (a F + b f)(x, y).
  virtual void block_grad_y(int64_t b, Blend w, const double* x, const double* y,
                            double* g) const = 0;
  // Hv ← block b's part of ∇²_yy (a F + b f)(x, y) · v.
  virtual void block_hvp_yy(int64_t b, Blend w, const double* x, const double* y, const double* v,
                            double* Hv) const = 0;

  // g ← ∇_x (a F + b f)(x, y) at this rank's entries, 0 elsewhere.
  virtual void grad_x(Blend w, const double* x, const double* y, double* g) const = 0;
  // out ← ∇²_xy (a F + b f)(x, y) · z = ∂/∂x ⟨∇_y (a F + b f)(x, y), z⟩ at this rank's entries,
  // 0 elsewhere (dim_x values).
  virtual void mixed_xy(Blend w, const double* x, const double* y, const double* z,
                        double* out) const = 0;

  // This rank's partial sums: the parts of its blocks added in float64 in block order.
  BilevelValues values(const double* x, const double* y) const;
  void grad_y(Blend w, const double* x, const double* y, double* g) const;
  void hvp_yy(Blend w, const double* x, const double* y, const double* v, double* Hv) const;
};

// ⟨a, b⟩ and ‖a‖ over n doubles.
double dot(int64_t n, const double* a, const double* b);
double norm2(int64_t n, const double* a);

}  // namespace mt
