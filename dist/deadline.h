// Waiting for an asynchronous operation (an NCCL communicator's init or finalize, a collective
// on a stream) without the risk of waiting forever: wait_until_done polls a query until it
// reports done or failed, or until a deadline passes. No CUDA here: the query is any callable,
// so the loop is tested on the host with fake queries (tests/dist/deadline_test.cpp).
#pragma once

#include <functional>
#include <string>
#include <utility>

namespace mt::dist {

// One look at the operation: done, still pending, or failed with the library's message.
struct Poll {
  enum class State { kDone, kPending, kFailed };
  State state = State::kPending;
  std::string error;  // kFailed only

  static Poll done() { return {State::kDone, {}}; }
  static Poll pending() { return {State::kPending, {}}; }
  static Poll failed(std::string error) { return {State::kFailed, std::move(error)}; }
};

struct WaitResult {
  enum class Status { kDone, kFailed, kTimedOut };
  Status status = Status::kDone;
  double waited_s = 0;  // from the call to the last poll
  long polls = 0;       // how many times query ran
  // kFailed: "<what> failed after 1.2 s: <error>"; kTimedOut: "<what> did not finish within
  // the deadline of 60.0 s (waited 60.0 s)". Empty when done.
  std::string message;

  bool ok() const { return status == Status::kDone; }
};

// Runs query until it answers done or failed, or until timeout_s seconds have passed since the
// call: the query runs first and the clock is read after it, so an operation that has finished
// by its last poll counts as done, and the query runs at least once. Between polls the thread
// yields during the first millisecond, then sleeps 50 µs, so a long wait costs little CPU and
// adds at most that to the latency. With spin, it polls back to back: MPI's non-blocking
// collectives advance only inside the polls (as inside a blocking MPI call, which spins too),
// and on a busy machine one yield can give the core away for a whole time slice (4 ms
// measured). `what` names the operation in the message (the call, the rank). timeout_s must be
// positive and finite (mt::Error otherwise). Exceptions from query propagate.
WaitResult wait_until_done(const std::function<Poll()>& query, double timeout_s,
                           const std::string& what, bool spin = false);

}  // namespace mt::dist
