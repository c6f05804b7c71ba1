// metatrain under mpiexec as users run it: N ∈ {1, 2, 4} ranks train the same parameters;
// resume continues a run bit for bit (same N) or to 1e-6 (another N); SIGTERM stops with a
// checkpoint, SIGKILL during a write leaves the previous checkpoint valid, a failing rank ends
// the job; bad checkpoints exit with code 2.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "core/hdf5.h"
#include "tests/support/checkpoints.h"
#include "tests/support/processes.h"
#include "tests/support/programs.h"

namespace mt {
namespace {

using testing::ProgramResult;
namespace fs = std::filesystem;

const char* const kMpiEnv = testing::kMpiTestEnv;

std::string metatrain_bin() { return std::string(MT_BINARY_DIR) + "/bin/metatrain"; }

ProgramResult shell(const std::string& cmd) { return testing::run_shell(cmd); }

ProgramResult mpirun(int ranks, const std::string& args) {
  return testing::run_mpi(ranks, "metatrain", args);
}

// A small job: 8 filters, meta_batch 4, one thread per rank.
std::string job(const std::string& dir, const std::string& extra) {
  return "model.filters=8 meta_batch=4 task.queries=2 eval.episodes=4 threads=1 log.every=1 "
         "dist.check_every=1 checkpoint.dir=" +
         dir + " " + extra;
}

using testing::checkpoint_params;

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// ‖a − b‖ / ‖b‖.
double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    den += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

class Distributed : public ::testing::Test {
 protected:
  void SetUp() override {
    if (shell("command -v mpiexec").exit_code != 0) {
      if (testing::in_ci()) GTEST_FAIL() << "mpiexec missing";
      GTEST_SKIP() << "mpiexec missing";
    }
  }
};

// Changing N changes only the order of floating-point sums: parameters after 4 steps agree to
// 1e-6 relative (norm-wise; float32 sums of 4 tasks differ in the last bits), and the same N
// twice gives the same bits.
TEST_F(Distributed, OneTwoAndFourRanksTrainTheSameParameters) {
  // UFOM with q and q_min large enough that exact tasks occur in 4 steps of 8 tasks.
  const std::vector<std::string> algos = {"algo=fomaml", "algo=maml inner.steps=2",
                                          "algo=ufom ufom.q=0.5 meta_batch=8",
                                          "algo=ufom ufom.q=adaptive ufom.q_min=0.5 meta_batch=8"};
  for (size_t a = 0; a < algos.size(); ++a) {
    std::vector<float> one;
    for (int n : {1, 2, 4}) {
      const std::string dir =
          testing::temp_dir("dist_n" + std::to_string(n) + "_" + std::to_string(a));
      const ProgramResult r = mpirun(n, job(dir, "steps=4 " + algos[a]));
      ASSERT_EQ(r.exit_code, 0) << algos[a] << " n=" << n << "\n" << r.output;
      const std::vector<float> p = checkpoint_params(dir + "/latest.h5");
      if (a >= 2)  // the UFOM runs took the exact path at least once
        EXPECT_TRUE(std::regex_search(read_text(dir + "/metrics.jsonl"),
                                      std::regex("\"exact_tasks\": [1-9]")))
            << "no exact tasks";
      if (n == 1) {
        one = p;
        continue;
      }
      EXPECT_LE(rel_diff(p, one), 1e-6) << algos[a] << " on " << n << " ranks";
    }
    // The same N twice: bit-identical.
    const std::string again = testing::temp_dir("dist_again_" + std::to_string(a));
    ASSERT_EQ(mpirun(2, job(again, "steps=4 " + algos[a])).exit_code, 0);
    const std::string first = testing::temp_dir("dist_first_" + std::to_string(a));
    ASSERT_EQ(mpirun(2, job(first, "steps=4 " + algos[a])).exit_code, 0);
    EXPECT_TRUE(checkpoint_params(again + "/latest.h5") == checkpoint_params(first + "/latest.h5"))
        << algos[a];
  }
}

TEST_F(Distributed, BalancedUfomAssignmentTrainsTheSameParameters) {
  const std::string mod = testing::temp_dir("dist_mod"), bal = testing::temp_dir("dist_bal");
  const std::string ufom = "steps=4 meta_batch=8 algo=ufom ufom.q=0.3";
  ASSERT_EQ(mpirun(2, job(mod, ufom)).exit_code, 0);
  const ProgramResult r = mpirun(2, job(bal, ufom + " dist.assign=balanced"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_LE(rel_diff(checkpoint_params(bal + "/latest.h5"), checkpoint_params(mod + "/latest.h5")),
            1e-6);
}

// 2K steps straight == K steps, checkpoint, resume, K steps: bit-identical on the same N (the
// whole state is restored: θ, Adam moments and step, adaptive-UFOM EMAs); from 2 to 4 ranks
// within 1e-6.
TEST_F(Distributed, ResumeContinuesTheRun) {
  const std::string algo = "algo=ufom ufom.q=adaptive ufom.q_min=0.5 meta_batch=8 ";
  const std::string straight = testing::temp_dir("dist_straight");
  ASSERT_EQ(mpirun(2, job(straight, algo + "steps=6")).exit_code, 0);

  const std::string split = testing::temp_dir("dist_split");
  ASSERT_EQ(mpirun(2, job(split, algo + "steps=3")).exit_code, 0);
  const ProgramResult r = mpirun(2, job(split, algo + "steps=6 resume=latest"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resuming from " + split + "/latest.h5 at step 3"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("resume: overrides change steps 3 -> 6"), std::string::npos) << r.output;
  EXPECT_TRUE(checkpoint_params(split + "/latest.h5") == checkpoint_params(straight + "/latest.h5"))
      << "resumed run differs from the straight run";

  const std::string elastic = testing::temp_dir("dist_elastic");
  ASSERT_EQ(mpirun(2, job(elastic, algo + "steps=3")).exit_code, 0);
  const ProgramResult e = mpirun(4, job(elastic, algo + "steps=6 resume=latest"));
  ASSERT_EQ(e.exit_code, 0) << e.output;
  EXPECT_NE(e.output.find("saved by 2 ranks, now 4"), std::string::npos) << e.output;
  EXPECT_LE(rel_diff(checkpoint_params(elastic + "/latest.h5"),
                     checkpoint_params(straight + "/latest.h5")),
            1e-6);
}

using testing::spawn;
using testing::wait_for;
using testing::wait_until;

int64_t step_of(const std::string& ckpt) {
  return h5::File::open_read(ckpt).read_scalar<int64_t>("/state/step");
}

TEST_F(Distributed, SigtermWritesACheckpointAndExitsZero) {
  const std::string dir = testing::temp_dir("dist_sigterm");
  const pid_t pid =
      spawn(metatrain_bin() + " " + job(dir, "steps=100000 eval.every=0 checkpoint.every=0"),
            dir + "/out.txt");
  ASSERT_TRUE(wait_until([&] { return read_text(dir + "/metrics.jsonl").size() > 0; }, 60));
  kill(pid, SIGTERM);
  const int status = wait_for(pid, 60);
  ASSERT_NE(status, -1) << "no exit within 60 s after SIGTERM";
  const std::string out = read_text(dir + "/out.txt");
  ASSERT_TRUE(WIFEXITED(status)) << out;
  EXPECT_EQ(WEXITSTATUS(status), 0) << out;
  EXPECT_NE(out.find("resume with the same command plus: resume=latest"), std::string::npos) << out;
  const int64_t stopped = step_of(dir + "/latest.h5");
  EXPECT_GE(stopped, 1);
  // The run resumes from there.
  const ProgramResult r = shell(metatrain_bin() + " " +
                                job(dir, "steps=" + std::to_string(stopped + 2) +
                                             " eval.every=0 checkpoint.every=0 resume=latest"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(step_of(dir + "/latest.h5"), stopped + 2);
}

// SIGUSR1 to mpirun, which forwards it, stops a multi-rank job gracefully. (A second signal:
// tests/launch/signals_test.cpp.)
TEST_F(Distributed, Usr1StopsAnMpirunJob) {
  const std::string dir2 = testing::temp_dir("dist_usr1");
  const pid_t job_pid =
      spawn(std::string("env ") + kMpiEnv + "mpiexec --oversubscribe -n 2 " + metatrain_bin() +
                " " + job(dir2, "steps=100000 eval.every=0 checkpoint.every=0"),
            dir2 + "/out.txt");
  ASSERT_TRUE(wait_until([&] { return read_text(dir2 + "/metrics.jsonl").size() > 0; }, 60));
  kill(job_pid, SIGUSR1);
  const int job_status = wait_for(job_pid, 60);
  ASSERT_NE(job_status, -1) << "no exit within 60 s of SIGUSR1";
  EXPECT_TRUE(WIFEXITED(job_status) && WEXITSTATUS(job_status) == 0)
      << read_text(dir2 + "/out.txt");
  EXPECT_GE(step_of(dir2 + "/latest.h5"), 1);
}

// A kill while a checkpoint is being written (held open by the test hook between fsync and
// rename) leaves the previous checkpoint and latest.h5 loadable.
TEST_F(Distributed, SigkillDuringACheckpointWriteLeavesThePreviousOne) {
  const std::string dir = testing::temp_dir("dist_sigkill");
  ASSERT_EQ(shell(metatrain_bin() + " " + job(dir, "steps=2")).exit_code, 0);
  const pid_t pid = spawn("env MT_TEST_WRITE_DELAY_MS=60000 " + metatrain_bin() + " " +
                              job(dir, "steps=4 resume=latest checkpoint.every=1 eval.every=0"),
                          dir + "/out.txt");
  const std::string tmp = dir + "/ckpt_00000003.h5.tmp." + std::to_string(pid);
  ASSERT_TRUE(wait_until([&] { return fs::exists(tmp); }, 60)) << read_text(dir + "/out.txt");
  kill(pid, SIGKILL);
  wait_for(pid, 30);
  EXPECT_EQ(step_of(dir + "/latest.h5"), 2);
  EXPECT_EQ(step_of(dir + "/ckpt_00000002.h5"), 2);
  EXPECT_FALSE(fs::exists(dir + "/ckpt_00000003.h5"));
  const ProgramResult r = shell(metatrain_bin() + " " + job(dir, "steps=3 resume=latest"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

// A rank that fails (here: rank 1 given a data file that does not exist, through mpiexec's
// multi-program syntax) ends the whole job with a non-zero status, while rank 0 would otherwise
// wait for it in a collective; and a rank killed outright ends the job too.
TEST_F(Distributed, AFailingRankEndsTheJob) {
  const std::string dir = testing::temp_dir("dist_crash");
  const std::string args = job(dir, "steps=1000");
  const auto t0 = std::chrono::steady_clock::now();
  const ProgramResult r =
      shell(std::string(kMpiEnv) + "timeout 120 mpiexec --oversubscribe -n 1 " + metatrain_bin() +
            " " + args + " : -n 1 " + metatrain_bin() + " " + args + " data.path=/nope.h5");
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.exit_code, 124) << "the job hung until the timeout";
  EXPECT_LT(sec, 60);
  EXPECT_NE(r.output.find("rank 1 of 2: error: /nope.h5: cannot open"), std::string::npos)
      << r.output;

  const std::string dir2 = testing::temp_dir("dist_kill");
  const pid_t pid =
      spawn(std::string("env ") + kMpiEnv + "mpiexec --oversubscribe -n 2 " + metatrain_bin() +
                " " + job(dir2, "steps=100000 eval.every=0 checkpoint.every=0"),
            dir2 + "/out.txt");
  ASSERT_TRUE(wait_until([&] { return read_text(dir2 + "/metrics.jsonl").size() > 0; }, 60));
  const ProgramResult ranks = shell("pgrep -P " + std::to_string(pid) + " metatrain");
  ASSERT_EQ(ranks.exit_code, 0) << "no rank processes found";
  const pid_t victim = std::stoi(ranks.output);
  kill(victim, SIGKILL);
  const int status = wait_for(pid, 60);
  ASSERT_NE(status, -1) << "the job did not end within 60 s of a rank's death";
  EXPECT_FALSE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

// A rank that stops answering (debug.stall: rank 1 sleeps before step 5) ends the job once the
// others have waited dist.timeout in a collective: non-zero, within the deadline plus start-up
// and teardown, naming the collective, the step and the missing rank; the checkpoint of step 4
// is intact, and resuming it without the stall ends with the straight run's bits.
TEST_F(Distributed, AStalledRankEndsTheJobAfterTheTimeout) {
  const std::string dir = testing::temp_dir("dist_stall");
  const std::string args = "steps=8 eval.every=0 checkpoint.every=2 dist.timeout=3 ";
  const auto t0 = std::chrono::steady_clock::now();
  const ProgramResult r = mpirun(2, job(dir, args + "debug.stall=1:5:600"));
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_LT(sec, 60) << r.output;  // the 600 s sleep must not be waited out
  EXPECT_TRUE(std::regex_search(
      r.output, std::regex("rank 0 of 2 \\(host [^)]+\\): MPI allreduce_\\w+ of \\d+ \\w+ during "
                           "step 5 did not finish within the deadline of 3\\.0 s.*rank 1 "
                           "\\(host [^)]+\\) has not reached it")))
      << r.output;
  ASSERT_TRUE(fs::exists(dir + "/ckpt_00000004.h5")) << r.output;
  EXPECT_FALSE(fs::exists(dir + "/ckpt_00000006.h5"));

  const std::string straight = testing::temp_dir("dist_stall_straight");
  ASSERT_EQ(mpirun(2, job(straight, args)).exit_code, 0);
  const ProgramResult resumed =  // a resumed run keeps its stored keys: the stall is turned off
      mpirun(2, job(dir, args + "debug.stall= resume=" + dir + "/ckpt_00000004.h5"));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_EQ(checkpoint_params(dir + "/latest.h5"), checkpoint_params(straight + "/latest.h5"));
}

TEST_F(Distributed, BadCheckpointsExitWithCode2) {
  const std::string dir = testing::temp_dir("dist_badckpt");
  ASSERT_EQ(shell(metatrain_bin() + " " + job(dir + "/a", "steps=1")).exit_code, 0);
  {
    std::ifstream in(dir + "/a/latest.h5", std::ios::binary);
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream(dir + "/cut.h5", std::ios::binary).write(bytes.data(), bytes.size() / 2);
  }
  struct Case {
    std::string args, message;
  };
  const std::vector<Case> cases = {
      {"resume=" + dir + "/cut.h5", dir + "/cut.h5"},
      {"resume=" + dir + "/a/latest.h5 model.filters=16", "checkpoint " + dir + "/a/latest.h5"},
      {"resume=" + dir + "/a/latest.h5 seed=5", "seed was 0 and is now 5"},
      {"resume=latest checkpoint.dir=" + dir + "/none", "resume = latest: no checkpoint"},
      {"resume=" + dir + "/missing.h5", dir + "/missing.h5: cannot open"},
  };
  for (const Case& c : cases) {
    const ProgramResult r = shell(metatrain_bin() + " " + job(dir + "/b", "steps=2 " + c.args));
    EXPECT_EQ(r.exit_code, 2) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.args << "\n" << r.output;
  }
  // The same under two ranks: every rank exits, with code 2.
  const ProgramResult r2 = mpirun(2, job(dir + "/c", "steps=2 resume=" + dir + "/cut.h5"));
  EXPECT_EQ(r2.exit_code, 2) << r2.output;
}

// Evaluation divides its episodes among the ranks and gathers them in episode order: the mean
// and CI are the same bits on 1, 2, 3 and 4 ranks (7 episodes: uneven blocks, one rank of 4 gets
// one episode), in metaeval and in metatrain's evaluations (steps=0: θ is the initial one, so
// only the evaluation's own arithmetic can differ).
TEST_F(Distributed, EvaluationGivesTheSameBitsOnAnyNumberOfRanks) {
  const std::string dir = testing::temp_dir("dist_eval");
  ASSERT_EQ(shell(metatrain_bin() + " " + job(dir + "/trained", "steps=2")).exit_code, 0);
  auto numbers = [](const std::string& json) {  // the JSON line without its "ranks" field
    return std::regex_replace(json, std::regex(", \"ranks\": [0-9]+"), "");
  };
  std::string eval_one, train_one;
  for (int n : {1, 2, 3, 4}) {
    const ProgramResult e = testing::run_mpi(
        n, "metaeval", dir + "/trained/latest.h5 --json eval.episodes=7 threads=1");
    ASSERT_EQ(e.exit_code, 0) << n << " ranks\n" << e.output;
    std::smatch m;
    ASSERT_TRUE(std::regex_search(e.output, m, std::regex("\\{\"checkpoint\".*\\}"))) << e.output;
    EXPECT_NE(m.str().find("\"ranks\": " + std::to_string(n)), std::string::npos) << m.str();
    const std::string line = numbers(m.str());
    if (n == 1) eval_one = line;
    EXPECT_EQ(line, eval_one) << n << " ranks";

    const std::string run = dir + "/steps0_n" + std::to_string(n);
    const ProgramResult t = mpirun(n, job(run, "steps=0 eval.episodes=7"));
    ASSERT_EQ(t.exit_code, 0) << n << " ranks\n" << t.output;
    std::smatch f;
    ASSERT_TRUE(std::regex_search(t.output, f, std::regex("final eval .*"))) << t.output;
    const std::string log = read_text(run + "/metrics.jsonl");
    std::smatch ev;
    ASSERT_TRUE(std::regex_search(log, ev, std::regex("\"eval\": \\{[^}]*\\}"))) << log;
    if (n == 1) train_one = f.str() + ev.str();
    EXPECT_EQ(f.str() + ev.str(), train_one) << n << " ranks";
  }
}

}  // namespace
}  // namespace mt
