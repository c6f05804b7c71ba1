// Small vector helpers shared by the bilevel solver and its problems, and a rank's partial sums
// over its blocks (core/bilevel.h).
#include "core/bilevel.h"

#include <algorithm>
#include <cmath>

namespace mt {

double dot(int64_t n, const double* a, const double* b) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

double norm2(int64_t n, const double* a) { return std::sqrt(dot(n, a, a)); }

BilevelValues BilevelProblem::values(const double* x, const double* y) const {
  BilevelValues v;
  for (int64_t b : owned_blocks()) {
    const BilevelValues p = block_values(b, x, y);
    v.F += p.F;
    v.f += p.f;
  }
  return v;
}

void BilevelProblem::grad_y(Blend w, const double* x, const double* y, double* g) const {
  std::vector<double> part(static_cast<size_t>(dim_y()));
  std::fill(g, g + dim_y(), 0.0);
  for (int64_t b : owned_blocks()) {
    block_grad_y(b, w, x, y, part.data());
    for (int64_t k = 0; k < dim_y(); ++k) g[k] += part[k];
  }
}

void BilevelProblem::hvp_yy(Blend w, const double* x, const double* y, const double* v,
                            double* Hv) const {
  std::vector<double> part(static_cast<size_t>(dim_y()));
  std::fill(Hv, Hv + dim_y(), 0.0);
  for (int64_t b : owned_blocks()) {
    block_hvp_yy(b, w, x, y, v, part.data());
    for (int64_t k = 0; k < dim_y(); ++k) Hv[k] += part[k];
  }
}

}  // namespace mt
