// The choice of CPU kernels (core/cpu_kernels.h) as pure functions: feature flags → OpenBLAS
// core, core name → instruction set, and the start-up plan (keep, restart, warn) over a table
// of situations; plus this machine's flags read by cpuid against /proc/cpuinfo.
#include "core/cpu_kernels.h"

#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <sstream>
#include <string>

namespace mt {
namespace {

CpuFlags flags_of(const std::set<std::string>& names) {
  CpuFlags f;
  f.avx = names.count("avx") > 0;
  f.avx2 = names.count("avx2") > 0;
  f.fma = names.count("fma") > 0;
  f.avx512f = names.count("avx512f") > 0;
  f.avx512bw = names.count("avx512bw") > 0;
  f.avx512vl = names.count("avx512vl") > 0;
  f.avx512dq = names.count("avx512dq") > 0;
  f.avx512_bf16 = names.count("avx512_bf16") > 0;
  return f;
}

const std::set<std::string> kAvx2 = {"avx", "avx2", "fma"};
const std::set<std::string> kAvx512 = {"avx",      "avx2",     "fma",     "avx512f",
                                       "avx512bw", "avx512vl", "avx512dq"};

TEST(CpuKernels, BestCoreFollowsTheFlagsOverATable) {
  struct Row {
    std::set<std::string> flags;
    const char* core;
  };
  std::set<std::string> bf16 = kAvx512, no_dq = kAvx512, f_only = kAvx2;
  bf16.insert("avx512_bf16");
  no_dq.erase("avx512dq");
  f_only.insert("avx512f");
  std::set<std::string> bf16_no_bw = bf16;
  bf16_no_bw.erase("avx512bw");
  const Row rows[] = {
      {{}, "Prescott"},
      {{"avx"}, "Sandybridge"},
      {{"avx", "avx2"}, "Sandybridge"},  // AVX2 without FMA: OpenBLAS's Haswell kernels need FMA
      {{"avx", "fma"}, "Sandybridge"},
      {kAvx2, "Haswell"},
      {f_only, "Haswell"},  // AVX-512 F alone is not enough for SkylakeX's kernels
      {no_dq, "Haswell"},
      {kAvx512, "SkylakeX"},
      {bf16, "Cooperlake"},
      {bf16_no_bw, "Haswell"},
  };
  for (const Row& r : rows) {
    std::string names;
    for (const std::string& n : r.flags) names += n + " ";
    EXPECT_STREQ(best_blas_core(flags_of(r.flags)), r.core) << "flags: " << names;
  }
}

TEST(CpuKernels, CoreNamesMapToTheirInstructionSet) {
  EXPECT_EQ(blas_core_tier("Cooperlake"), SimdTier::kAvx512);
  EXPECT_EQ(blas_core_tier("SkylakeX"), SimdTier::kAvx512);
  EXPECT_EQ(blas_core_tier("skylakex"), SimdTier::kAvx512);  // OPENBLAS_CORETYPE is any case
  EXPECT_EQ(blas_core_tier("Haswell"), SimdTier::kAvx2);
  EXPECT_EQ(blas_core_tier("Zen"), SimdTier::kAvx2);
  EXPECT_EQ(blas_core_tier("Sandybridge"), SimdTier::kAvx);
  EXPECT_EQ(blas_core_tier("Excavator"), SimdTier::kAvx);
  for (const char* slow : {"Prescott", "Core2", "Nehalem", "Unknown", "", "Haswel"})
    EXPECT_EQ(blas_core_tier(slow), SimdTier::kBaseline) << slow;
  // Every core best_blas_core names sits at the tier its flags promise.
  EXPECT_EQ(blas_core_tier(best_blas_core(flags_of(kAvx512))), SimdTier::kAvx512);
  EXPECT_EQ(blas_core_tier(best_blas_core(flags_of(kAvx2))), SimdTier::kAvx2);
}

TEST(CpuKernels, StartupPlanOverATable) {
  std::set<std::string> bf16 = kAvx512;
  bf16.insert("avx512_bf16");
  struct Row {
    const char* what;
    std::set<std::string> flags;
    BlasStartup s;
    BlasPlan::Action action;
    std::string core_or_text;  // the restart core, or a phrase of the warning
  };
  const Row rows[] = {
      {"generic pick, nothing set",
       bf16,
       {"Prescott", "", false, true},
       BlasPlan::kRestart,
       "Cooperlake"},
      {"Haswell pick on AVX-512",
       kAvx512,
       {"Haswell", "", false, true},
       BlasPlan::kRestart,
       "SkylakeX"},
      {"best pick", bf16, {"Cooperlake", "", false, true}, BlasPlan::kKeep, ""},
      {"same tier", bf16, {"SkylakeX", "", false, true}, BlasPlan::kKeep, ""},
      {"Zen on AVX2", kAvx2, {"Zen", "", false, true}, BlasPlan::kKeep, ""},
      {"faster than flags", kAvx2, {"SkylakeX", "SkylakeX", false, true}, BlasPlan::kKeep, ""},
      {"no AVX at all", {}, {"Prescott", "", false, true}, BlasPlan::kKeep, ""},
      {"user forced generic",
       bf16,
       {"Prescott", "Prescott", false, true},
       BlasPlan::kWarn,
       "OPENBLAS_CORETYPE=Prescott is set. Fix: unset OPENBLAS_CORETYPE, or export "
       "OPENBLAS_CORETYPE=Cooperlake"},
      {"restart did not help",
       bf16,
       {"Prescott", "Cooperlake", true, true},
       BlasPlan::kWarn,
       "did not take effect. Fix: export OPENBLAS_CORETYPE=Cooperlake"},
      {"guard without variable",
       kAvx2,
       {"Prescott", "", true, true},
       BlasPlan::kWarn,
       "export OPENBLAS_CORETYPE=Haswell"},
      {"single-CPU OpenBLAS",
       kAvx2,
       {"Prescott", "", false, false},
       BlasPlan::kWarn,
       "DYNAMIC_ARCH"},
  };
  for (const Row& r : rows) {
    const BlasPlan p = plan_blas_core(flags_of(r.flags), r.s);
    EXPECT_EQ(p.action, r.action) << r.what;
    if (r.action == BlasPlan::kRestart) EXPECT_EQ(p.core, r.core_or_text) << r.what;
    if (r.action == BlasPlan::kWarn)
      EXPECT_NE(p.warning.find(r.core_or_text), std::string::npos) << r.what << ": " << p.warning;
    if (r.action != BlasPlan::kWarn) EXPECT_TRUE(p.warning.empty()) << r.what;
  }
}

TEST(CpuKernels, CpuidFlagsMatchProcCpuinfo) {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line) && line.rfind("flags", 0) != 0) {
  }
  if (line.empty()) GTEST_SKIP() << "no flags line in /proc/cpuinfo";
  std::set<std::string> names;
  std::istringstream words(line.substr(line.find(':') + 1));
  for (std::string w; words >> w;) names.insert(w);
  const CpuFlags f = cpu_flags(), expected = flags_of(names);
  EXPECT_EQ(f.avx, expected.avx);
  EXPECT_EQ(f.avx2, expected.avx2);
  EXPECT_EQ(f.fma, expected.fma);
  EXPECT_EQ(f.avx512f, expected.avx512f);
  EXPECT_EQ(f.avx512bw, expected.avx512bw);
  EXPECT_EQ(f.avx512vl, expected.avx512vl);
  EXPECT_EQ(f.avx512dq, expected.avx512dq);
  EXPECT_EQ(f.avx512_bf16, expected.avx512_bf16);
}

}  // namespace
}  // namespace mt
