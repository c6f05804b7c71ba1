// The polling loop with a deadline of dist/deadline.h.
#include "dist/deadline.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <thread>

#include "core/check.h"

namespace mt::dist {

namespace {
std::string seconds(double s) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f s", s);
  return text;
}
}  // namespace

WaitResult wait_until_done(const std::function<Poll()>& query, double timeout_s,
                           const std::string& what, bool spin) {
  MT_CHECK(timeout_s > 0 && std::isfinite(timeout_s), "the deadline of ", what,
           " must be positive and finite, got ", timeout_s, " s");
  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  constexpr double kYieldS = 1e-3;
  constexpr std::chrono::microseconds kSleep{50};
  WaitResult r;
  for (;;) {
    const Poll p = query();
    ++r.polls;
    r.waited_s = std::chrono::duration<double>(Clock::now() - start).count();
    switch (p.state) {
      case Poll::State::kDone:
        r.status = WaitResult::Status::kDone;
        return r;
      case Poll::State::kFailed:
        r.status = WaitResult::Status::kFailed;
        r.message = what + " failed after " + seconds(r.waited_s) + ": " + p.error;
        return r;
      case Poll::State::kPending:
        break;
    }
    if (r.waited_s >= timeout_s) {
      r.status = WaitResult::Status::kTimedOut;
      r.message = what + " did not finish within the deadline of " + seconds(timeout_s) +
                  " (waited " + seconds(r.waited_s) + ")";
      return r;
    }
    if (spin) continue;
    if (r.waited_s < kYieldS)
      std::this_thread::yield();
    else
      std::this_thread::sleep_for(kSleep);
  }
}

}  // namespace mt::dist
