// Which CPU kernels run: the OpenBLAS core type that the CPU's feature flags allow (never its
// model name, which VMs mask), a restart with OPENBLAS_CORETYPE before main when OpenBLAS picked
// a slower one, the line programs print at start, and the runtime dispatch of our own loops.
#pragma once

#include <string>
#include <string_view>

// Our hot element-wise loops are compiled for AVX-512, AVX2 + FMA and baseline x86-64; the
// loader picks one clone per function from cpuid (GCC function multi-versioning; other
// compilers, e.g. the clang of the fuzz build, get the baseline loops only).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MT_DISPATCH_CLONES_ON 1
#define MT_DISPATCH_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MT_DISPATCH_CLONES
#endif

namespace mt {

// The feature flags (cpuid, named as in /proc/cpuinfo) that decide OpenBLAS's kernels.
struct CpuFlags {
  bool avx = false, avx2 = false, fma = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false, avx512_bf16 = false;
};

// This machine's flags (all false off x86-64).
CpuFlags cpu_flags();

// Instruction sets of OpenBLAS's x86-64 kernels, slowest first.
enum class SimdTier { kBaseline, kAvx, kAvx2, kAvx512 };
const char* tier_name(SimdTier t);  // "SSE3", "AVX", "AVX2", "AVX-512"

// The fastest OpenBLAS core type the flags allow: Cooperlake (AVX-512 F+BW+VL+DQ and BF16; the
// SGEMM of SkylakeX, and OpenBLAS's own pick on such CPUs), SkylakeX (AVX-512 F+BW+VL+DQ),
// Haswell (AVX2 + FMA), Sandybridge (AVX), else Prescott.
const char* best_blas_core(const CpuFlags& f);

// The instruction set of an OpenBLAS core name (any case); kBaseline for names not listed.
SimdTier blas_core_tier(std::string_view core);

// What start-up sees, and what it does about it (plan_blas_core).
struct BlasStartup {
  std::string picked;        // the core OpenBLAS chose at load (openblas_get_corename)
  std::string coretype;      // $OPENBLAS_CORETYPE, "" when unset or empty
  bool restarted = false;    // we already restarted once (guard variable present)
  bool dynamic_arch = true;  // this OpenBLAS honours OPENBLAS_CORETYPE (DYNAMIC_ARCH build)
};
struct BlasPlan {
  enum Action { kKeep, kRestart, kWarn } action = kKeep;
  std::string core;     // kRestart: the OPENBLAS_CORETYPE to restart with
  std::string warning;  // kWarn: the message, naming the fix
};

// Keep OpenBLAS's pick when it is as fast as the flags allow; else restart with the best core
// when the user did not choose one and no restart happened yet; else warn with the fix.
BlasPlan plan_blas_core(const CpuFlags& flags, const BlasStartup& s);

// Runs before main in every binary that links BLAS (core/blas.cpp): carries out plan_blas_core
// for this process. A restart execs /proc/self/exe with the same argv and environment plus
// OPENBLAS_CORETYPE and the guard MT_OPENBLAS_PICKED (OpenBLAS's first pick); the pid stays,
// so mpirun, srun, ctest and popen see one process. Warnings go to stderr (lead rank only).
// Test seam: MT_TEST_OPENBLAS_PICKED=<core> stands for OpenBLAS's pick before a restart.
void choose_blas_kernels();

// "cpu kernels: OpenBLAS Cooperlake (AVX-512), own loops AVX-512 (runtime dispatch)", plus how
// the OpenBLAS core came about when a restart or the user chose it.
std::string cpu_kernels_line();

// Prints cpu_kernels_line() on stderr, once per job (not on MPI/Slurm ranks other than 0).
void print_cpu_kernels_line();

}  // namespace mt
