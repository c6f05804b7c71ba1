// The one numerical checker used by every differentiable op (STYLE.md principle 3), in float64:
//   gradient vs central differences, Hv vs central differences of gradients along v,
//   r_forward vs directional differences of the output, and symmetry uᵀHv = vᵀHu.
// Tolerances: central differences with step h have truncation error O(h²·f''') ≈ 1e-10 at
// h = 1e-5 and round-off ≈ 1e-16/h ≈ 1e-11, so agreement to 1e-6 relative leaves a wide margin
// for O(1) inputs while any wrong term in a derivative (errors of order 1e-2 or more) fails.
// Symmetry holds exactly up to round-off: 1e-10 relative.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <vector>

#include "core/layer.h"
#include "core/model.h"
#include "core/rng.h"

namespace mt::testing {

using Vec = std::vector<double>;

constexpr double kFdStep = 1e-5;
constexpr double kFdTol = 1e-6;
constexpr double kSymTol = 1e-10;

inline double norm(const Vec& a) {
  return std::sqrt(std::inner_product(a.begin(), a.end(), a.begin(), 0.0));
}
inline double dot(const Vec& a, const Vec& b) {
  return std::inner_product(a.begin(), a.end(), b.begin(), 0.0);
}
// ‖a − b‖ / max(‖a‖, ‖b‖, floor): relative error with a floor for vectors that are ~0.
inline double rel_err(const Vec& a, const Vec& b, double floor = 1e-12) {
  Vec d(a.size());
  for (size_t i = 0; i < a.size(); ++i) d[i] = a[i] - b[i];
  return norm(d) / std::max({norm(a), norm(b), floor});
}
inline Vec axpy(const Vec& x, double a, const Vec& v) {
  Vec r(x);
  for (size_t i = 0; i < r.size(); ++i) r[i] += a * v[i];
  return r;
}
inline Vec random_vec(size_t n, Rng& rng, double scale = 1.0) {
  Vec v(n);
  for (double& e : v) e = scale * rng.normal();
  return v;
}
// A random permutation of evenly spaced values in [-1, 1] that avoids 0: no ReLU kink or
// max-pool tie lies within a finite-difference step of any input.
inline Vec separated_vec(size_t n, Rng& rng) {
  Vec v(n);
  for (size_t i = 0; i < n; ++i) v[i] = -1.0 + (2.0 * i + 1.25) / n;  // never exactly 0
  for (size_t i = n; i > 1; --i) std::swap(v[i - 1], v[rng.below(i)]);
  return v;
}

// A twice-differentiable scalar function with its claimed gradient and Hessian-vector product.
struct DiffFunction {
  std::function<double(const Vec&)> value;
  std::function<Vec(const Vec&)> grad;
  std::function<Vec(const Vec&, const Vec&)> hvp;  // (x, v) -> H(x) v
};

// A model's loss on batch b as a DiffFunction of its parameters (workspace ws). The HVP also
// checks that the gradient it returns is loss_grad's bit for bit.
inline DiffFunction model_function(const Model<double>& net, const Batch<double>& b,
                                   Workspace& ws) {
  DiffFunction f;
  f.value = [&](const Vec& t) { return net.loss_grad(t.data(), b, nullptr, ws).loss; };
  f.grad = [&](const Vec& t) {
    Vec g(t.size());
    net.loss_grad(t.data(), b, g.data(), ws);
    return g;
  };
  f.hvp = [&, grad = f.grad](const Vec& t, const Vec& v) {
    Vec g(t.size()), Hv(t.size());
    net.hvp(t.data(), b, v.data(), g.data(), Hv.data(), ws);
    EXPECT_EQ(g, grad(t)) << "hvp's gradient must equal loss_grad's bit for bit";
    return Hv;
  };
  return f;
}

inline Vec fd_gradient(const std::function<double(const Vec&)>& f, const Vec& x) {
  Vec g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    Vec xp(x), xm(x);
    xp[i] += kFdStep;
    xm[i] -= kFdStep;
    g[i] = (f(xp) - f(xm)) / (2 * kFdStep);
  }
  return g;
}
inline Vec fd_directional(const std::function<Vec(const Vec&)>& f, const Vec& x, const Vec& v) {
  const Vec a = f(axpy(x, kFdStep, v)), b = f(axpy(x, -kFdStep, v));
  Vec d(a.size());
  for (size_t i = 0; i < a.size(); ++i) d[i] = (a[i] - b[i]) / (2 * kFdStep);
  return d;
}

// Gradient, Hv and symmetry checks of f at x along random directions; the result carries
// every failed check with its measured error.
inline ::testing::AssertionResult check_function(const DiffFunction& f, const Vec& x, Rng& rng,
                                                 const std::string& what) {
  std::string failures;
  auto fail_if = [&](bool bad, const std::string& check, double value, double bound) {
    if (bad)
      failures += "\n  " + what + ": " + check + " = " + std::to_string(value) + " (bound " +
                  std::to_string(bound) + ")";
  };
  const Vec g = f.grad(x);
  const double g_err = rel_err(g, fd_gradient(f.value, x));
  fail_if(!(g_err < kFdTol), "gradient relative error", g_err, kFdTol);
  fail_if(!(norm(g) > 0), "gradient norm (identically zero makes the check vacuous)", norm(g), 0);
  const Vec u = random_vec(x.size(), rng), v = random_vec(x.size(), rng);
  const Vec Hv = f.hvp(x, v), Hu = f.hvp(x, u);
  const double hv_err = rel_err(Hv, fd_directional(f.grad, x, v));
  fail_if(!(hv_err < kFdTol), "Hv relative error", hv_err, kFdTol);
  const double uHv = dot(u, Hv), vHu = dot(v, Hu);
  const double sym = std::abs(uHv - vHu) / std::max({std::abs(uHv), std::abs(vHu), 1.0});
  fail_if(!(sym <= kSymTol), "symmetry |uᵀHv − vᵀHu| (relative)", sym, kSymTol);
  if (failures.empty()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << failures;
}

// Checks all four passes of a layer. The layer is closed by a fixed random quadratic head
// L(y) = Σ c⊙y + ½ Σ d⊙y² (so dL/dy = c + d⊙y, R{dL/dy} = d⊙R_y), and differentiated jointly
// in (W, x). Inputs are well separated from kinks and ties (separated_vec).
inline ::testing::AssertionResult check_layer(const Layer<double>& layer, int m, uint64_t seed) {
  Rng rng(seed, 0, 0, Stream::kTest);
  const int64_t nw = layer.num_params();
  const int64_t nx = m * layer.in_shape().size(), ny = m * layer.out_shape().size();
  Vec W(nw);
  layer.init(W.data(), rng);
  for (double& w : W) w += 0.3 * rng.normal();  // move γ, β and biases off their init values
  const Vec x = separated_vec(nx, rng);
  const Vec c = random_vec(ny, rng);
  Vec d(ny);
  for (double& e : d) e = 0.5 + rng.uniform();

  Vec theta(W);
  theta.insert(theta.end(), x.begin(), x.end());
  auto split = [&](const Vec& t) {
    return std::make_pair(Vec(t.begin(), t.begin() + nw), Vec(t.begin() + nw, t.end()));
  };
  auto output = [&](const Vec& t) {
    auto [w, xx] = split(t);
    LayerContext<double> ctx;
    Vec y(ny);
    layer.forward(m, w.data(), xx.data(), y.data(), ctx);
    return y;
  };
  DiffFunction f;
  f.value = [&](const Vec& t) {
    const Vec y = output(t);
    double L = 0;
    for (int64_t k = 0; k < ny; ++k) L += c[k] * y[k] + 0.5 * d[k] * y[k] * y[k];
    return L;
  };
  f.grad = [&](const Vec& t) {
    auto [w, xx] = split(t);
    LayerContext<double> ctx;
    Vec y(ny), dy(ny), dW(nw), dx(nx);
    layer.forward(m, w.data(), xx.data(), y.data(), ctx);
    for (int64_t k = 0; k < ny; ++k) dy[k] = c[k] + d[k] * y[k];
    layer.backward(m, w.data(), xx.data(), ctx, dy.data(), dx.data(), dW.data());
    dW.insert(dW.end(), dx.begin(), dx.end());
    return dW;
  };
  f.hvp = [&](const Vec& t, const Vec& v) {
    auto [w, xx] = split(t);
    auto [R_W, R_x] = split(v);
    LayerContext<double> ctx;
    Vec y(ny), dy(ny), R_y(ny), R_dy(ny), R_dW(nw), R_dx(nx);
    layer.forward(m, w.data(), xx.data(), y.data(), ctx);
    for (int64_t k = 0; k < ny; ++k) dy[k] = c[k] + d[k] * y[k];
    layer.r_forward(m, w.data(), R_W.data(), xx.data(), R_x.data(), ctx, R_y.data());
    for (int64_t k = 0; k < ny; ++k) R_dy[k] = d[k] * R_y[k];
    layer.r_backward(m, w.data(), R_W.data(), xx.data(), R_x.data(), ctx, dy.data(), R_dy.data(),
                     R_dx.data(), R_dW.data());
    R_dW.insert(R_dW.end(), R_dx.begin(), R_dx.end());
    return R_dW;
  };

  const std::string name = layer.kind();
  // r_forward against the directional difference of the layer output.
  const Vec v = random_vec(theta.size(), rng, 0.1);
  auto [R_W, R_x] = split(v);
  auto [w, xx] = split(theta);
  LayerContext<double> ctx;
  Vec y(ny), R_y(ny);
  layer.forward(m, w.data(), xx.data(), y.data(), ctx);
  layer.r_forward(m, w.data(), R_W.data(), xx.data(), R_x.data(), ctx, R_y.data());
  const double rf_err = rel_err(R_y, fd_directional(output, theta, v));
  ::testing::AssertionResult rest = check_function(f, theta, rng, name);
  if (rf_err < kFdTol) return rest;
  return ::testing::AssertionFailure()
         << "\n  " << name << ": r_forward relative error = " << rf_err << " (bound " << kFdTol
         << ")" << (rest ? "" : rest.message());
}

}  // namespace mt::testing
