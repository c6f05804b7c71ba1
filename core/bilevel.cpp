// Small vector helpers shared by the bilevel solver and its problems (core/bilevel.h).
#include "core/bilevel.h"

#include <cmath>

namespace mt {

double dot(int64_t n, const double* a, const double* b) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

double norm2(int64_t n, const double* a) { return std::sqrt(dot(n, a, a)); }

}  // namespace mt
