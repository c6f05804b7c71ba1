// The merely-convex toy (core/bilevel_toy.h), one block. With y = [y1, y2]:
//   ∇_y1 F = y1 − e,  ∇_y2 F = y2 − x,  ∇_x F = x − y2;   ∇_y1 f = y1 − x,  ∇_y2 f = 0,  ∇_x f =
//   −y1; ∇²_yy F = I (both blocks),  ∇²_yy f = diag(I, 0);   ∇²_xy F · z = −z2,  ∇²_xy f · z = −z1.
#include "core/bilevel_toy.h"

#include <algorithm>

namespace mt {

void BilevelToy::init(double* x, double* y) const {
  std::fill(x, x + n_, start_);
  std::fill(y, y + 2 * n_, start_);
}

BilevelValues BilevelToy::block_values(int64_t, const double* x, const double* y) const {
  BilevelValues v;
  const double* y1 = y;
  const double* y2 = y + n_;
  for (int64_t i = 0; i < n_; ++i) {
    v.F += 0.5 * (x[i] - y2[i]) * (x[i] - y2[i]) + 0.5 * (y1[i] - 1) * (y1[i] - 1);
    v.f += 0.5 * y1[i] * y1[i] - x[i] * y1[i];
  }
  return v;
}

void BilevelToy::block_grad_y(int64_t, Blend w, const double* x, const double* y, double* g) const {
  const double* y1 = y;
  const double* y2 = y + n_;
  for (int64_t i = 0; i < n_; ++i) {
    g[i] = w.a * (y1[i] - 1) + w.b * (y1[i] - x[i]);
    g[n_ + i] = w.a * (y2[i] - x[i]);
  }
}

void BilevelToy::grad_x(Blend w, const double* x, const double* y, double* g) const {
  for (int64_t i = 0; i < n_; ++i) g[i] = active_ ? w.a * (x[i] - y[n_ + i]) - w.b * y[i] : 0.0;
}

void BilevelToy::block_hvp_yy(int64_t, Blend w, const double*, const double*, const double* v,
                              double* Hv) const {
  for (int64_t i = 0; i < n_; ++i) {
    Hv[i] = (w.a + w.b) * v[i];
    Hv[n_ + i] = w.a * v[n_ + i];
  }
}

void BilevelToy::mixed_xy(Blend w, const double*, const double*, const double* z,
                          double* out) const {
  for (int64_t i = 0; i < n_; ++i) out[i] = active_ ? -(w.a * z[n_ + i] + w.b * z[i]) : 0.0;
}

}  // namespace mt
