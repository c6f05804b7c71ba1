// Catching the framework's user-facing errors in tests: the message a UsageError carries, so a
// test can check that it names the file, key or problem.
#pragma once

#include <functional>
#include <string>

#include "core/check.h"

namespace mt::testing {

// The message of the UsageError that f throws, or "" when it throws none.
inline std::string usage_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const UsageError& e) {
    return e.what();
  }
  return "";
}

}  // namespace mt::testing
