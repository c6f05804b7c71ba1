// The sl-BAMM iteration and its schedules (core/slbamm.h).
#include "core/slbamm.h"

#include <cmath>

#include "core/check.h"

namespace mt {

SlBamm::SlBamm(const BilevelProblem& problem, SlBammOptions opt, SumRanks sum_ranks,
               SumRanksInt sum_ranks_int)
    : problem_(problem),
      opt_(opt),
      sum_ranks_(std::move(sum_ranks)),
      sum_ranks_int_(std::move(sum_ranks_int)),
      fixed_(opt.reduce == SlBammOptions::Reduce::kExact && problem.blocks() > 1) {
  MT_CHECK(opt_.mu0 > 0 && opt_.mu0 <= 1, "mu0 must be in (0, 1]");
  MT_CHECK(!fixed_ || !sum_ranks_ || sum_ranks_int_,
           "the exact reduction over ranks needs the int64 sum (sum_ranks_int)");
  MT_CHECK(problem.blocks() >= 1 && problem.blocks() <= kExactMaxTasks, "the problem has ",
           problem.blocks(), " blocks; the solver takes 1 to ", kExactMaxTasks);
  MT_CHECK(opt_.p > 0 && opt_.tau >= 0, "p must be > 0 and tau >= 0");
  const int64_t dx = problem.dim_x(), dy = problem.dim_y();
  x_.resize(dx);
  y_.resize(dy);
  z_.assign(dy, 0.0);
  problem.init(x_.data(), y_.data());
  x_star_ = problem.x_star();
  MT_CHECK(x_star_.empty() || static_cast<int64_t>(x_star_.size()) == dx, "x* has the wrong size");
  for (auto* v : {&gy_, &gF_, &Hz_, &r_, &Hr_}) v->resize(dy);
  gx_.resize(dx);
  mixed_.resize(dx);
}

void SlBamm::restore(const SlBammState& s) {
  MT_CHECK(
      s.step >= 0 && s.x.size() == x_.size() && s.y.size() == y_.size() && s.z.size() == z_.size(),
      "sl-BAMM state of step ", s.step, " with ", s.x.size(), ", ", s.y.size(), ", ", s.z.size(),
      " values of x, y, z; the problem has ", x_.size(), ", ", y_.size(), ", ", z_.size());
  k_ = s.step;
  x_ = s.x;
  y_ = s.y;
  z_ = s.z;
}

double SlBamm::mu(int64_t k) const {
  return opt_.mu0 / std::pow(static_cast<double>(k + 1), 1.0 / opt_.p);
}
double SlBamm::beta_y(int64_t k) const {
  return opt_.y_lr * std::pow(static_cast<double>(k + 1), -opt_.tau / 2);
}
double SlBamm::beta_x(int64_t k) const {
  const double ratio = mu(k) / opt_.mu0;
  return opt_.x_lr * ratio * ratio * ratio * std::pow(static_cast<double>(k + 1), -1.5 * opt_.tau);
}

Blend SlBamm::blend(int64_t k) const {
  if (opt_.variant != SlBammOptions::Variant::kAveraged) return {0.0, 1.0};
  const double m = mu(k);
  return {m, 1.0 - m};
}

double SlBamm::reg() const {
  return opt_.variant == SlBammOptions::Variant::kRegularised ? opt_.reg : 0.0;
}

void SlBamm::sum_blocks(const Part& part, std::vector<double>& out, const char* what) const {
  const size_t n = out.size();
  part_.resize(n);
  if (!fixed_) {
    std::fill(out.begin(), out.end(), 0.0);
    for (int64_t b : problem_.owned_blocks()) {
      part(b, part_.data());
      for (size_t j = 0; j < n; ++j) out[j] += part_[j];
    }
    sum_over_ranks(out);
    return;
  }
  acc_.assign(n, 0);
  for (int64_t b : problem_.owned_blocks()) {
    part(b, part_.data());
    for (size_t j = 0; j < n; ++j) {
      Fixed v;
      if (!to_fixed(part_[j], &v))
        throw SlBammRangeError(
            detail::concat("sl-BAMM iteration ", k_ + 1, ": element ", j, " of ", what, " (block ",
                           b, ") is ", part_[j],
                           ", beyond the exact reduction's range ±2^31 (dist.reduce = exact): the "
                           "iteration diverged"));
      acc_[j] += v;
    }
  }
  limbs_.resize(2 * n);
  for (size_t j = 0; j < n; ++j) split_limbs(acc_[j], &limbs_[j], &limbs_[n + j]);
  if (sum_ranks_int_) sum_ranks_int_(limbs_.data(), limbs_.size());
  for (size_t j = 0; j < n; ++j)
    out[j] = fixed_to_real<double>(join_limbs(limbs_[j], limbs_[n + j]));
}

void SlBamm::sum_over_ranks(std::vector<double>& buf) const {
  if (sum_ranks_) sum_ranks_(buf.data(), buf.size());
  if (opt_.reduce == SlBammOptions::Reduce::kExact)
    for (double& v : buf) v += 0.0;  // −0 → +0: whether a −0 survives depends on the ranks
}

void SlBamm::hvp(Blend w, const double* v, std::vector<double>& Hv, const char* what) const {
  sum_blocks(
      [&](int64_t b, double* out) { problem_.block_hvp_yy(b, w, x_.data(), y_.data(), v, out); },
      Hv, what);
  const double eps = w.b * reg();
  if (eps != 0)
    for (size_t i = 0; i < Hv.size(); ++i) Hv[i] += eps * v[i];
}

double SlBamm::x_err() const {
  if (x_star_.empty()) return -1;
  double num = 0, den = 0;
  for (size_t i = 0; i < x_.size(); ++i) {
    num += (x_[i] - x_star_[i]) * (x_[i] - x_star_[i]);
    den += x_star_[i] * x_star_[i];
  }
  return std::sqrt(num / den);
}

SlBammStats SlBamm::step(bool evaluate) {
  const int64_t k = k_;
  const int64_t dy = problem_.dim_y();
  const Blend w = blend(k);
  const double eps = w.b * reg();
  SlBammStats st;
  st.mu = w.a;
  st.beta_y = beta_y(k);
  st.beta_x = beta_x(k);

  // y-step on φ_μ (plus the regulariser's ε y).
  sum_blocks([&](int64_t b, double* g) { problem_.block_grad_y(b, w, x_.data(), y_.data(), g); },
             gy_, "the y-gradient of phi_mu");
  for (int64_t i = 0; i < dy; ++i) y_[i] -= st.beta_y * (gy_[i] + eps * y_[i]);

  // z-step at the new y: r = ∇²_yy φ z − ∇_y F.
  sum_blocks(
      [&](int64_t b, double* g) {
        problem_.block_grad_y(b, {1.0, 0.0}, x_.data(), y_.data(), g);
      },
      gF_, "the y-gradient of F");
  hvp(w, z_.data(), Hz_, "the Hessian-vector product H z");
  for (int64_t i = 0; i < dy; ++i) r_[i] = Hz_[i] - gF_[i];
  const double rr = dot(dy, r_.data(), r_.data());
  st.z_res = std::sqrt(rr);
  if (opt_.z_step == SlBammOptions::ZStep::kLineSearch) {
    hvp(w, r_.data(), Hr_, "the Hessian-vector product H r");
    const double rHr = dot(dy, r_.data(), Hr_.data());
    st.eta = rHr > 0 && rr < opt_.z_lr_max * rHr ? rr / rHr : opt_.z_lr_max;
  } else {
    st.eta = opt_.z_lr * std::pow(static_cast<double>(k + 1), -opt_.tau / 2);
  }
  if (rr == 0) st.eta = 0;
  for (int64_t i = 0; i < dy; ++i) z_[i] -= st.eta * r_[i];

  // x-step with the new y and z (the regulariser does not depend on x).
  problem_.grad_x({1.0, 0.0}, x_.data(), y_.data(), gx_.data());
  problem_.mixed_xy(w, x_.data(), y_.data(), z_.data(), mixed_.data());
  for (size_t i = 0; i < gx_.size(); ++i) gx_[i] -= mixed_[i];
  sum_over_ranks(gx_);
  st.x_grad = norm2(static_cast<int64_t>(gx_.size()), gx_.data());
  for (size_t i = 0; i < x_.size(); ++i) x_[i] -= st.beta_x * gx_[i];

  k_ = k + 1;
  st.step = k_;
  st.x_err = x_err();
  if (evaluate) {
    std::vector<double> buf(2);
    sum_blocks(
        [&](int64_t b, double* out) {
          const BilevelValues v = problem_.block_values(b, x_.data(), y_.data());
          out[0] = v.F;
          out[1] = v.f;
        },
        buf, "the values F, f");
    st.has_values = true;
    st.F = buf[0];
    st.f = buf[1];
  }
  return st;
}

}  // namespace mt
