// Benchmark of the meta-batch reduction (not a test; run under mpirun with 1, 2, 4 ranks): the
// per-step cost of dist.reduce = float (float sum over this rank's tasks, pack, float
// allreduce, unpack) against dist.reduce = exact (fixed-point accumulation, pack_exact, int64
// allreduce, unpack_exact) on host buffers of Conv-4's size. The meta-batch of B tasks is split
// modulo over the ranks; each rank sums its tasks of a batched buffer as MetaStep does. Rank 0
// prints one Markdown table row per (model, logging or not) with the median over --reps steps.
//   mpirun -n N build/bin/bench_reduce [--tasks B] [--reps R] [--threads T]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/exact_sum.h"
#include "core/meta_step.h"
#include "dist/mpi_comm.h"
#include "models/conv4.h"

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

// One step's reduction `reps` times; medians of the local sum, the collective (with pack and
// unpack) and their total.
Timing time_reduction(mt::dist::Comm& comm, const mt::ParamLayout& layout, int tasks, bool exact,
                      bool with_fo_gap, int reps, int threads) {
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
    if (exact) {
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
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--tasks")
      tasks = std::atoi(argv[i + 1]);
    else if (k == "--reps")
      reps = std::atoi(argv[i + 1]);
    else if (k == "--threads")
      threads = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "usage: bench_reduce [--tasks B] [--reps R] [--threads T]\n");
      return 2;
    }
  }
  mt::dist::MpiComm comm;
  struct Case {
    const char* name;
    mt::Conv4Spec spec;
  };
  std::vector<Case> cases = {{"Omniglot Conv-4, 64 filters", {}},
                             {"Mini-ImageNet Conv-4, 32 filters", {}}};
  cases[0].spec.input = {1, 28, 28};
  cases[0].spec.filters = 64;
  cases[1].spec.input = {3, 84, 84};
  cases[1].spec.filters = 32;
  for (Case& c : cases) {
    c.spec.ways = 5;
    const auto model = mt::make_conv4<float>(c.spec);
    for (bool fo_gap : {false, true}) {
      const Timing f = time_reduction(comm, model->layout(), tasks, false, fo_gap, reps, threads);
      const Timing e = time_reduction(comm, model->layout(), tasks, true, fo_gap, reps, threads);
      if (comm.rank() == 0)
        std::printf(
            "| %s | %lld | %d | %d | %s | %.3f + %.3f = %.3f | %.3f + %.3f = %.3f | %.2f | %.2f "
            "|\n",
            c.name, static_cast<long long>(model->layout().total()), comm.size(), tasks,
            fo_gap ? "yes" : "no", f.sum_ms, f.comm_ms, f.total_ms, e.sum_ms, e.comm_ms, e.total_ms,
            f.bytes / 1e6, e.bytes / 1e6);
    }
  }
  return 0;
}
