// Stop signals as launchers deliver them (launch/stop_signal.h): two SIGTERMs 1 ms apart (Slurm
// signalling the batch shell and the job steps, srun forwarding) still end in a checkpoint at
// the step in flight and exit 0, and resuming from it equals the straight run bit for bit; the
// same under mpiexec with the pair sent to every rank; a second signal within the grace window
// (during the stop checkpoint's write) is ignored; one after the window still exits at once,
// leaving the previous checkpoint the latest.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/hdf5.h"
#include "launch/stop_signal.h"
#include "tests/support/checkpoints.h"
#include "tests/support/processes.h"
#include "tests/support/programs.h"

namespace mt {
namespace {

namespace fs = std::filesystem;
using testing::ProgramResult;
using testing::spawn;
using testing::wait_for;
using testing::wait_until;

std::string metatrain_bin() { return testing::binary_dir() + "/bin/metatrain"; }

// A small job: 8 filters, meta_batch 4, one thread, no evaluation or periodic checkpoints.
std::string job(const std::string& dir, const std::string& extra) {
  return "model.filters=8 meta_batch=4 task.queries=2 threads=1 log.every=1 eval.every=0 "
         "checkpoint.every=0 checkpoint.dir=" +
         dir + " " + extra;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

int64_t step_of(const std::string& ckpt) {
  return h5::File::open_read(ckpt).read_scalar<int64_t>("/state/step");
}

using testing::checkpoint_params;

std::string ckpt_name(int64_t step) {
  char name[32];
  std::snprintf(name, sizeof name, "ckpt_%08lld.h5", static_cast<long long>(step));
  return name;
}

bool training(const std::string& dir) { return read_text(dir + "/metrics.jsonl").size() > 0; }

// SIGTERM to every pid, twice, 1 ms apart.
void two_terms(const std::vector<pid_t>& pids) {
  for (pid_t p : pids) kill(p, SIGTERM);
  std::this_thread::sleep_for(std::chrono::milliseconds(1));
  for (pid_t p : pids) kill(p, SIGTERM);
}

// The stopped run (in `dir`, stopped at step S) resumed to S + 2 equals a straight run of S + 2.
void expect_resume_equals_straight(const std::string& dir, const std::string& launcher,
                                   const std::string& name) {
  const int64_t stopped = step_of(dir + "/latest.h5");
  const std::string steps = "steps=" + std::to_string(stopped + 2);
  const ProgramResult r =
      testing::run_shell(launcher + metatrain_bin() + " " + job(dir, steps + " resume=latest"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string straight = testing::temp_dir(name + "_straight");
  const ProgramResult s =
      testing::run_shell(launcher + metatrain_bin() + " " + job(straight, steps));
  ASSERT_EQ(s.exit_code, 0) << s.output;
  EXPECT_EQ(step_of(dir + "/latest.h5"), stopped + 2);
  EXPECT_TRUE(checkpoint_params(dir + "/latest.h5") == checkpoint_params(straight + "/latest.h5"))
      << "stopped and resumed run differs from the straight run";
}

TEST(Signals, TwoTermsAMillisecondApartStillCheckpointAndExitZero) {
  const std::string dir = testing::temp_dir("signals_two_terms");
  const pid_t pid = spawn(metatrain_bin() + " " + job(dir, "steps=100000"), dir + "/out.txt");
  ASSERT_TRUE(wait_until([&] { return training(dir); }, 60)) << read_text(dir + "/out.txt");
  two_terms({pid});
  const int status = wait_for(pid, 60);
  const std::string out = read_text(dir + "/out.txt");
  ASSERT_NE(status, -1) << "no exit within 60 s\n" << out;
  ASSERT_TRUE(WIFEXITED(status)) << out;
  EXPECT_EQ(WEXITSTATUS(status), 0) << out;
  EXPECT_NE(out.find("resume with the same command plus: resume=latest"), std::string::npos) << out;
  const int64_t stopped = step_of(dir + "/latest.h5");
  EXPECT_GE(stopped, 1);
  EXPECT_EQ(step_of(dir + "/" + ckpt_name(stopped)), stopped);
  expect_resume_equals_straight(dir, "", "signals_two_terms");
}

// Two signals 1 ms apart may merge into one while the first is pending; here the second surely
// comes on its own, after the first was handled, while the stop checkpoint is being written (the
// test hook holds the write open 2 s): it is ignored, and the checkpoint completes.
TEST(Signals, ASecondSignalWithinTheGraceWindowIsIgnored) {
  const std::string dir = testing::temp_dir("signals_ignored");
  const pid_t pid =
      spawn("env MT_TEST_WRITE_DELAY_MS=2000 " + metatrain_bin() + " " + job(dir, "steps=100000"),
            dir + "/out.txt");
  ASSERT_TRUE(wait_until([&] { return training(dir); }, 60)) << read_text(dir + "/out.txt");
  kill(pid, SIGTERM);
  ASSERT_TRUE(wait_until(
      [&] { return read_text(dir + "/out.txt").find("stop requested") != std::string::npos; }, 30));
  kill(pid, SIGINT);
  const int status = wait_for(pid, 60);
  const std::string out = read_text(dir + "/out.txt");
  ASSERT_TRUE(WIFEXITED(status)) << out;
  EXPECT_EQ(WEXITSTATUS(status), 0) << out;
  EXPECT_NE(out.find("another signal within 5 s of the stop request: ignored"), std::string::npos)
      << out;
  const int64_t stopped = step_of(dir + "/latest.h5");
  EXPECT_GE(stopped, 1);
  EXPECT_EQ(step_of(dir + "/" + ckpt_name(stopped)), stopped);
}

TEST(Signals, TwoTermsToEveryMpiRankStillCheckpointAndExitZero) {
  if (testing::run_shell("command -v mpiexec && command -v pgrep").exit_code != 0) {
    if (testing::in_ci()) GTEST_FAIL() << "mpiexec or pgrep missing";
    GTEST_SKIP() << "mpiexec or pgrep missing";
  }
  const std::string dir = testing::temp_dir("signals_two_terms_mpi");
  const std::string mpiexec = std::string(testing::kMpiTestEnv) + "mpiexec --oversubscribe -n 2 ";
  const pid_t launcher =
      spawn("env " + mpiexec + metatrain_bin() + " " + job(dir, "steps=100000"), dir + "/out.txt");
  ASSERT_TRUE(wait_until([&] { return training(dir); }, 60)) << read_text(dir + "/out.txt");
  // The ranks are mpiexec's children.
  std::vector<pid_t> ranks;
  std::istringstream pids(testing::run_shell("pgrep -P " + std::to_string(launcher)).output);
  for (pid_t p; pids >> p;) ranks.push_back(p);
  ASSERT_EQ(ranks.size(), 2u) << read_text(dir + "/out.txt");
  two_terms(ranks);
  const int status = wait_for(launcher, 60);
  const std::string out = read_text(dir + "/out.txt");
  ASSERT_NE(status, -1) << "no exit within 60 s\n" << out;
  ASSERT_TRUE(WIFEXITED(status)) << out;
  EXPECT_EQ(WEXITSTATUS(status), 0) << out;
  const int64_t stopped = step_of(dir + "/latest.h5");
  EXPECT_GE(stopped, 1);
  EXPECT_EQ(step_of(dir + "/" + ckpt_name(stopped)), stopped);
  expect_resume_equals_straight(dir, mpiexec, "signals_two_terms_mpi");
}

// After the window a second signal exits at once (128 + signal), without writing: the test hook
// holds the stop checkpoint's write open, so the signal surely arrives during that write, and the
// previous checkpoint (step 1) must stay the latest.
TEST(Signals, ASecondSignalAfterTheGraceWindowExitsAtOnce) {
  const std::string dir = testing::temp_dir("signals_late_second");
  ASSERT_EQ(testing::run_shell(metatrain_bin() + " " + job(dir, "steps=1")).exit_code, 0);
  const pid_t pid = spawn("env MT_TEST_WRITE_DELAY_MS=60000 " + metatrain_bin() + " " +
                              job(dir, "steps=100000 resume=latest"),
                          dir + "/out.txt");
  ASSERT_TRUE(wait_until(
      [&] {
        return read_text(dir + "/metrics.jsonl").find("\"step\": 2, \"loss\"") != std::string::npos;
      },
      60));
  kill(pid, SIGTERM);
  ASSERT_TRUE(wait_until(
      [&] { return read_text(dir + "/out.txt").find("stop requested") != std::string::npos; }, 30));
  std::this_thread::sleep_for(std::chrono::milliseconds(kStopGraceMs + 500));
  kill(pid, SIGTERM);
  const int status = wait_for(pid, 30);
  const std::string out = read_text(dir + "/out.txt");
  ASSERT_TRUE(WIFEXITED(status)) << out;
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGTERM) << out;
  EXPECT_NE(out.find("second signal: exiting now"), std::string::npos) << out;
  EXPECT_EQ(step_of(dir + "/latest.h5"), 1);
}

}  // namespace
}  // namespace mt
