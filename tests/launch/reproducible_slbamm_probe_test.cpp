// dist.reduce = exact (the default) under mpiexec for what tests/launch/reproducible_test.cpp does
// not cover. metatrain algo=slbamm: 1, 2, 3 and 4 ranks give the same bits — x, y, z and the step
// in the last checkpoint, and every metrics line but its timings — for the toy (held by rank 0)
// and for hyper-cleaning with the linear and the Conv-4 classifier, whose examples fall into
// blocks of HypercleanProblem::kBlockSize = 64 that the ranks divide; a run moved 2 → 3 → 1 ranks
// by resume equals the straight run. The first-order bias probe: its "bias" lines have the same
// bits on 1, 2 and 3 ranks.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "core/hdf5.h"
#include "data/episode_store.h"
#include "tests/support/programs.h"
#include "tests/support/synthetic_store.h"

namespace mt {
namespace {

using testing::ProgramResult;

ProgramResult shell(const std::string& cmd) { return testing::run_shell(cmd); }

ProgramResult mpirun(int ranks, const std::string& args) {
  return testing::run_mpi(ranks, "metatrain", args);
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The metrics log without timings; with `iterations_only`, only the iteration lines (a run that
// stops writes the end-of-run hyper-cleaning line that a straight run writes only at its end).
std::string metrics(const std::string& dir, bool iterations_only = false) {
  static const std::regex timing(", \"(sec|elapsed|ranks)\": [-0-9.eE+]+");
  std::istringstream in(read_text(dir + "/metrics.jsonl"));
  std::string out;
  for (std::string line; std::getline(in, line);)
    if (!iterations_only || line.find("\"F\": ") != std::string::npos)
      out += std::regex_replace(line, timing, "") + "\n";
  return out;
}

std::string state_bytes(const std::string& ckpt) {
  const auto f = h5::File::open_read(ckpt);
  std::string out = "step " + std::to_string(f.read_scalar<int64_t>("/state/step"));
  for (const char* name : {"/slbamm/x", "/slbamm/y", "/slbamm/z"}) {
    const std::vector<double> v = f.read<double>(name);
    out += name;
    out.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(double));
  }
  return out;
}

const char* const kToy = "slbamm.toy_dim=20 slbamm.z_lr_max=1";

// 4 classes with 48 training images each (3 blocks of 64) and 16 validation images (1 block).
std::string hyperclean(const std::string& name, const std::string& model) {
  const std::string store = testing::temp_dir(name + "_data") + "/store.h5";
  write_store(store, testing::synthetic_store(5, 70, model == "conv4" ? 16 : 5, 3));
  std::string args = "slbamm.problem=hyperclean data.path=" + store +
                     " slbamm.classes=4 slbamm.train_per_class=48 slbamm.val_per_class=16 "
                     "slbamm.test_per_class=2 slbamm.z_lr_max=1 slbamm.model=" +
                     model;
  if (model == "conv4") return args + " slbamm.filters=2 slbamm.y_lr=0.1 slbamm.x_lr=10";
  return args + " slbamm.y_lr=1 slbamm.x_lr=100";
}

std::string job(const std::string& dir, const std::string& problem, int steps) {
  return "algo=slbamm threads=1 log.every=3 checkpoint.every=0 steps=" + std::to_string(steps) +
         " checkpoint.dir=" + dir + " " + problem;
}

class SlbammReproducible : public ::testing::Test {
 protected:
  void SetUp() override {
    if (shell("command -v mpiexec").exit_code != 0) {
      if (testing::in_ci()) GTEST_FAIL() << "mpiexec missing";
      GTEST_SKIP() << "mpiexec missing";
    }
  }
  void expect_same_bits(const std::string& name, const std::string& problem, int steps) {
    std::string state0, log0;
    for (int n = 1; n <= 4; ++n) {
      const std::string dir = testing::temp_dir("brepro_" + name + std::to_string(n));
      const ProgramResult r = mpirun(n, job(dir, problem, steps));
      ASSERT_EQ(r.exit_code, 0) << name << " n=" << n << "\n" << r.output;
      const std::string state = state_bytes(dir + "/latest.h5"), log = metrics(dir);
      if (n == 1) {
        state0 = state;
        log0 = log;
        ASSERT_NE(log.find("\"step\": " + std::to_string(steps) + ", \"F\""), std::string::npos)
            << log;
        continue;
      }
      EXPECT_TRUE(state == state0) << name << ": checkpoint state differs on " << n << " ranks";
      EXPECT_EQ(log, log0) << name << " on " << n << " ranks";
    }
  }
  // `until[0]` iterations on 2 ranks, to until[1] on 3, to until[2] on 1: the straight run's bits.
  void expect_elastic_resume(const std::string& name, const std::string& problem,
                             const int (&until)[3]) {
    const std::string straight = testing::temp_dir("brepro_" + name + "_straight");
    ProgramResult r = mpirun(4, job(straight, problem, until[2]));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const std::string moved = testing::temp_dir("brepro_" + name + "_moved");
    const int ranks[] = {2, 3, 1};
    for (int i = 0; i < 3; ++i) {
      r = mpirun(ranks[i], job(moved, problem, until[i]) + (i ? " resume=latest" : ""));
      ASSERT_EQ(r.exit_code, 0) << r.output;
    }
    EXPECT_NE(r.output.find("saved by 3 ranks, now 1"), std::string::npos) << r.output;
    EXPECT_TRUE(state_bytes(moved + "/latest.h5") == state_bytes(straight + "/latest.h5"));
    EXPECT_EQ(metrics(moved, true), metrics(straight, true));
  }
};

TEST_F(SlbammReproducible, ToyOnOneToFourRanks) { expect_same_bits("toy", kToy, 40); }

TEST_F(SlbammReproducible, HypercleanLinearOnOneToFourRanks) {
  expect_same_bits("hc_linear", hyperclean("brepro_hc_linear", "linear"), 30);
}

TEST_F(SlbammReproducible, HypercleanConv4OnOneToFourRanks) {
  expect_same_bits("hc_conv4", hyperclean("brepro_hc_conv4", "conv4"), 6);
}

TEST_F(SlbammReproducible, ElasticResumeTwoThreeOneEqualsTheStraightRun) {
  expect_elastic_resume("toy_elastic", kToy, {12, 21, 30});
  expect_elastic_resume("hc_elastic", hyperclean("brepro_hc_elastic", "linear"), {12, 21, 30});
}

// dist.reduce = float still runs sl-BAMM on several ranks (its bits may depend on N).
TEST_F(SlbammReproducible, FloatReductionStillRuns) {
  const std::string dir = testing::temp_dir("brepro_float");
  const ProgramResult r =
      mpirun(3, job(dir, hyperclean("brepro_float", "linear") + " dist.reduce=float", 6));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(metrics(dir).find("\"step\": 6, \"F\""), std::string::npos);
}

// 3 probe tasks at steps 0 and 5 of a UFOM run: on 2 and 3 ranks each rank probes some of them.
using BiasProbeReproducible = SlbammReproducible;  // the same mpiexec check

TEST_F(BiasProbeReproducible, LinesOnOneToThreeRanks) {
  std::string lines0;
  for (int n = 1; n <= 3; ++n) {
    const std::string dir = testing::temp_dir("brepro_bias" + std::to_string(n));
    const ProgramResult r =
        mpirun(n,
               "algo=ufom ufom.q=0.5 model.filters=4 meta_batch=3 task.queries=2 eval.episodes=2 "
               "threads=1 steps=10 log.bias_every=5 log.bias_tasks=3 checkpoint.every=0 "
               "checkpoint.dir=" +
                   dir);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    static const std::regex sec(", \"sec\": [-0-9.eE+]+");
    std::istringstream in(read_text(dir + "/metrics.jsonl"));
    std::string lines;
    for (std::string line; std::getline(in, line);)
      if (line.find("\"bias\": ") != std::string::npos)
        lines += std::regex_replace(line, sec, "") + "\n";
    if (n == 1) {
      lines0 = lines;
      ASSERT_NE(lines.find("{\"step\": 5, \"bias\": {\"tasks\": 3, \"fo\": "), std::string::npos)
          << lines;
      continue;
    }
    EXPECT_EQ(lines, lines0) << "on " << n << " ranks";
  }
}

}  // namespace
}  // namespace mt
