// One comparison for the batched-kernel tests: every entry of `got` written (finite) and within
// tol × max|ref| of the reference, which must not be trivially small (a vacuous comparison).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace mt::testing {

inline void expect_near_ref(const std::string& what, const std::vector<double>& ref,
                            const std::vector<double>& got, double tol) {
  ASSERT_EQ(ref.size(), got.size()) << what;
  double scale = 0, err = 0;
  for (size_t k = 0; k < ref.size(); ++k) {
    ASSERT_TRUE(std::isfinite(got[k])) << what << ": entry " << k << " not written";
    scale = std::max(scale, std::fabs(ref[k]));
    err = std::max(err, std::fabs(ref[k] - got[k]));
  }
  EXPECT_GT(scale, 0.1) << what << ": reference is trivially small";
  EXPECT_LE(err, tol * scale) << what << ": max |ref| = " << scale;
}

}  // namespace mt::testing
