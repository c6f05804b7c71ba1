// metatrain algo=slbamm on the shared run scaffolding: K iterations, a checkpoint, resume and
// K more give the same bits as 2K straight (the solver state x, y, z and the step in the last
// checkpoint, and every metrics line but its timings), on 1 rank and under mpiexec on 2, for the
// toy and for hyper-cleaning; SIGTERM stops with a checkpoint that resumes to the same bits;
// checkpoints of the other kind of run, damaged fields and changed problem settings exit 2.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <functional>
#include <limits>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/hdf5.h"
#include "data/episode_store.h"
#include "tests/support/processes.h"
#include "tests/support/programs.h"
#include "tests/support/synthetic_store.h"

namespace mt {
namespace {

using testing::ProgramResult;

const char* const kMpiEnv = testing::kMpiTestEnv;

std::string metatrain_bin() { return testing::binary_dir() + "/bin/metatrain"; }

ProgramResult shell(const std::string& cmd) { return testing::run_shell(cmd); }

bool have_mpiexec() { return shell("command -v mpiexec").exit_code == 0; }

// metatrain on `ranks` ranks (1: the plain program, 2: under mpiexec).
ProgramResult metatrain(int ranks, const std::string& args) {
  if (ranks == 1) return shell("timeout 300 " + metatrain_bin() + " " + args);
  return testing::run_mpi(ranks, "metatrain", args);
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The metrics log's iteration lines without their timings ("sec", "elapsed"), and its last line:
// what must repeat bit for bit. (A run that ends also writes its end-of-run line, the
// hyper-cleaning scores, which a run continued later writes again at its own end.)
std::string iteration_lines(const std::string& dir) {
  static const std::regex timing(", \"(sec|elapsed)\": [-0-9.eE+]+");
  std::istringstream in(read_text(dir + "/metrics.jsonl"));
  std::string out;
  for (std::string line; std::getline(in, line);)
    if (line.find("\"F\": ") != std::string::npos)
      out += std::regex_replace(line, timing, "") + "\n";
  return out;
}
std::string last_line(const std::string& dir) {
  std::istringstream in(read_text(dir + "/metrics.jsonl"));
  std::string last;
  for (std::string line; std::getline(in, line);) last = line;
  return std::regex_replace(last, std::regex(", \"(sec|elapsed)\": [-0-9.eE+]+"), "");
}

struct SolverState {
  int64_t step = -1;
  std::vector<double> x, y, z;
  bool operator==(const SolverState& o) const {
    return step == o.step && x == o.x && y == o.y && z == o.z;  // exact: bits, not tolerance
  }
};

SolverState state_of(const std::string& ckpt) {
  const auto f = h5::File::open_read(ckpt);
  return {f.read_scalar<int64_t>("/state/step"), f.read<double>("/slbamm/x"),
          f.read<double>("/slbamm/y"), f.read<double>("/slbamm/z")};
}

std::string toy(const std::string& dir) {
  return "algo=slbamm slbamm.toy_dim=20 slbamm.z_lr_max=1 threads=1 log.every=5 checkpoint.dir=" +
         dir + " ";
}

// Hyper-cleaning with the linear classifier on a small synthetic store, written beside the run's
// folder (tests run side by side, so each run folder has its own copy).
std::string hyperclean(const std::string& dir) {
  const std::string store = dir + "_store.h5";
  write_store(store, testing::synthetic_store(4, 10, 5, 3));
  return "algo=slbamm slbamm.problem=hyperclean data.path=" + store +
         " slbamm.classes=3 slbamm.train_per_class=4 slbamm.val_per_class=2 "
         "slbamm.test_per_class=2 slbamm.y_lr=1 slbamm.x_lr=100 slbamm.z_lr_max=1 threads=1 "
         "log.every=5 checkpoint.dir=" +
         dir + " ";
}

class SlbammResume : public ::testing::Test {};

// 40 iterations straight vs 20 (checkpoint.every=10 also saves in between), resume, 20 more.
void expect_resume_continues(int ranks, const std::function<std::string(const std::string&)>& job,
                             const std::string& name) {
  const std::string straight = testing::temp_dir(name + "_straight");
  ProgramResult r = metatrain(ranks, job(straight) + "steps=40 checkpoint.every=10");
  ASSERT_EQ(r.exit_code, 0) << r.output;

  const std::string split = testing::temp_dir(name + "_split");
  r = metatrain(ranks, job(split) + "steps=20 checkpoint.every=10");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = metatrain(ranks, job(split) + "steps=40 checkpoint.every=10 resume=latest");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resuming from " + split + "/latest.h5 at step 20 (saved by " +
                          std::to_string(ranks) + (ranks == 1 ? " rank" : " ranks")),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("resume: overrides change steps 20 -> 40"), std::string::npos)
      << r.output;

  const SolverState a = state_of(straight + "/latest.h5"), b = state_of(split + "/latest.h5");
  EXPECT_EQ(a.step, 40);
  EXPECT_TRUE(a == b) << name << ": the resumed run's final state differs from the straight run's";
  // The checkpoint of step 30, written after the resume, too.
  EXPECT_TRUE(state_of(straight + "/ckpt_00000030.h5") == state_of(split + "/ckpt_00000030.h5"));
  const std::string ma = iteration_lines(straight), mb = iteration_lines(split);
  EXPECT_NE(ma.find("\"step\": 40, \"F\""), std::string::npos) << ma;
  EXPECT_EQ(ma, mb) << name << ": metrics differ";
  EXPECT_EQ(last_line(straight), last_line(split));
}

TEST_F(SlbammResume, ToyContinuesBitForBitOnOneRank) {
  expect_resume_continues(1, toy, "slbamm_resume_toy1");
}

TEST_F(SlbammResume, HypercleanContinuesBitForBitOnOneRank) {
  expect_resume_continues(1, hyperclean, "slbamm_resume_hc1");
}

TEST_F(SlbammResume, ToyAndHypercleanContinueBitForBitOnTwoRanks) {
  if (!have_mpiexec()) {
    if (testing::in_ci()) GTEST_FAIL() << "mpiexec missing";
    GTEST_SKIP() << "mpiexec missing";
  }
  expect_resume_continues(2, toy, "slbamm_resume_toy2");
  expect_resume_continues(2, hyperclean, "slbamm_resume_hc2");
}

using testing::spawn;
using testing::wait_for;
using testing::wait_until;

// SIGTERM to a run (1 rank), or SIGUSR1 to mpiexec, which forwards it (2 ranks): every rank
// stops after the same iteration s with a checkpoint and exit 0; resuming to s + 500 gives the
// bits of a straight run of s + 500.
void expect_signal_stop_resumes(int ranks, const std::string& name) {
  const std::string dir = testing::temp_dir(name);
  const std::string args = toy(dir) + "log.every=100 ";
  const std::string launcher =
      ranks == 1 ? "" : std::string("env ") + kMpiEnv + "mpiexec --oversubscribe -n 2 ";
  const pid_t pid =
      spawn(launcher + metatrain_bin() + " " + args + "steps=100000000", dir + "/out.txt");
  ASSERT_TRUE(wait_until([&] { return read_text(dir + "/metrics.jsonl").size() > 0; }, 60));
  kill(pid, ranks == 1 ? SIGTERM : SIGUSR1);
  const int status = wait_for(pid, 60);
  const std::string out = read_text(dir + "/out.txt");
  ASSERT_NE(status, -1) << "no exit within 60 s of the signal\n" << out;
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
  EXPECT_NE(out.find("resume with the same command plus: resume=latest"), std::string::npos) << out;
  const int64_t stopped = state_of(dir + "/latest.h5").step;
  ASSERT_GE(stopped, 1);
  EXPECT_NE(out.find("stopped by signal after step " + std::to_string(stopped) + " of"),
            std::string::npos)
      << out;

  const std::string steps = "steps=" + std::to_string(stopped + 500) + " ";
  ProgramResult r = metatrain(ranks, args + steps + "resume=latest");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string straight = testing::temp_dir(name + "_straight");
  r = metatrain(ranks, toy(straight) + "log.every=100 " + steps);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(state_of(dir + "/latest.h5") == state_of(straight + "/latest.h5"));
  EXPECT_EQ(iteration_lines(dir), iteration_lines(straight));
  EXPECT_NE(iteration_lines(dir).find("\"step\": " + std::to_string(stopped + 500) + ", \"F\""),
            std::string::npos);
}

TEST_F(SlbammResume, SigtermStopsWithACheckpointThatResumesExactly) {
  expect_signal_stop_resumes(1, "slbamm_sigterm");
}

TEST_F(SlbammResume, Usr1StopsAnMpirunJobThatResumesExactly) {
  if (!have_mpiexec()) {
    if (testing::in_ci()) GTEST_FAIL() << "mpiexec missing";
    GTEST_SKIP() << "mpiexec missing";
  }
  expect_signal_stop_resumes(2, "slbamm_usr1");
}

// A diverging run exits 1; no checkpoint it leaves holds a non-finite value (the state is checked
// before every save, not only at logged iterations, and the exact reduction refuses non-finite and
// huge parts), so the latest one still resumes.
TEST_F(SlbammResume, DivergenceExitsWithCode1AndLeavesOnlyFiniteCheckpoints) {
  const std::string dir = testing::temp_dir("slbamm_diverge");
  const ProgramResult r =
      metatrain(1, toy(dir) + "steps=50 log.every=7 checkpoint.every=1 slbamm.x_lr=1e300");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("the iteration diverged; lower slbamm.x_lr"), std::string::npos)
      << r.output;
  const SolverState s = state_of(dir + "/latest.h5");
  EXPECT_GE(s.step, 1);
  EXPECT_LT(s.step, 7);
  for (const std::vector<double>* v : {&s.x, &s.y, &s.z})
    for (double e : *v) EXPECT_TRUE(std::isfinite(e));

  // Hyper-cleaning (two blocks): the exact reduction refuses the first part beyond its range.
  const std::string hc = testing::temp_dir("slbamm_diverge_hc");
  const ProgramResult h =
      metatrain(1, hyperclean(hc) + "steps=50 log.every=7 checkpoint.every=1 slbamm.y_lr=1e300");
  EXPECT_EQ(h.exit_code, 1) << h.output;
  EXPECT_NE(h.output.find("beyond the exact reduction's range"), std::string::npos) << h.output;
  EXPECT_NE(h.output.find("the iteration diverged; lower slbamm.x_lr"), std::string::npos)
      << h.output;
  const SolverState last = state_of(hc + "/latest.h5");
  EXPECT_GE(last.step, 1);
  for (const std::vector<double>* v : {&last.x, &last.y, &last.z})
    for (double e : *v) EXPECT_TRUE(std::isfinite(e));
}

// Copies `from` to `to` and lets `edit` change the copy.
std::string edited(const std::string& from, const std::string& to,
                   const std::function<void(h5::File&)>& edit) {
  std::ifstream in(from, std::ios::binary);
  std::ofstream(to, std::ios::binary) << in.rdbuf();
  h5::File f = h5::File::open_write(to);
  edit(f);
  f.close();
  return to;
}

TEST_F(SlbammResume, BadCheckpointsAndOtherKindsExitWithCode2NamingTheProblem) {
  const std::string dir = testing::temp_dir("slbamm_badckpt");
  ASSERT_EQ(metatrain(1, toy(dir + "/a") + "steps=5").exit_code, 0);
  const std::string maml = dir + "/maml";
  ASSERT_EQ(metatrain(1,
                      "steps=1 model.filters=4 meta_batch=2 task.queries=1 eval.episodes=2 "
                      "threads=1 checkpoint.dir=" +
                          maml)
                .exit_code,
            0);
  const std::string good = dir + "/a/latest.h5";
  auto nan_y = edited(good, dir + "/nan.h5", [](h5::File& f) {
    std::vector<double> y = f.read<double>("/slbamm/y");
    y[3] = std::numeric_limits<double>::quiet_NaN();
    f.write<double>("/slbamm/y", {static_cast<int64_t>(y.size())}, y.data());
  });
  auto short_z = edited(good, dir + "/short.h5", [](h5::File& f) {
    const std::vector<double> z(7, 0.0);
    f.write<double>("/slbamm/z", {7}, z.data());
  });
  auto bad_step = edited(good, dir + "/step.h5",
                         [](h5::File& f) { f.write_scalar<int64_t>("/state/step", -3); });
  auto version =
      edited(good, dir + "/version.h5", [](h5::File& f) { f.set_attr("/", "format_version", 99); });
  struct Case {
    std::string args, message;
  };
  const std::vector<Case> cases = {
      {toy(dir + "/b") + "steps=9 resume=" + nan_y, nan_y + ": /slbamm/y[3]: is not finite"},
      {toy(dir + "/b") + "steps=9 resume=" + short_z, short_z + ": /slbamm/z: holds 7 values"},
      {toy(dir + "/b") + "steps=9 resume=" + bad_step, bad_step + ": /state/step: -3 is out"},
      {toy(dir + "/b") + "steps=9 resume=" + version, version + ": format_version: 99"},
      {toy(dir + "/b") + "steps=9 slbamm.toy_dim=21 resume=" + good,
       good + ": /slbamm/x: holds 20"},
      {toy(dir + "/b") + "steps=9 slbamm.variant=plain resume=" + good,
       "slbamm.variant was averaged and is now plain"},
      {toy(dir + "/b") + "steps=4 resume=" + good, "it is at step 5, beyond steps = 4"},
      {toy(dir + "/b") + "steps=9 resume=" + maml + "/latest.h5",
       "it is the checkpoint of a meta-learning run (maml, fomaml or ufom), and this run is "
       "algo=slbamm"},
      {"algo=maml steps=2 model.filters=4 meta_batch=2 task.queries=1 threads=1 checkpoint.dir=" +
           dir + "/c resume=" + good,
       "it is the checkpoint of an algo=slbamm run, and this run is algo=maml"},
  };
  for (const Case& c : cases) {
    const ProgramResult r = metatrain(1, c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.args << "\n" << r.output;
  }
  if (!have_mpiexec()) return;
  // Under two ranks, rank 0's failure to resume ends every rank with code 2.
  const ProgramResult r2 = metatrain(2, toy(dir + "/d") + "steps=9 resume=" + nan_y);
  EXPECT_EQ(r2.exit_code, 2) << r2.output;
  EXPECT_NE(r2.output.find("/slbamm/y[3]"), std::string::npos) << r2.output;
}

}  // namespace
}  // namespace mt
