// Finite-difference checks of a BilevelProblem's exact derivatives (float64), in the style of
// grad_check.h and with its tolerances (central differences, h = 1e-5, 1e-6 relative):
//   ∇_y φ, ∇_x φ vs differences of the value; ∇²_yy φ v vs differences of ∇_y φ along v;
//   ∇²_xy φ z vs differences in x of ⟨∇_y φ, z⟩; symmetry uᵀHv = vᵀHu (1e-10 relative).
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "core/bilevel.h"
#include "tests/support/grad_check.h"

namespace mt::testing {

inline ::testing::AssertionResult check_bilevel(const BilevelProblem& p, Blend w, const Vec& x,
                                                const Vec& y, Rng& rng, const std::string& what) {
  const int64_t dx = p.dim_x(), dy = p.dim_y();
  std::string failures;
  // x-derivatives may be identically zero (F independent of x); y-derivatives may not.
  auto check = [&](const std::string& name, const Vec& exact, const Vec& fd,
                   bool may_vanish = false) {
    const double err = rel_err(exact, fd);
    if (!(err < kFdTol) || !(may_vanish || norm(exact) > 0))
      failures += "\n  " + what + ": " + name + " relative error " + std::to_string(err) +
                  " (bound " + std::to_string(kFdTol) + "), norm " + std::to_string(norm(exact));
  };
  auto value_y = [&](const Vec& yy) {
    const BilevelValues v = p.values(x.data(), yy.data());
    return w.a * v.F + w.b * v.f;
  };
  auto value_x = [&](const Vec& xx) {
    const BilevelValues v = p.values(xx.data(), y.data());
    return w.a * v.F + w.b * v.f;
  };
  auto grad_y = [&](const Vec& xx, const Vec& yy) {
    Vec g(dy);
    p.grad_y(w, xx.data(), yy.data(), g.data());
    return g;
  };
  auto hvp = [&](const Vec& v) {
    Vec Hv(dy);
    p.hvp_yy(w, x.data(), y.data(), v.data(), Hv.data());
    return Hv;
  };

  check("grad_y", grad_y(x, y), fd_gradient(value_y, y));
  Vec gx(dx);
  p.grad_x(w, x.data(), y.data(), gx.data());
  check("grad_x", gx, fd_gradient(value_x, x), w.b == 0);

  const Vec u = random_vec(dy, rng), v = random_vec(dy, rng);
  const Vec Hv = hvp(v), Hu = hvp(u);
  check("hvp_yy", Hv, fd_directional([&](const Vec& yy) { return grad_y(x, yy); }, y, v));
  const double uHv = dot(u, Hv), vHu = dot(v, Hu);
  const double sym = std::abs(uHv - vHu) / std::max({std::abs(uHv), std::abs(vHu), 1.0});
  if (!(sym <= kSymTol)) failures += "\n  " + what + ": symmetry " + std::to_string(sym);

  const Vec z = random_vec(dy, rng);
  Vec mixed(dx);
  p.mixed_xy(w, x.data(), y.data(), z.data(), mixed.data());
  check("mixed_xy", mixed, fd_gradient([&](const Vec& xx) { return dot(grad_y(xx, y), z); }, x),
        w.b == 0);

  if (failures.empty()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << failures;
}

}  // namespace mt::testing
