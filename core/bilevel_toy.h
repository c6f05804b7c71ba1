// The merely-convex toy of Liu et al. (ICML 2023, DESIGN §3.7), x ∈ Rⁿ, y = (y1, y2) ∈ R²ⁿ:
//   f(x, y) = ½‖y1‖² − xᵀy1   (y2 free: the lower-level solutions are y1 = x, any y2),
//   F(x, y) = ½‖x − y2‖² + ½‖y1 − e‖²,   start x = y = 0.01·e,   solution x* = e, y* = (e, e).
// Derivatives are written out by hand; y is laid out [y1, y2].
#pragma once

#include "core/bilevel.h"

namespace mt {

class BilevelToy : public BilevelProblem {
 public:
  // The toy has no examples to shard: it is one block, and in a multi-rank run rank 0 holds it
  // (`active`) while the other ranks own no block and return zeros for x.
  explicit BilevelToy(int64_t n = 100, bool active = true, double start = 0.01)
      : n_(n), active_(active), start_(start) {}

  int64_t dim_x() const override { return n_; }
  int64_t dim_y() const override { return 2 * n_; }
  void init(double* x, double* y) const override;
  std::vector<double> x_star() const override { return std::vector<double>(n_, 1.0); }

  std::vector<int64_t> owned_blocks() const override {
    return active_ ? std::vector<int64_t>{0} : std::vector<int64_t>{};
  }
  BilevelValues block_values(int64_t b, const double* x, const double* y) const override;
  void block_grad_y(int64_t b, Blend w, const double* x, const double* y, double* g) const override;
  void block_hvp_yy(int64_t b, Blend w, const double* x, const double* y, const double* v,
                    double* Hv) const override;
  void grad_x(Blend w, const double* x, const double* y, double* g) const override;
  void mixed_xy(Blend w, const double* x, const double* y, const double* z,
                double* out) const override;

 private:
  int64_t n_;
  bool active_;
  double start_;
};

}  // namespace mt
