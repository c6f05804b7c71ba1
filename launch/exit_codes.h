// The one place where programs turn the framework's errors into messages and exit codes
// (DESIGN §9): 0 ok, 2 bad usage, config or data (UsageError), 1 runtime failure.
#pragma once

#include <functional>

namespace mt {

namespace dist {
class Comm;
}

// Runs `body` and returns its exit code, stdout line-buffered (progress shows live in a file or
// pipe); an exception is printed as "<program>: error: ..."
// (UsageError, followed by `usage_hint` when given) or "<program>: fatal: ..." and mapped to
// its exit code.
int guarded_main(const char* program, const char* usage_hint, const std::function<int()>& body);

// Runs `body` on this rank of comm. With one rank an exception passes to the caller (and so to
// guarded_main). With several, a rank that fails prints "<program>: rank r of N: error|fatal:
// ..." and ends every rank of the job with the error's exit code (comm.abort), so no rank is
// left waiting in a collective for it.
void run_on_ranks(const char* program, dist::Comm& comm, const std::function<void()>& body);

}  // namespace mt
