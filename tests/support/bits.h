// Bit-for-bit comparison of two vectors for tests whose promise is identical bits (host twin vs
// GPU, resident vs file episodes, batched vs one task): reports the first differing element.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

namespace mt::testing {

// NaN equals a NaN of the same bits; -0 differs from +0.
template <typename T>
void expect_same_bits(const std::vector<T>& got, const std::vector<T>& want,
                      const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    if (std::memcmp(&got[i], &want[i], sizeof(T)) != 0) {
      ADD_FAILURE() << what << ": element " << i << " of " << got.size() << " is " << got[i]
                    << ", expected " << want[i];
      return;
    }
}

}  // namespace mt::testing
