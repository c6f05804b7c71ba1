// The polling loop with a deadline behind every NCCL wait (dist/deadline.h), driven by fake
// queries: done after k polls, a reported error, never done (a timeout close to the deadline,
// without burning a core); and nccl_version, which needs no GPU.
#include "dist/deadline.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <ctime>
#include <limits>
#include <regex>
#include <stdexcept>
#include <string>
#include <thread>

#include "core/check.h"
#include "dist/nccl_comm.h"

namespace mt::dist {
namespace {

using Status = WaitResult::Status;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Pending for the first k polls, then done.
struct DoneAfter {
  int k;
  int* calls;
  Poll operator()() const { return ++*calls > k ? Poll::done() : Poll::pending(); }
};

TEST(WaitUntilDone, ReturnsAtTheFirstDonePoll) {
  for (int k : {0, 1, 5, 3000}) {  // 3000: past the first millisecond, into the sleeping polls
    int calls = 0;
    const WaitResult r = wait_until_done(DoneAfter{k, &calls}, 10.0, "fake op");
    EXPECT_TRUE(r.ok()) << "k = " << k << ": " << r.message;
    EXPECT_EQ(r.status, Status::kDone);
    EXPECT_EQ(calls, k + 1) << "polled again after done, or gave up early";
    EXPECT_EQ(r.polls, k + 1);
    EXPECT_TRUE(r.message.empty());
    EXPECT_LT(r.waited_s, 5.0);
  }
}

TEST(WaitUntilDone, StopsAtAReportedErrorAndNamesIt) {
  int calls = 0;
  const WaitResult r = wait_until_done(
      [&] { return ++calls < 3 ? Poll::pending() : Poll::failed("remote process exited"); }, 10.0,
      "rank 1 of 2: NCCL ncclAllReduce");
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status, Status::kFailed);
  EXPECT_EQ(calls, 3);
  EXPECT_NE(r.message.find("rank 1 of 2: NCCL ncclAllReduce failed after "), std::string::npos)
      << r.message;
  EXPECT_NE(r.message.find("remote process exited"), std::string::npos) << r.message;
}

TEST(WaitUntilDone, TimesOutCloseToTheDeadlineWithoutSpinning) {
  const double timeout = 0.3;
  int calls = 0;
  const auto t0 = std::chrono::steady_clock::now();
  const std::clock_t cpu0 = std::clock();
  const WaitResult r = wait_until_done(
      [&] {
        ++calls;
        return Poll::pending();
      },
      timeout, "rank 0 of 4: NCCL ncclCommInitRankConfig");
  const double cpu = double(std::clock() - cpu0) / CLOCKS_PER_SEC;
  const double wall = seconds_since(t0);
  EXPECT_EQ(r.status, Status::kTimedOut);
  EXPECT_GE(r.waited_s, timeout);
  EXPECT_LT(r.waited_s, timeout + 0.5) << "overslept the deadline";  // slack for a loaded host
  EXPECT_LE(r.waited_s, wall);
  EXPECT_EQ(r.polls, calls);
  EXPECT_GT(calls, 10) << "should keep polling until the deadline";
  // Polls sleep after the first millisecond: a spinning loop would use ~ all of the wall time.
  EXPECT_LT(cpu, 0.5 * wall) << calls << " polls used " << cpu << " s of CPU in " << wall << " s";
  const std::string head =
      "rank 0 of 4: NCCL ncclCommInitRankConfig did not finish within the deadline of 0.3 s "
      "(waited 0.";
  EXPECT_EQ(r.message.substr(0, head.size()), head) << r.message;
  EXPECT_EQ(r.message.substr(r.message.size() - 3), " s)") << r.message;
}

// The query runs before the clock is read: an operation done by a poll that ends after the
// deadline is done, and one pending at that poll has timed out after exactly one poll.
TEST(WaitUntilDone, JudgesByTheLastPollNotTheClockAlone) {
  const double timeout = 0.05;
  const WaitResult done = wait_until_done(
      [&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        return Poll::done();
      },
      timeout, "slow but finished");
  EXPECT_TRUE(done.ok()) << done.message;
  EXPECT_GE(done.waited_s, timeout);

  int calls = 0;
  const WaitResult late = wait_until_done(
      [&] {
        ++calls;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        return Poll::pending();
      },
      timeout, "slow and unfinished");
  EXPECT_EQ(late.status, Status::kTimedOut);
  EXPECT_EQ(calls, 1);
}

TEST(WaitUntilDone, RefusesADeadlineThatIsNotPositiveAndFinite) {
  for (double timeout : {0.0, -1.0, std::numeric_limits<double>::quiet_NaN(),
                         std::numeric_limits<double>::infinity()}) {
    int calls = 0;
    try {
      wait_until_done(DoneAfter{0, &calls}, timeout, "op with a bad deadline");
      ADD_FAILURE() << "timeout " << timeout << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("op with a bad deadline"), std::string::npos)
          << e.what();
    }
    EXPECT_EQ(calls, 0);
  }
}

TEST(WaitUntilDone, PassesOnExceptionsFromTheQuery) {
  EXPECT_THROW(wait_until_done([]() -> Poll { throw std::runtime_error("query broke"); }, 1.0,
                               "throwing query"),
               std::runtime_error);
}

TEST(NcclVersion, NamesTheLinkedLibraryOrSaysNotBuilt) {
  const std::string v = nccl_version();
#ifdef MT_WITH_CUDA
  EXPECT_TRUE(std::regex_search(v, std::regex("^[1-9][0-9]*\\.[0-9]+\\.[0-9]+( |$)"))) << v;
#else
  EXPECT_EQ(v, "not built");
#endif
}

// The option is checked before anything else (GPU, MPI), so this runs on any machine.
TEST(NcclComm, RefusesATimeoutThatIsNotPositive) {
  try {
    make_nccl_comm(NcclOptions{0.0});
    ADD_FAILURE() << "make_nccl_comm with timeout 0 did not throw";
  } catch (const UsageError& e) {
#ifdef MT_WITH_CUDA
    EXPECT_NE(std::string(e.what()).find("timeout"), std::string::npos) << e.what();
#else
    EXPECT_NE(std::string(e.what()).find("no CUDA"), std::string::npos) << e.what();
#endif
  }
}

}  // namespace
}  // namespace mt::dist
