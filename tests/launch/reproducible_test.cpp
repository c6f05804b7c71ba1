// dist.reduce = exact (the default) under mpiexec: 1, 2, 3 and 4 ranks, either task assignment,
// train the same bits — parameters, optimizer state, run state and every number of the metrics
// log but timings and the rank count — for FOMAML, MAML r = 2, UFOM q = 0.5 and adaptive UFOM
// over 20 outer steps of a meta-batch of 6 (so 4 ranks split it unevenly); a run moved
// 2 → 3 → 1 ranks by resume equals the straight run; dist.reduce = float still runs.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "core/hdf5.h"
#include "tests/support/programs.h"

namespace mt {
namespace {

using testing::ProgramResult;

ProgramResult shell(const std::string& cmd) { return testing::run_shell(cmd); }

ProgramResult mpirun(int ranks, const std::string& args) {
  return testing::run_mpi(ranks, "metatrain", args);
}

// A small job: 4 filters, 6 tasks per step, one thread per rank; metrics every 2 steps (so both
// the steps that reduce fo_gap and those that do not occur), an evaluation every 10.
std::string job(const std::string& dir, const std::string& extra) {
  return "model.filters=4 meta_batch=6 task.queries=2 eval.episodes=2 eval.every=10 threads=1 "
         "log.every=2 dist.check_every=1 steps=20 checkpoint.every=0 checkpoint.dir=" +
         dir + " " + extra;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The metrics log without timings and the rank count; eval lines at `skip_eval_steps` dropped.
std::string metrics(const std::string& dir, const std::vector<int>& skip_eval_steps = {}) {
  static const std::regex volatile_keys(
      ", \"(sec|tasks_per_s|elapsed|train_elapsed|ranks)\": [^,}]*");
  std::istringstream in(read_text(dir + "/metrics.jsonl"));
  std::string out;
  for (std::string line; std::getline(in, line);) {
    bool skip = false;
    for (int s : skip_eval_steps)
      skip |= line.rfind("{\"step\": " + std::to_string(s) + ", \"eval\"", 0) == 0;
    if (!skip) out += std::regex_replace(line, volatile_keys, "") + "\n";
  }
  return out;
}

// The bytes of a checkpoint's parameters, optimizer buffers and step, UFOM and budget state.
std::string state_bytes(const std::string& ckpt) {
  const auto f = h5::File::open_read(ckpt);
  std::string out;
  auto add = [&](const std::string& path, const auto& values) {
    out += path + ":";
    out.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(values[0]));
  };
  for (const std::string& name : f.list("/params")) add(name, f.read<float>("/params/" + name));
  for (const std::string& buf : f.list("/optimizer"))
    for (const std::string& name : f.list("/optimizer/" + buf))
      add(buf + "/" + name, f.read<float>("/optimizer/" + buf + "/" + name));
  out += "optimizer step " + std::to_string(f.get_attr_int("/optimizer", "step"));
  for (const char* p : {"/state/step", "/state/grad_evals", "/state/ufom/count"})
    add(p, f.read<int64_t>(p));
  for (const char* p : {"/state/ufom/v2_ema", "/state/ufom/d2_ema", "/state/ufom/q"})
    add(p, f.read<double>(p));
  return out;
}

class Reproducible : public ::testing::Test {
 protected:
  void SetUp() override {
    if (shell("command -v mpiexec").exit_code != 0) {
      if (testing::in_ci()) GTEST_FAIL() << "mpiexec missing";
      GTEST_SKIP() << "mpiexec missing";
    }
  }
  // Runs `args` on 1 … 4 ranks with each assignment of `assigns` and expects the bits of the
  // first run everywhere.
  void expect_same_bits(const std::string& name, const std::string& args,
                        const std::vector<std::string>& assigns) {
    std::string state0, log0;
    for (const std::string& assign : assigns)
      for (int n = 1; n <= 4; ++n) {
        if (assign == "balanced" && n == 1) continue;  // one rank: nothing to balance
        const std::string dir =
            testing::temp_dir("repro_" + name + "_" + assign + std::to_string(n));
        const ProgramResult r = mpirun(n, job(dir, args + " dist.assign=" + assign));
        ASSERT_EQ(r.exit_code, 0) << name << " " << assign << " n=" << n << "\n" << r.output;
        const std::string state = state_bytes(dir + "/latest.h5"), log = metrics(dir);
        if (state0.empty()) {
          state0 = state;
          log0 = log;
          ASSERT_NE(log.find("\"step\": 20"), std::string::npos) << log;
          continue;
        }
        EXPECT_TRUE(state == state0)
            << name << ": checkpoint state differs, " << assign << " on " << n << " ranks";
        EXPECT_EQ(log, log0) << name << ": " << assign << " on " << n << " ranks";
      }
  }
};

TEST_F(Reproducible, FomamlOnOneToFourRanks) {
  expect_same_bits("fomaml", "algo=fomaml", {"modulo"});
}

TEST_F(Reproducible, MamlTwoInnerStepsOnOneToFourRanks) {
  expect_same_bits("maml", "algo=maml inner.steps=2", {"modulo"});
}

TEST_F(Reproducible, UfomHalfOnOneToFourRanksBothAssignments) {
  expect_same_bits("ufom", "algo=ufom ufom.q=0.5", {"modulo", "balanced"});
}

TEST_F(Reproducible, AdaptiveUfomOnOneToFourRanksBothAssignments) {
  expect_same_bits("adaptive", "algo=ufom ufom.q=adaptive ufom.q_min=0.3 inner.steps=2",
                   {"modulo", "balanced"});
}

// 8 steps on 2 ranks, 6 more on 3, the last 6 on 1: the bits of 20 steps on 4 ranks.
TEST_F(Reproducible, ElasticResumeTwoThreeOneEqualsTheStraightRun) {
  const std::string args =
      "algo=ufom ufom.q=adaptive ufom.q_min=0.3 inner.steps=2 dist.assign=balanced";
  const std::string straight = testing::temp_dir("repro_straight");
  ProgramResult r = mpirun(4, job(straight, args));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string moved = testing::temp_dir("repro_moved");
  const int ranks[] = {2, 3, 1};
  const int until[] = {8, 14, 20};
  for (int i = 0; i < 3; ++i) {
    r = mpirun(ranks[i], job(moved, args + (i ? " resume=latest" : "")) +
                             " steps=" + std::to_string(until[i]));
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  EXPECT_NE(r.output.find("saved by 3 ranks, now 1"), std::string::npos) << r.output;
  EXPECT_TRUE(state_bytes(moved + "/latest.h5") == state_bytes(straight + "/latest.h5"));
  // The moved run has final evaluations at its stops (8, 14) that the straight run has not.
  EXPECT_EQ(metrics(moved, {8, 14}), metrics(straight));
}

// The plain float allreduce stays selectable and trains (its bits may depend on N).
TEST_F(Reproducible, FloatReductionStillRuns) {
  for (int n : {1, 2}) {
    const std::string dir = testing::temp_dir("repro_float" + std::to_string(n));
    const ProgramResult r = mpirun(n, job(dir, "algo=ufom ufom.q=0.5 dist.reduce=float steps=4"));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(read_text(dir + "/metrics.jsonl").find("\"step\": 4"), std::string::npos);
  }
}

}  // namespace
}  // namespace mt
