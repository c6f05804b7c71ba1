// The metatrain program as a user runs it: a short end-to-end job writes its metrics log, final
// checkpoint (named float32 tensors, step) and debug dump; bad configurations exit with code 2
// and a message naming the key.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "core/device.h"
#include "core/hdf5.h"
#include "tests/support/checkpoints.h"
#include "tests/support/programs.h"

namespace mt {
namespace {

using testing::temp_dir;
using Result = testing::ProgramResult;

Result metatrain(const std::string& args) { return testing::run_program("metatrain", args); }

// A job small enough for CI: 8 filters, 3 steps of 2 tasks, 20 evaluation episodes.
std::string tiny(const std::string& dir) {
  return "model.filters=8 steps=3 meta_batch=2 task.queries=2 eval.episodes=20 threads=2 "
         "log.every=1 checkpoint.dir=" +
         dir;
}

TEST(Metatrain, ShortRunWritesMetricsCheckpointAndDump) {
  const std::string dir = temp_dir("short");
  const Result r =
      metatrain(tiny(dir) + " algo=ufom ufom.q=adaptive debug.dump=" + dir + "/dump.h5");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("final eval (test, 20 episodes"), std::string::npos) << r.output;

  std::ifstream log(dir + "/metrics.jsonl");
  std::string line;
  int train_lines = 0, eval_lines = 0;
  while (std::getline(log, line)) {
    if (line.find("\"eval\"") != std::string::npos) {
      ++eval_lines;
      EXPECT_NE(line.find("\"acc_ci95\""), std::string::npos) << line;
    } else {
      ++train_lines;
      for (const char* key : {"\"step\"", "\"loss\"", "\"acc\"", "\"q\"", "\"sec\""})
        EXPECT_NE(line.find(key), std::string::npos) << key << " missing in " << line;
    }
  }
  EXPECT_EQ(train_lines, 3);
  EXPECT_EQ(eval_lines, 2);  // the initial θ's (step 0) and the final one

  const auto ckpt = h5::File::open_read(dir + "/ckpt_00000003.h5");
  std::vector<int64_t> shape;
  const auto w = ckpt.read<float>("/params/block1.conv.weight", &shape);
  EXPECT_EQ(shape, (std::vector<int64_t>{8, 1, 3, 3}));
  EXPECT_EQ(ckpt.read_scalar<int64_t>("/state/step"), 3);
  EXPECT_TRUE(std::filesystem::exists(dir + "/latest.h5"));

  const auto dump = h5::File::open_read(dir + "/dump.h5");
  EXPECT_EQ(dump.list("/tasks").size(), 2u);
  const auto g_fo = dump.read<float>("/tasks/0/g_fo");
  const auto g_exact = dump.read<float>("/tasks/0/g_exact");
  EXPECT_EQ(g_fo.size(), g_exact.size());
  EXPECT_NE(g_fo, g_exact);
  dump.read<float>("/tasks/1/query_x", &shape);
  EXPECT_EQ(shape, (std::vector<int64_t>{10, 1, 28, 28}));
}

TEST(Metatrain, BadConfigurationsExitWithCode2NamingTheKey) {
  const std::string dir = temp_dir("bad");
  const std::pair<std::string, std::string> cases[] = {
      {"task.ways=2000", "task.ways"},    // more ways than the 1000 test classes
      {"inner.steps=-1", "inner.steps"},  // r < 0
      {"ufom.q=1.5", "ufom.q"},           // q outside [0, 1]
      {"algo=protonet", "algo"},          // unknown algorithm
      {"inner.lrr=0.1", "inner.lrr"},     // unknown key
      {"--config /nonexistent.yaml", "/nonexistent.yaml"},
  };
  for (const auto& [arg, key] : cases) {
    const Result r = metatrain(tiny(dir) + " " + arg);
    EXPECT_EQ(r.exit_code, 2) << arg << "\n" << r.output;
    EXPECT_NE(r.output.find(key), std::string::npos) << arg << "\n" << r.output;
  }
}

// Without a GPU (or without the CUDA build) device=cuda is a usage error naming the key, for
// training and for evaluation, and no checkpoint is written.
// An inner step that blows up (inner.lr far too large) is named in the first steps, once; the
// default set-up is not.
TEST(Metatrain, ADivergingInnerLoopIsWarnedAboutNamingInnerLr) {
  const Result bad = metatrain(tiny(temp_dir("inner_lr_bad")) + " inner.lr=5");
  ASSERT_EQ(bad.exit_code, 0) << bad.output;
  EXPECT_NE(bad.output.find("the inner steps diverge; lower inner.lr (now 5"), std::string::npos)
      << bad.output;
  size_t warnings = 0;
  for (size_t at = bad.output.find("warning: step"); at != std::string::npos;
       at = bad.output.find("warning: step", at + 1))
    ++warnings;
  EXPECT_EQ(warnings, 1u) << bad.output;
  const Result good = metatrain(tiny(temp_dir("inner_lr_good")));
  ASSERT_EQ(good.exit_code, 0) << good.output;
  EXPECT_EQ(good.output.find("inner steps diverge"), std::string::npos) << good.output;
}

TEST(Metatrain, CudaWithoutAGpuExitsWithCode2NamingDevice) {
  if (gpu_count() > 0) GTEST_SKIP() << "a GPU is visible: metatrain_cuda_test covers this machine";
  const std::string dir = temp_dir("no_gpu");
  const Result r = metatrain(tiny(dir) + " device=cuda");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("device"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("device=cpu"), std::string::npos) << r.output;  // says what to do
  EXPECT_FALSE(std::filesystem::exists(dir + "/latest.h5"));
  ASSERT_EQ(metatrain(tiny(dir)).exit_code, 0);
  const Result e = testing::run_program("metaeval", dir + "/latest.h5 device=cuda");
  EXPECT_EQ(e.exit_code, 2) << e.output;
  EXPECT_NE(e.output.find("device"), std::string::npos) << e.output;
}

TEST(Metatrain, DivergenceStopsWithCode1AndKeepsTheLastCheckpoint) {
  const std::string dir = temp_dir("diverge");
  // An absurd outer step size overflows θ within a few steps.
  const Result r = metatrain(tiny(dir) + " steps=20 checkpoint.every=1 outer.lr=1e37");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("non-finite meta-gradient"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("lower inner.lr or outer.lr"), std::string::npos) << r.output;
  const auto latest = h5::File::open_read(dir + "/latest.h5");
  const int64_t step = latest.read_scalar<int64_t>("/state/step");
  EXPECT_GE(step, 1);
  EXPECT_LT(step, 20);
  for (float v : latest.read<float>("/params/head.weight")) EXPECT_TRUE(std::isfinite(v));
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    EXPECT_EQ(entry.path().string().find(".tmp."), std::string::npos) << entry.path();
}

// The outer step-size schedule (cosine with warm-up) changes training, and a run resumed from
// its halfway checkpoint continues the same schedule: the same bits as the straight run. (The
// schedule is fixed by `steps`: resuming with other steps reshapes a cosine.)
TEST(Metatrain, CosineScheduleChangesTrainingAndResumesBitForBit) {
  auto params_of = [](const std::string& dir) {
    return testing::checkpoint_params(dir + "/latest.h5");
  };
  const std::string sched = " outer.schedule=cosine outer.warmup=2 outer.lr=0.01";
  const std::string constant = temp_dir("sched_constant"), straight = temp_dir("sched_straight"),
                    halves = temp_dir("sched_halves");
  ASSERT_EQ(metatrain(tiny(constant) + " steps=4 outer.lr=0.01").exit_code, 0);
  ASSERT_EQ(
      metatrain(tiny(straight) + " steps=4 checkpoint.every=2 checkpoint.keep=3" + sched).exit_code,
      0);
  const Result r = metatrain(tiny(halves) + " steps=4 resume=" + straight +
                             "/ckpt_00000002.h5 checkpoint.dir=" + halves);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(params_of(straight) == params_of(halves)) << "the resumed schedule differs";
  EXPECT_FALSE(params_of(straight) == params_of(constant)) << "the schedule changed nothing";
}

// Episodes drawn ahead by background threads are the episodes drawn inline: same parameters.
TEST(Metatrain, PrefetchDoesNotChangeABit) {
  std::vector<std::vector<float>> params;
  for (const char* prefetch : {"0", "3"}) {
    const std::string dir = temp_dir(std::string("prefetch") + prefetch);
    const Result r = metatrain(tiny(dir) + " steps=4 data.prefetch=" + prefetch);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    params.push_back(testing::checkpoint_params(dir + "/latest.h5"));
  }
  ASSERT_FALSE(params[0].empty());
  EXPECT_TRUE(params[0] == params[1]) << "prefetching changed the trained parameters";
}

// The number after "key": in a metrics line, or -1 when the key is absent.
double json_number(const std::string& line, const std::string& key) {
  const size_t at = line.find("\"" + key + "\": ");
  return at == std::string::npos ? -1 : std::strtod(line.c_str() + at + key.size() + 4, nullptr);
}

// The steps of the evaluation lines in a run's metrics log, in order.
std::vector<int64_t> eval_steps(const std::string& dir) {
  std::vector<int64_t> steps;
  std::ifstream log(dir + "/metrics.jsonl");
  for (std::string line; std::getline(log, line);)
    if (line.find("\"eval\"") != std::string::npos)
      steps.push_back(static_cast<int64_t>(json_number(line, "step")));
  return steps;
}

// Accuracy curves start at the beginning: a fresh run evaluates its initial θ (step 0) before
// the first outer step; a resumed run does not evaluate again where it resumes.
TEST(Metatrain, EvaluatesTheInitialParametersOnAFreshRunOnly) {
  const std::string dir = temp_dir("eval_step0");
  Result r = metatrain(tiny(dir) + " steps=2 eval.every=1 checkpoint.every=1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("eval @ step 0: test acc"), std::string::npos) << r.output;
  EXPECT_EQ(eval_steps(dir), (std::vector<int64_t>{0, 1, 2}));
  r = metatrain(tiny(dir) + " steps=4 eval.every=1 resume=latest");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find("eval @ step 0"), std::string::npos) << r.output;
  EXPECT_EQ(eval_steps(dir), (std::vector<int64_t>{0, 1, 2, 3, 4}));
}

// budget.grad_evals stops training after the step at which the cumulative count reaches it; the
// count goes into the checkpoint, so a resumed run continues it.
TEST(Metatrain, GradEvalBudgetStopsEarlyAndSurvivesResume) {
  const std::string dir = temp_dir("budget");
  // FOMAML, r = 1: C_F = r + 1 = 2 per task, 2 tasks, so 4 per step; 10 is reached at step 3.
  const std::string args = tiny(dir) + " algo=fomaml steps=10";
  Result r = metatrain(args + " budget.grad_evals=10");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("gradient-evaluation budget spent"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("final eval"), std::string::npos) << r.output;

  auto train_lines = [&] {
    std::vector<std::pair<int64_t, double>> steps;  // step, grad_evals_total
    std::ifstream log(dir + "/metrics.jsonl");
    for (std::string line; std::getline(log, line);)
      if (line.find("\"eval\"") == std::string::npos)
        steps.emplace_back(static_cast<int64_t>(json_number(line, "step")),
                           json_number(line, "grad_evals_total"));
    return steps;
  };
  auto steps = train_lines();
  ASSERT_EQ(steps.size(), 3u);
  EXPECT_EQ(steps.back().first, 3);
  EXPECT_GE(steps.back().second, 10);
  EXPECT_LT(steps[steps.size() - 2].second, 10);
  EXPECT_EQ(steps.back().second, 12);
  {
    const auto latest = h5::File::open_read(dir + "/latest.h5");
    EXPECT_EQ(latest.read_scalar<int64_t>("/state/step"), 3);
    EXPECT_EQ(latest.read_scalar<int64_t>("/state/grad_evals"), 12);
  }

  // Resumed with a larger budget, the count continues from 12: 16 < 20 <= 20 at step 5.
  r = metatrain(args + " budget.grad_evals=20 resume=latest");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  steps = train_lines();
  ASSERT_EQ(steps.size(), 5u);
  EXPECT_EQ(steps.back().first, 5);
  EXPECT_EQ(steps.back().second, 20);
  EXPECT_EQ(steps[3].second, 16);
}

// log.bias_every probes the first-order bias on fresh tasks without touching training: the
// parameters and gradient-evaluation counts are bit-identical with and without the probes, the
// probe lines come at steps 0, 2, 4, and UFOM with q = 1 shows no error while FOMAML's is > 0.
TEST(Metatrain, BiasProbeLogsWithoutChangingTraining) {
  auto params_and_lines = [](const std::string& extra, std::vector<std::string>& bias_lines) {
    const std::string dir = temp_dir("probe");
    const Result r = metatrain(tiny(dir) + " steps=5 algo=ufom ufom.q=1 " + extra);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    std::vector<double> evals;
    std::ifstream log(dir + "/metrics.jsonl");
    for (std::string line; std::getline(log, line);) {
      if (line.find("\"bias\"") != std::string::npos) bias_lines.push_back(line);
      if (line.find("\"loss\"") != std::string::npos) {
        evals.push_back(json_number(line, "grad_evals_total"));
        EXPECT_LE(json_number(line, "train_elapsed"), json_number(line, "elapsed")) << line;
      }
    }
    const auto f = h5::File::open_read(dir + "/latest.h5");
    std::vector<float> all = f.read<float>("/params/head.weight");
    all.insert(all.end(), evals.begin(), evals.end());
    return all;
  };
  std::vector<std::string> none, lines;
  const auto plain = params_and_lines("", none);
  const auto probed = params_and_lines("log.bias_every=2 log.bias_tasks=3", lines);
  EXPECT_TRUE(none.empty());
  ASSERT_FALSE(plain.empty());
  EXPECT_TRUE(plain == probed) << "the bias probe changed training";
  ASSERT_EQ(lines.size(), 3u);
  for (size_t i = 0; i < lines.size(); ++i) {
    SCOPED_TRACE(lines[i]);
    EXPECT_EQ(json_number(lines[i], "step"), 2.0 * i);
    EXPECT_EQ(json_number(lines[i], "tasks"), 3);
    EXPECT_GT(json_number(lines[i], "fo"), 0);
    EXPECT_GT(json_number(lines[i], "fo_noise"), 0);
    EXPECT_EQ(json_number(lines[i], "ufom"), 0);  // q = 1: g_U = g_E exactly
    EXPECT_EQ(json_number(lines[i], "q"), 1);
  }
  const Result bad = metatrain(tiny(temp_dir("probe_bad")) + " log.bias_every=1 log.bias_tasks=1");
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("log.bias_tasks"), std::string::npos) << bad.output;
}

TEST(Metatrain, HelpListsTheKeys) {
  const Result r = metatrain("--help");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.output.find("inner:"), std::string::npos);
  EXPECT_NE(r.output.find("trajectory"), std::string::npos);
}

// ResNet-12 end to end on the CPU backend: a short run checkpoints the blocks' tensors and its
// architecture (/config); metaeval evaluates it; resuming it as Conv-4 exits 2 naming both
// architectures; device=cuda takes it like Conv-4 (trains on a GPU, the device error without).
TEST(Metatrain, ResNet12TrainsOnTheCpuAndKeepsItsArchitecture) {
  const std::string dir = temp_dir("resnet12");
  const std::string run =
      "model.name=resnet12 model.widths=4,4,8,8 steps=2 meta_batch=2 task.queries=2 "
      "eval.episodes=5 threads=1 checkpoint.dir=" +
      dir;
  const Result r = metatrain(run);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("model resnet12 (widths 4,4,8,8, leaky_relu): "), std::string::npos)
      << r.output;
  const auto ckpt = h5::File::open_read(dir + "/latest.h5");
  std::vector<int64_t> shape;
  ckpt.read<float>("/params/block2.shortcut.conv.weight", &shape);
  EXPECT_EQ(shape, (std::vector<int64_t>{4, 4, 1, 1}));
  const std::string config = ckpt.read_string("/config");
  EXPECT_NE(config.find("  name: resnet12\n"), std::string::npos) << config;
  EXPECT_NE(config.find("  widths: 4,4,8,8\n"), std::string::npos) << config;

  const Result e = testing::run_program("metaeval", dir + "/latest.h5 eval.episodes=5");
  EXPECT_EQ(e.exit_code, 0) << e.output;

  const Result other = metatrain(run + " steps=3 resume=latest model.name=conv4");
  EXPECT_EQ(other.exit_code, 2) << other.output;
  EXPECT_NE(other.output.find("model resnet12 (widths 4,4,8,8, leaky_relu), and this run asks "
                              "for conv4 ("),
            std::string::npos)
      << other.output;

  // The CUDA backend runs the same model's plan: with a GPU it trains; without one (or without
  // the CUDA build) it is the usual device error, exit 2, saying what to set instead.
  const Result cuda = metatrain(run + "_cuda device=cuda");
  if (gpu_count() > 0) {
    EXPECT_EQ(cuda.exit_code, 0) << cuda.output;
  } else {
    EXPECT_EQ(cuda.exit_code, 2) << cuda.output;
    EXPECT_NE(cuda.output.find("device"), std::string::npos) << cuda.output;
    EXPECT_NE(cuda.output.find("device=cpu"), std::string::npos) << cuda.output;
    EXPECT_EQ(cuda.output.find("CPU backend only"), std::string::npos) << cuda.output;
  }
}

}  // namespace
}  // namespace mt
