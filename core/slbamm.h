// sl-BAMM, the single-loop Bi-level Averaged Method of Multipliers (Liu et al., ICML 2023;
// DESIGN §3.7). With φ_μ = μF + (1 − μ)f and μ_k ↓ 0, iteration k does, in this order,
//   y ← y − β_y,k ∇_y φ_μk(x, y)
//   z ← z − η_k r,   r = ∇²_yy φ_μk(x, y) z − ∇_y F(x, y)          (at the new y)
//   x ← x − β_x,k (∇_x F(x, y) − ∇²_xy φ_μk(x, y) z)               (new y, new z)
// Schedules (constants chosen as in the authors' merely-convex script, strategy "thelr"):
//   μ_k    = μ_0 / (k+1)^{1/p}
//   β_y,k  = y_lr · (k+1)^{−τ/2}
//   β_x,k  = x_lr · (μ_k/μ_0)³ · (k+1)^{−3τ/2}   (∝ μ_k³ (k+1)^{−3τ/2}; x_lr is the first step)
//   η_k    = line search: min(‖r‖² / (rᵀ ∇²_yy φ_μk r), z_lr_max)  (the exact minimiser of the
//            z-quadratic along −r, capped: with μ = 0 the quadratic may be unbounded along r)
//            scheduled:   z_lr · (k+1)^{−τ/2}
// Comparison variants share every step size and differ only in the lower-level objective:
//   kNoAveraging:  μ ≡ 0 (φ = f);  kRegularised: μ ≡ 0 and f + (ε/2)‖y‖².
// Distributed: every sum over the problem's blocks (core/bilevel.h) — the y-gradient, the
// z-residual parts ∇_y F, ∇²_yy φ z, ∇²_yy φ r, and F, f — is combined over ranks, and so is the
// x-gradient, whose entries each come from one rank. x, y, z stay replicated.
//   Reduce::kExact (dist.reduce = exact): the same bits on any number of ranks. Each block part
//     of a problem with several blocks is converted element by element to round(v·2^64) and added
//     into 128-bit integers (core/exact_sum.h), which one int64 sum-allreduce of two limbs per
//     element (`sum_ranks_int`) combines: 16 bytes per element, |result − S| ≤ ½ ulp(result) +
//     blocks·2^-65 for S the exact sum of the parts, parts limited to |v| < 2^31 (larger or
//     non-finite parts are an SlBammRangeError naming the quantity). Quantities with one
//     contributor per element — the x-gradient, and everything of a one-block problem such as the
//     toy — go through a float64 allreduce (`sum_ranks`) in which the other ranks add +0, so the
//     sum is the owner's value (a −0 is made +0 on every rank count): exact, 8 bytes per element.
//   Reduce::kFloat (dist.reduce = float): each rank adds its blocks' parts in float64 and
//     `sum_ranks` adds the ranks' partial sums (8 bytes per element; bits depend on N).
// Without callbacks (one process) the same arithmetic runs, so one process gives the bits of N.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/bilevel.h"
#include "core/check.h"
#include "core/exact_sum.h"

namespace mt {

struct SlBammOptions {
  enum class Variant { kAveraged, kNoAveraging, kRegularised };
  enum class ZStep { kLineSearch, kScheduled };
  Variant variant = Variant::kAveraged;
  double mu0 = 0.9;       // μ_0 in (0, 1]
  double p = 10;          // μ_k = μ_0 / (k+1)^{1/p}
  double tau = 1.0 / 40;  // step-size decay exponent τ
  double y_lr = 0.1;      // β_y,0
  double x_lr = 0.1;      // β_x,0
  ZStep z_step = ZStep::kLineSearch;
  double z_lr = 0.5;       // η_0 of the scheduled z-step
  double z_lr_max = 1000;  // cap of the line-search step
  double reg = 0.1;        // ε of kRegularised
  enum class Reduce { kExact, kFloat };
  Reduce reduce = Reduce::kExact;
};

// A block part beyond the exact reduction's range: the iteration diverged.
class SlBammRangeError : public Error {
 public:
  explicit SlBammRangeError(const std::string& message) : Error(ExitCode::kRuntime, message) {}
};

// Sums a flat buffer over ranks in place (all ranks call it in the same order).
using SumRanks = std::function<void(double* buf, size_t n)>;
using SumRanksInt = std::function<void(int64_t* buf, size_t n)>;

// Everything the next iteration reads: the iterate (x, y, z) and the number of iterations done,
// from which μ_k, β_y,k, β_x,k and the scheduled η_k follow. The line search keeps nothing
// between iterations (η_k is recomputed from r_k) and the solver draws no random numbers, so a
// solver restored from a state continues exactly as the one that exported it.
struct SlBammState {
  int64_t step = 0;
  std::vector<double> x, y, z;  // dim_x, dim_y, dim_y values
};

struct SlBammStats {
  int64_t step = 0;  // iterations done
  double mu = 0;     // averaging weight used in this iteration
  double beta_y = 0, beta_x = 0, eta = 0;
  double z_res = 0;   // ‖∇²_yy φ z − ∇_y F‖ before the z-update (at the new y)
  double x_grad = 0;  // ‖∇_x F − ∇²_xy φ z‖
  bool has_values = false;
  double F = 0, f = 0;  // at the new (x, y), summed over ranks; when has_values
  double x_err = -1;    // ‖x − x*‖ / ‖x*‖ when x* is known, else −1
};

class SlBamm {
 public:
  // The problem must outlive the solver. Starts at problem.init() with z = 0. Multi-rank runs pass
  // both sums (Reduce::kFloat needs only sum_ranks).
  SlBamm(const BilevelProblem& problem, SlBammOptions opt, SumRanks sum_ranks = {},
         SumRanksInt sum_ranks_int = {});

  // One iteration; with `evaluate`, also F and f at the new iterate (one more pass).
  SlBammStats step(bool evaluate = true);

  // μ_k and step sizes of iteration k (0-based).
  double mu(int64_t k) const;
  double beta_y(int64_t k) const;
  double beta_x(int64_t k) const;

  int64_t iterations() const { return k_; }
  SlBammState state() const { return {k_, x_, y_, z_}; }
  // Continues from `s` (sizes must match the problem, step >= 0; Error otherwise).
  void restore(const SlBammState& s);
  const std::vector<double>& x() const { return x_; }
  const std::vector<double>& y() const { return y_; }
  const std::vector<double>& z() const { return z_; }
  std::vector<double>& mutable_x() { return x_; }
  std::vector<double>& mutable_y() { return y_; }
  double x_err() const;  // −1 when x* is unknown

 private:
  // The lower-level blend of this iteration: {μ, 1 − μ} (or {0, 1}) plus the regulariser.
  Blend blend(int64_t k) const;
  double reg() const;
  // A block part of n values: fills its second argument for block b.
  using Part = std::function<void(int64_t b, double* out)>;
  // out ← Σ over all blocks and ranks of `part` (n = out.size()); `what` names it in errors.
  void sum_blocks(const Part& part, std::vector<double>& out, const char* what) const;
  // buf ← Σ over ranks of buf, exact where every element has one contributor.
  void sum_over_ranks(std::vector<double>& buf) const;
  // Hv ← ∇²_yy φ v summed over ranks, regulariser included.
  void hvp(Blend w, const double* v, std::vector<double>& Hv, const char* what) const;

  const BilevelProblem& problem_;
  SlBammOptions opt_;
  SumRanks sum_ranks_;
  SumRanksInt sum_ranks_int_;
  bool fixed_;  // Reduce::kExact and several blocks: the fixed-point sums
  int64_t k_ = 0;
  std::vector<double> x_, y_, z_, x_star_;
  std::vector<double> gy_, gF_, Hz_, r_, Hr_, gx_, mixed_;  // scratch
  mutable std::vector<double> part_;
  mutable std::vector<Fixed> acc_;
  mutable std::vector<int64_t> limbs_;
};

}  // namespace mt
