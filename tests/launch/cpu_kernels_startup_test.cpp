// The start-up choice of CPU kernels as a user meets it (core/cpu_kernels.h): metatrain names
// the kernels in its first line; without OPENBLAS_CORETYPE it runs the OpenBLAS core the CPU's
// flags allow (restarting itself once when OpenBLAS picked a slower one); a slower core forced
// through OPENBLAS_CORETYPE is kept with a warning that names the fix.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>

#include "core/cpu_kernels.h"
#include "tests/support/programs.h"

namespace mt {
namespace {

// Sets (or, with nullopt, unsets) one environment variable for the programs run in scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, std::optional<std::string> value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value)
      setenv(name, value->c_str(), 1);
    else
      unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_)
      setenv(name_, old_->c_str(), 1);
    else
      unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// A metatrain run of a few seconds; its start-up line and whether it trained to the end.
struct StartedRun {
  testing::ProgramResult r;
  std::string line;  // "cpu kernels: ..."
  std::string core;  // the OpenBLAS core the line names
};

StartedRun metatrain(const std::string& name) {
  const std::string dir = testing::temp_dir("cpu_kernels_" + name);
  StartedRun run;
  run.r = testing::run_program("metatrain",
                               "model.filters=8 steps=2 meta_batch=2 task.queries=2 "
                               "eval.episodes=5 threads=1 checkpoint.dir=" +
                                   dir);
  const size_t at = run.r.output.find("cpu kernels: OpenBLAS ");
  if (at != std::string::npos) {
    run.line = run.r.output.substr(at, run.r.output.find('\n', at) - at);
    const size_t name_at = std::string("cpu kernels: OpenBLAS ").size();
    run.core = run.line.substr(name_at, run.line.find(' ', name_at) - name_at);
  }
  EXPECT_TRUE(std::filesystem::exists(dir + "/latest.h5")) << "the run did not finish as asked";
  return run;
}

const std::string kBest = best_blas_core(cpu_flags());
const bool kFastCpu = blas_core_tier(kBest) > SimdTier::kBaseline;

TEST(CpuKernelsStartup, WithoutTheVariableRunsTheCoreTheFlagsAllow) {
  ScopedEnv a("OPENBLAS_CORETYPE", std::nullopt), b("MT_OPENBLAS_PICKED", std::nullopt),
      c("MT_TEST_OPENBLAS_PICKED", std::nullopt);
  const StartedRun run = metatrain("unset");
  ASSERT_EQ(run.r.exit_code, 0) << run.r.output;
  ASSERT_FALSE(run.line.empty()) << "no start-up line:\n" << run.r.output;
  EXPECT_GE(blas_core_tier(run.core), blas_core_tier(kBest))
      << run.line << "; flags allow " << kBest;
  EXPECT_EQ(run.r.output.find("WARNING"), std::string::npos) << run.r.output;
  EXPECT_NE(run.line.find("own loops "), std::string::npos) << run.line;
}

TEST(CpuKernelsStartup, ASlowPickRestartsOnceWithTheBestCore) {
  if (!kFastCpu) GTEST_SKIP() << "this CPU allows only OpenBLAS's generic kernels";
  // As on a CPU whose masked model name makes OpenBLAS fall back to its generic kernels.
  ScopedEnv a("OPENBLAS_CORETYPE", std::nullopt), b("MT_OPENBLAS_PICKED", std::nullopt),
      c("MT_TEST_OPENBLAS_PICKED", "Prescott");
  const StartedRun run = metatrain("restart");
  ASSERT_EQ(run.r.exit_code, 0) << run.r.output;
  EXPECT_EQ(run.core, kBest) << run.line;
  EXPECT_NE(run.line.find("restarted with OPENBLAS_CORETYPE=" + kBest +
                          " (OpenBLAS had picked Prescott)"),
            std::string::npos)
      << run.line;
  EXPECT_EQ(run.r.output.find("WARNING"), std::string::npos) << run.r.output;
}

TEST(CpuKernelsStartup, ForcedGenericCoreIsKeptWithAWarningNamingTheFix) {
  ScopedEnv a("OPENBLAS_CORETYPE", "Prescott"), b("MT_OPENBLAS_PICKED", std::nullopt),
      c("MT_TEST_OPENBLAS_PICKED", std::nullopt);
  const StartedRun run = metatrain("forced");
  ASSERT_EQ(run.r.exit_code, 0) << run.r.output;
  EXPECT_EQ(run.core, "Prescott") << run.line;
  if (!kFastCpu) {
    EXPECT_EQ(run.r.output.find("WARNING"), std::string::npos) << run.r.output;
    return;
  }
  EXPECT_NE(run.r.output.find("WARNING: slow CPU kernels"), std::string::npos) << run.r.output;
  EXPECT_NE(run.r.output.find("OPENBLAS_CORETYPE=Prescott is set. Fix: unset OPENBLAS_CORETYPE, "
                              "or export OPENBLAS_CORETYPE=" +
                              kBest),
            std::string::npos)
      << run.r.output;
  EXPECT_NE(run.line.find("SLOWER than this CPU allows (" + kBest + ")"), std::string::npos)
      << run.line;
}

TEST(CpuKernelsStartup, NoSecondRestartWhenTheFirstDidNotHelp) {
  if (!kFastCpu) GTEST_SKIP() << "this CPU allows only OpenBLAS's generic kernels";
  // The guard says a restart already happened, yet the core is generic: warn, do not loop.
  ScopedEnv a("OPENBLAS_CORETYPE", "Prescott"), b("MT_OPENBLAS_PICKED", "Prescott"),
      c("MT_TEST_OPENBLAS_PICKED", std::nullopt);
  const StartedRun run = metatrain("guard");
  ASSERT_EQ(run.r.exit_code, 0) << run.r.output;
  EXPECT_EQ(run.core, "Prescott") << run.line;
  EXPECT_NE(run.r.output.find("did not take effect. Fix: export OPENBLAS_CORETYPE=" + kBest),
            std::string::npos)
      << run.r.output;
}

}  // namespace
}  // namespace mt
