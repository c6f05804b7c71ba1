// The one place where programs turn the framework's errors into messages and exit codes
// (DESIGN §9): 0 ok, 2 bad usage, config or data (UsageError), 1 runtime failure.
#pragma once

#include <functional>

namespace mt {

// Runs `body` and returns its exit code; an exception is printed as "<program>: error: ..."
// (UsageError, followed by `usage_hint` when given) or "<program>: fatal: ..." and mapped to
// its exit code.
int guarded_main(const char* program, const char* usage_hint, const std::function<int()>& body);

}  // namespace mt
