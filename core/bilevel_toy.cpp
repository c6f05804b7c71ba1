// The merely-convex toy (core/bilevel_toy.h). With s = active ? 1 : 0 and y = [y1, y2]:
//   ∇_y1 F = y1 − e,  ∇_y2 F = y2 − x,  ∇_x F = x − y2;   ∇_y1 f = y1 − x,  ∇_y2 f = 0,  ∇_x f =
//   −y1; ∇²_yy F = I (both blocks),  ∇²_yy f = diag(I, 0);   ∇²_xy F · z = −z2,  ∇²_xy f · z = −z1.
#include "core/bilevel_toy.h"

#include <algorithm>

namespace mt {

void BilevelToy::init(double* x, double* y) const {
  std::fill(x, x + n_, start_);
  std::fill(y, y + 2 * n_, start_);
}

BilevelValues BilevelToy::values(const double* x, const double* y) const {
  BilevelValues v;
  if (!active_) return v;
  const double* y1 = y;
  const double* y2 = y + n_;
  for (int64_t i = 0; i < n_; ++i) {
    v.F += 0.5 * (x[i] - y2[i]) * (x[i] - y2[i]) + 0.5 * (y1[i] - 1) * (y1[i] - 1);
    v.f += 0.5 * y1[i] * y1[i] - x[i] * y1[i];
  }
  return v;
}

void BilevelToy::grad_y(Blend w, const double* x, const double* y, double* g) const {
  const double s = active_ ? 1 : 0;
  const double* y1 = y;
  const double* y2 = y + n_;
  for (int64_t i = 0; i < n_; ++i) {
    g[i] = s * (w.a * (y1[i] - 1) + w.b * (y1[i] - x[i]));
    g[n_ + i] = s * w.a * (y2[i] - x[i]);
  }
}

void BilevelToy::grad_x(Blend w, const double* x, const double* y, double* g) const {
  const double s = active_ ? 1 : 0;
  for (int64_t i = 0; i < n_; ++i) g[i] = s * (w.a * (x[i] - y[n_ + i]) - w.b * y[i]);
}

void BilevelToy::hvp_yy(Blend w, const double*, const double*, const double* v, double* Hv) const {
  const double s = active_ ? 1 : 0;
  for (int64_t i = 0; i < n_; ++i) {
    Hv[i] = s * (w.a + w.b) * v[i];
    Hv[n_ + i] = s * w.a * v[n_ + i];
  }
}

void BilevelToy::mixed_xy(Blend w, const double*, const double*, const double* z,
                          double* out) const {
  const double s = active_ ? 1 : 0;
  for (int64_t i = 0; i < n_; ++i) out[i] = -s * (w.a * z[n_ + i] + w.b * z[i]);
}

}  // namespace mt
