// Benchmark of the meta-batch reduction (not a test; run under mpirun with 1, 2, 4 ranks): the
// per-step cost of dist.reduce = float (float sum over this rank's tasks, pack, float
// allreduce, unpack) against dist.reduce = exact (fixed-point accumulation, pack_exact, int64
// allreduce, unpack_exact) on host buffers of Conv-4's (and, with --resnet12, ResNet-12's) size.
// The meta-batch of B tasks is split modulo over the ranks; each rank sums its tasks of a
// batched buffer as MetaStep does. Rank 0 prints one Markdown table row per (model, logging or
// not) with the median over --reps steps. The last column times a cheaper encoding of the same
// exact sum that is not in the trainer: one int64 per element instead of two limbs, possible
// when every rank's accumulator v satisfies N·|v| < 2^63 (checked by one more allreduce_max;
// the values here do not satisfy it, so only its time is measured, not its result).
//   mpirun -n N build/bin/bench_reduce [--tasks B] [--reps R] [--threads T] [--resnet12]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "core/exact_sum.h"
#include "core/meta_step.h"
#include "dist/mpi_comm.h"
#include "models/conv4.h"
#include "models/resnet12.h"

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Timing {
  double sum_ms, comm_ms, total_ms;
  size_t bytes;
};

enum class Encoding { kFloat, kExact, kExactOneLimb };

// The one-limb encoding's collective: whether every accumulator fits (allreduce_max of a
// flag), then the low 64 bits of each accumulator and the per-task slots in one int64
// allreduce. Its result is right only when the flag says so; here it is only timed.
template <typename T>
void one_limb_allreduce(mt::dist::Comm& comm, const mt::MetaStepSums<T>& s, bool with_fo_gap) {
  constexpr size_t kStats = mt::MetaStepSums<T>::kTaskStats;
  const size_t d = s.grad_fixed.size(), n = (with_fo_gap ? 2 : 1) * d;
  const size_t tasks = s.task_owned.size();
  const mt::Fixed bound = (static_cast<mt::Fixed>(1) << 63) / comm.size();  // N·|v| < 2^63
  std::vector<int64_t> packed(n + (kStats + 1) * tasks);
  int64_t misfit = 0;
  for (size_t j = 0; j < n; ++j) {
    const mt::Fixed v = j < d ? s.grad_fixed[j] : s.gap_fixed[j - d];
    misfit |= (v >= bound || v <= -bound) ? 1 : 0;
    packed[j] = static_cast<int64_t>(v);
  }
  int64_t* p = packed.data() + n;  // the per-task slots, as pack_exact writes them
  for (size_t t = 0; t < tasks; ++t, p += kStats + 1) {
    if (s.task_owned[t]) std::memcpy(p, &s.task_stats[t * kStats], kStats * sizeof(double));
    p[kStats] = s.task_owned[t];
  }
  comm.allreduce_max(&misfit, 1);
  comm.allreduce_sum(packed.data(), packed.size());
  std::vector<T> out(n);  // unpacked as unpack_exact does, from one limb
  for (size_t j = 0; j < n; ++j) out[j] = mt::fixed_to_real<T>(static_cast<mt::Fixed>(packed[j]));
  volatile T sink = out[n - 1];
  (void)sink;
}

// One step's reduction `reps` times; medians of the local sum, the collective (with pack and
// unpack) and their total.
Timing time_reduction(mt::dist::Comm& comm, const mt::ParamLayout& layout, int tasks,
                      Encoding encoding, bool with_fo_gap, int reps, int threads) {
  const bool exact = encoding != Encoding::kFloat;
  const int64_t d = layout.total();
  std::vector<int64_t> mine;
  for (int t = comm.rank(); t < tasks; t += comm.size()) mine.push_back(t);
  const int local = std::max<int>(1, static_cast<int>(mine.size()));
  const mt::BatchedLayout batch(layout, local);
  std::vector<float> g(static_cast<size_t>(batch.total()));
  for (size_t i = 0; i < g.size(); ++i)
    g[i] = 1e-3f * static_cast<float>((i * 2654435761u) % 2001) - 1.0f;
  const auto exact_ops = mt::make_host_exact_sum_ops<float>(threads);
  const mt::VecOps<float>& ops = mt::host_vec_ops<float>();
  std::vector<double> sum_s, comm_s, total_s;
  size_t bytes = 0;
  for (int rep = 0; rep < reps + 2; ++rep) {
    mt::MetaStepSums<float> s;
    if (exact)
      s.reset_exact(d, tasks);
    else
      s.reset(d);
    comm.barrier();
    const double t0 = now();
    if (!mine.empty()) {
      if (exact) {
        exact_ops->sum_tasks(batch, g.data(), s.grad_fixed.data());
        if (with_fo_gap) exact_ops->sum_tasks(batch, g.data(), s.gap_fixed.data());
        for (int64_t t : mine) s.task_owned[t] = 1;
      } else {
        ops.sum_tasks(batch, g.data(), s.grad.data());
        if (with_fo_gap) ops.sum_tasks(batch, g.data(), s.fo_gap.data());
      }
    }
    const double t1 = now();
    if (encoding == Encoding::kExactOneLimb) {
      one_limb_allreduce(comm, s, with_fo_gap);
      bytes = ((with_fo_gap ? 2 : 1) * d + (mt::MetaStepSums<float>::kTaskStats + 1) * tasks) *
              sizeof(int64_t);
    } else if (exact) {
      std::vector<int64_t> packed = s.pack_exact(with_fo_gap);
      bytes = packed.size() * sizeof(int64_t);
      comm.allreduce_sum(packed.data(), packed.size());
      s.unpack_exact(packed, with_fo_gap);
    } else {
      std::vector<float> packed = s.pack(with_fo_gap);
      bytes = packed.size() * sizeof(float);
      comm.allreduce_sum(packed.data(), packed.size());
      s.unpack(packed, with_fo_gap);
    }
    const double t2 = now();
    if (rep < 2) continue;  // warm-up
    // The step waits for the slowest rank.
    int64_t us[3] = {static_cast<int64_t>(1e6 * (t1 - t0)), static_cast<int64_t>(1e6 * (t2 - t1)),
                     static_cast<int64_t>(1e6 * (t2 - t0))};
    comm.allreduce_max(us, 3);
    sum_s.push_back(us[0] * 1e-3);
    comm_s.push_back(us[1] * 1e-3);
    total_s.push_back(us[2] * 1e-3);
  }
  return {median(sum_s), median(comm_s), median(total_s), bytes};
}

}  // namespace

int main(int argc, char** argv) {
  int tasks = 8, reps = 15, threads = 1;
  bool resnet12 = false;
  for (int i = 1; i < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--resnet12") {
      resnet12 = true;
      --i;
    } else if (i + 1 >= argc) {
      std::fprintf(stderr, "bench_reduce: %s needs a value\n", k.c_str());
      return 2;
    } else if (k == "--tasks")
      tasks = std::atoi(argv[i + 1]);
    else if (k == "--reps")
      reps = std::atoi(argv[i + 1]);
    else if (k == "--threads")
      threads = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr,
                   "usage: bench_reduce [--tasks B] [--reps R] [--threads T] [--resnet12]\n");
      return 2;
    }
  }
  mt::dist::MpiComm comm;
  struct Case {
    const char* name;
    mt::ParamLayout layout;
  };
  std::vector<Case> cases;
  for (auto [name, input, filters] :
       {std::tuple{"Omniglot Conv-4, 64 filters", mt::Shape{1, 28, 28}, 64},
        std::tuple{"Mini-ImageNet Conv-4, 32 filters", mt::Shape{3, 84, 84}, 32}}) {
    mt::Conv4Spec spec;
    spec.input = input;
    spec.filters = filters;
    spec.ways = 5;
    cases.push_back({name, mt::make_conv4<float>(spec)->layout()});
  }
  if (resnet12)
    cases.push_back({"Mini-ImageNet ResNet-12", mt::make_resnet12<float>({})->layout()});
  for (const Case& c : cases) {
    for (bool fo_gap : {false, true}) {
      Timing t[3];
      for (Encoding e : {Encoding::kFloat, Encoding::kExact, Encoding::kExactOneLimb})
        t[static_cast<int>(e)] = time_reduction(comm, c.layout, tasks, e, fo_gap, reps, threads);
      if (comm.rank() == 0)
        std::printf(
            "| %s | %lld | %d | %d | %s | %.3f + %.3f = %.3f | %.3f + %.3f = %.3f | %.2f | %.2f "
            "| %.3f + %.3f = %.3f, %.2f MB |\n",
            c.name, static_cast<long long>(c.layout.total()), comm.size(), tasks,
            fo_gap ? "yes" : "no", t[0].sum_ms, t[0].comm_ms, t[0].total_ms, t[1].sum_ms,
            t[1].comm_ms, t[1].total_ms, t[0].bytes / 1e6, t[1].bytes / 1e6, t[2].sum_ms,
            t[2].comm_ms, t[2].total_ms, t[2].bytes / 1e6);
    }
  }
  return 0;
}
