// Start-up choice of the CPU kernels (core/cpu_kernels.h): flags → best OpenBLAS core, the
// restart with OPENBLAS_CORETYPE, the warnings and the start-up line.
#include "core/cpu_kernels.h"

#include <strings.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <vector>

#include "core/blas.h"

namespace mt {

namespace {

constexpr const char* kCoretype = "OPENBLAS_CORETYPE";
constexpr const char* kGuard = "MT_OPENBLAS_PICKED";
constexpr const char* kTestPicked = "MT_TEST_OPENBLAS_PICKED";

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::string(v) : std::string();
}

// Rank 0 of an MPI or Slurm job, or not a job: the process that speaks for all.
bool lead_process() {
  for (const char* var : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"}) {
    const std::string v = env(var);
    if (!v.empty()) return v == "0";
  }
  return true;
}

// The clone of our loops that the loader picks: the tests of the MT_DISPATCH_CLONES resolvers.
const char* own_loops_isa() {
#if defined(MT_DISPATCH_CLONES_ON)
  if (__builtin_cpu_supports("x86-64-v4")) return "AVX-512";
  if (__builtin_cpu_supports("x86-64-v3")) return "AVX2";
#endif
  return "SSE2";
}

// The command line of this process, as it was exec'd.
std::vector<std::string> own_argv() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  const std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> args;
  for (size_t start = 0; start < all.size();) {
    const size_t end = all.find('\0', start);
    args.push_back(all.substr(start, end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return args;
}

// Execs this binary again with OPENBLAS_CORETYPE=core; returns only on failure (errno text).
std::string restart_with(const std::string& core, const std::string& picked) {
  std::vector<std::string> args = own_argv();
  if (args.empty()) return "cannot read /proc/self/cmdline";
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  setenv(kCoretype, core.c_str(), 1);
  setenv(kGuard, picked.c_str(), 1);
  std::fflush(nullptr);
  execv("/proc/self/exe", argv.data());
  const std::string why = std::strerror(errno);
  unsetenv(kCoretype);  // not the user's choice: children pick for themselves
  return why;
}

}  // namespace

CpuFlags cpu_flags() {
  CpuFlags f;
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  f.avx = __builtin_cpu_supports("avx");
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  f.avx512f = __builtin_cpu_supports("avx512f");
  f.avx512bw = __builtin_cpu_supports("avx512bw");
  f.avx512vl = __builtin_cpu_supports("avx512vl");
  f.avx512dq = __builtin_cpu_supports("avx512dq");
  f.avx512_bf16 = __builtin_cpu_supports("avx512bf16");
#endif
  return f;
}

const char* tier_name(SimdTier t) {
  switch (t) {
    case SimdTier::kAvx512:
      return "AVX-512";
    case SimdTier::kAvx2:
      return "AVX2";
    case SimdTier::kAvx:
      return "AVX";
    case SimdTier::kBaseline:
      break;
  }
  return "SSE3";
}

const char* best_blas_core(const CpuFlags& f) {
  if (f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq)
    return f.avx512_bf16 ? "Cooperlake" : "SkylakeX";
  if (f.avx2 && f.fma) return "Haswell";
  if (f.avx) return "Sandybridge";
  return "Prescott";
}

SimdTier blas_core_tier(std::string_view core) {
  struct Entry {
    const char* name;
    SimdTier tier;
  };
  // OpenBLAS 0.3's x86-64 DYNAMIC_ARCH targets above SSE3; Zen runs the Haswell kernels, the
  // AMD Bulldozer family its own AVX/FMA4 ones.
  static const Entry kCores[] = {{"SapphireRapids", SimdTier::kAvx512},
                                 {"Cooperlake", SimdTier::kAvx512},
                                 {"SkylakeX", SimdTier::kAvx512},
                                 {"Haswell", SimdTier::kAvx2},
                                 {"Zen", SimdTier::kAvx2},
                                 {"Sandybridge", SimdTier::kAvx},
                                 {"Bulldozer", SimdTier::kAvx},
                                 {"Piledriver", SimdTier::kAvx},
                                 {"Steamroller", SimdTier::kAvx},
                                 {"Excavator", SimdTier::kAvx}};
  for (const Entry& e : kCores)
    if (core.size() == std::strlen(e.name) && strncasecmp(core.data(), e.name, core.size()) == 0)
      return e.tier;
  return SimdTier::kBaseline;
}

BlasPlan plan_blas_core(const CpuFlags& flags, const BlasStartup& s) {
  const std::string best = best_blas_core(flags);
  const SimdTier want = blas_core_tier(best), have = blas_core_tier(s.picked);
  BlasPlan plan;
  if (have >= want) return plan;
  const std::string slow = "OpenBLAS runs its " + s.picked + " (" + tier_name(have) +
                           ") kernels on a CPU with " + tier_name(want) + " (" + best +
                           " kernels, several times faster): ";
  plan.action = BlasPlan::kWarn;
  if (!s.coretype.empty() && !s.restarted) {
    plan.warning = slow + kCoretype + "=" + s.coretype + " is set. Fix: unset " + kCoretype +
                   ", or export " + kCoretype + "=" + best;
  } else if (!s.dynamic_arch) {
    plan.warning = slow + "this OpenBLAS is built for one CPU and ignores " + kCoretype +
                   ". Fix: use a DYNAMIC_ARCH OpenBLAS (Debian's libopenblas0-pthread)";
  } else if (s.restarted) {
    plan.warning = slow + "a restart with " + kCoretype + "=" + best +
                   " did not take effect. Fix: export " + kCoretype + "=" + best;
  } else {
    plan.action = BlasPlan::kRestart;
    plan.core = best;
  }
  return plan;
}

void choose_blas_kernels() {
  BlasStartup s;
  s.restarted = std::getenv(kGuard) != nullptr;
  s.picked = blas_core_name();
  if (!s.restarted && !env(kTestPicked).empty()) s.picked = env(kTestPicked);
  s.coretype = env(kCoretype);
  s.dynamic_arch = blas_honours_coretype();
  const CpuFlags flags = cpu_flags();
  BlasPlan plan = plan_blas_core(flags, s);
  if (plan.action == BlasPlan::kRestart) {
    const std::string why = restart_with(plan.core, s.picked);
    plan.action = BlasPlan::kWarn;
    plan.warning = "OpenBLAS runs its " + s.picked + " kernels on a CPU with " +
                   tier_name(blas_core_tier(plan.core)) + ", and restarting with " + kCoretype +
                   "=" + plan.core + " failed (" + why + "). Fix: export " + kCoretype + "=" +
                   plan.core;
  }
  if (plan.action == BlasPlan::kWarn && lead_process())
    std::fprintf(stderr, "\n*** WARNING: slow CPU kernels. %s\n\n", plan.warning.c_str());
}

std::string cpu_kernels_line() {
  const std::string core = blas_core_name();
  std::string line = "cpu kernels: OpenBLAS " + core + " (" + tier_name(blas_core_tier(core)) +
                     "), own loops " + own_loops_isa() + " (runtime dispatch)";
  const std::string coretype = env(kCoretype), picked = env(kGuard);
  if (!coretype.empty() && !picked.empty())
    line += "; restarted with " + std::string(kCoretype) + "=" + coretype +
            " (OpenBLAS had picked " + picked + ")";
  else if (!coretype.empty())
    line += "; " + std::string(kCoretype) + "=" + coretype + " set by the user";
  const char* best = best_blas_core(cpu_flags());
  if (blas_core_tier(core) < blas_core_tier(best))
    line += "; SLOWER than this CPU allows (" + std::string(best) + ")";
  return line;
}

void print_cpu_kernels_line() {
  if (lead_process()) std::fprintf(stderr, "%s\n", cpu_kernels_line().c_str());
}

}  // namespace mt
