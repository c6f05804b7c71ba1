// Cost model of distributed meta-training on 8–512 GPUs (a benchmark tool, no GPU needed): bytes
// and time of the ring allreduce, compute-vs-communication efficiency, and UFOM load imbalance
// of modulo vs balanced task assignment with the real ξ draws. Inputs: constants/flags below.
//   build/bin/scaling_model [--steps 500] [--seed 0] [--alpha-us 5] [--gpu-task-ms 5]
//                           [--cpu-task-ms 70.22] [--stats 7]
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/meta_gradient.h"
#include "core/ufom.h"
#include "dist/task_assignment.h"
#include "models/conv4.h"

namespace {

// ---- Inputs (constants; the ones marked "flag" can be overridden on the command line). ----
// Ranks (= GPUs) modelled.
const std::vector<int> kRanks = {8, 16, 32, 64, 128, 256, 512};
// Link bandwidths in GB/s (1e9 bytes/s): NVLink-class intra-node, InfiniBand HDR 200 Gb/s and
// 100 Gb/s inter-node. A ring spanning nodes runs at its slowest link, so 150 GB/s applies to
// N <= 8 (one node of 8 GPUs) only; it is shown for all N as the best case.
const std::vector<double> kBandwidthGBs = {150.0, 25.0, 12.5};
// Tasks per rank per step; meta_batch = N x k.
const std::vector<int> kTasksPerRank = {1, 4, 16};
// UFOM: exact-path probabilities and inner steps r.
const std::vector<double> kQ = {0.05, 0.1, 0.3};
const std::vector<int> kInnerSteps = {1, 5, 10};

struct Settings {
  int steps = 500;        // flag --steps: simulated outer steps per UFOM configuration
  uint64_t seed = 0;      // flag --seed: UFOM draws ξ = ufom_takes_exact(seed, step, task, q)
  double alpha_us = 5.0;  // flag --alpha-us: per-message latency α of one ring hop
  // flag --gpu-task-ms: ASSUMED time of one Omniglot 5-way 1-shot MAML r=1 task on one GPU
  // (small kernels, launch-bound; not measured in this repository).
  double gpu_task_ms = 5.0;
  // flag --cpu-task-ms: MEASURED time per task on a 2-core CPU rank, MAML r=1, Omniglot 5-way
  // 1-shot, B=32: 2.247 s / 32 tasks (tests/bench/RESULTS.md, 2026-11-23).
  double cpu_task_ms = 2247.0 / 32;
  // flag --stats: scalars packed after the vectors (loss, acc, tasks, exact_tasks, v2, d2,
  // grad_evals: MetaStepSums::pack in core/meta_step.cpp).
  int stats = 7;
};

struct ModelCase {
  const char* name;
  mt::Conv4Spec spec;
  int64_t d = 0;
  double conv_macs = 0;  // multiply-adds of the four convolutions per image (forward)
};

// Forward multiply-adds of Conv-4's convolutions for one image: 3x3 "same" convolutions, each
// followed by a 2x2 max-pool (floor). Used only to scale per-task time between the two shapes.
double conv4_macs(const mt::Conv4Spec& s) {
  double macs = 0;
  int c = s.input.c, h = s.input.h, w = s.input.w;
  for (int layer = 0; layer < 4; ++layer) {
    macs += static_cast<double>(h) * w * c * 9 * s.filters;
    c = s.filters;
    h /= 2;
    w /= 2;
  }
  return macs;
}

// Ring allreduce: 2(N−1) steps, each moving bytes/N over one link and paying latency α.
double ring_allreduce_s(int n, double bytes, double bw_gbs, double alpha_s) {
  return 2.0 * (n - 1) / n * bytes / (bw_gbs * 1e9) + 2.0 * (n - 1) * alpha_s;
}

// Tree allreduce (reduce + broadcast along a binary tree, pipelined): latency 2·log2(N)·α with
// the same bandwidth term as the ring; what NCCL switches to for small messages at large N.
double tree_allreduce_s(int n, double bytes, double bw_gbs, double alpha_s) {
  return 2.0 * bytes / (bw_gbs * 1e9) + 2.0 * std::log2(static_cast<double>(n)) * alpha_s;
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

void print_bytes(const std::vector<ModelCase>& models, const Settings& st) {
  std::printf("## Bytes per allreduce (float32)\n\n");
  std::printf(
      "As implemented, one allreduce carries Σ g_t (d), Σ (g_E − g_F) over exact tasks (d, for "
      "the logged fo_bias) and %d scalars; \"gradient only\" drops the second vector.\n\n",
      st.stats);
  std::printf(
      "| model | d | as implemented: 2d + %d floats | MB | gradient only: d + %d floats | MB |\n",
      st.stats, st.stats);
  std::printf("| --- | --- | --- | --- | --- | --- |\n");
  for (const auto& m : models) {
    const double full = 2.0 * m.d + st.stats, grad = 1.0 * m.d + st.stats;
    std::printf("| %s | %lld | %.0f | %.3f | %.0f | %.3f |\n", m.name, static_cast<long long>(m.d),
                full, 4 * full / 1e6, grad, 4 * grad / 1e6);
  }
  std::printf("\n");
}

// dist.reduce = exact (core/exact_sum.h) against float: the exact reduction sends every
// element as two int64 limbs (16 bytes instead of 4) and every task's statistics in its own
// slot, (kTaskStats + 1) = 7 int64 per task of the meta-batch, so its size grows with B = N·k.
void print_exact_reduction(const std::vector<ModelCase>& models, const Settings& st) {
  constexpr int kSlot = 7;  // MetaStepSums::kTaskStats + the owner count
  const double alpha = st.alpha_us * 1e-6;
  for (const auto& m : models) {
    std::printf(
        "## Bytes per step: dist.reduce = float vs exact, %s (d = %lld)\n\n"
        "float: 4·(d + %d) bytes, on logging steps 4·(2d + %d) (fo_gap); exact: 8·(2d + %d·B), on "
        "logging steps 8·(4d + %d·B), B = N·k tasks. Ring time at 25 GB/s, α = %.1f µs, "
        "non-logging step.\n\n",
        m.name, static_cast<long long>(m.d), st.stats, st.stats, kSlot, kSlot, st.alpha_us);
    std::printf("| N | k | float MB | exact MB | float, logging MB | exact, logging MB | "
                "ratio | float ms | exact ms |\n");
    std::printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for (int n : kRanks)
      for (int k : {1, 16}) {
        const double b = static_cast<double>(n) * k;
        const double f = 4.0 * (m.d + st.stats), fl = 4.0 * (2.0 * m.d + st.stats);
        const double e = 8.0 * (2.0 * m.d + kSlot * b), el = 8.0 * (4.0 * m.d + kSlot * b);
        std::printf("| %d | %d | %.3f | %.3f | %.3f | %.3f | %.2f | %.3f | %.3f |\n", n, k, f / 1e6,
                    e / 1e6, fl / 1e6, el / 1e6, e / f, 1e3 * ring_allreduce_s(n, f, 25.0, alpha),
                    1e3 * ring_allreduce_s(n, e, 25.0, alpha));
      }
    std::printf("\n");
  }
}

void print_allreduce(const std::vector<ModelCase>& models, const Settings& st) {
  const double alpha = st.alpha_us * 1e-6;
  for (const auto& m : models) {
    const double bytes = 4.0 * (2.0 * m.d + st.stats);
    std::printf(
        "## Ring allreduce time, %s, %.3f MB (as implemented), α = %.1f µs\n\n"
        "T = 2(N−1)/N · bytes/BW + 2(N−1)·α, in ms; last columns: the latency part alone and a "
        "binary tree (2·log2 N·α + 2·bytes/BW) at 25 GB/s for comparison.\n\n",
        m.name, bytes / 1e6, st.alpha_us);
    std::printf("| N |");
    for (double bw : kBandwidthGBs) std::printf(" ring @ %g GB/s |", bw);
    std::printf(" latency 2(N−1)α | tree @ 25 GB/s |\n|");
    for (size_t i = 0; i < kBandwidthGBs.size() + 3; ++i) std::printf(" --- |");
    std::printf("\n");
    for (int n : kRanks) {
      std::printf("| %d |", n);
      for (double bw : kBandwidthGBs)
        std::printf(" %.3f |", 1e3 * ring_allreduce_s(n, bytes, bw, alpha));
      std::printf(" %.3f | %.3f |\n", 1e3 * 2.0 * (n - 1) * alpha,
                  1e3 * tree_allreduce_s(n, bytes, 25.0, alpha));
    }
    std::printf("\n");
  }
}

void print_efficiency(const ModelCase& m, const char* what, double task_s, const Settings& st) {
  const double alpha = st.alpha_us * 1e-6, bytes = 4.0 * (2.0 * m.d + st.stats);
  std::printf(
      "## Efficiency compute / (compute + ring allreduce), %s, %s: %.2f ms per task\n\n"
      "Compute per step = k tasks per rank x per-task time; no overlap of compute and "
      "communication; meta_batch = N x k.\n\n",
      m.name, what, 1e3 * task_s);
  std::printf("| N |");
  for (int k : kTasksPerRank)
    for (double bw : kBandwidthGBs) std::printf(" k=%d @ %g GB/s |", k, bw);
  std::printf("\n|");
  for (size_t i = 0; i < kTasksPerRank.size() * kBandwidthGBs.size() + 1; ++i)
    std::printf(" --- |");
  std::printf("\n");
  for (int n : kRanks) {
    std::printf("| %d |", n);
    for (int k : kTasksPerRank)
      for (double bw : kBandwidthGBs) {
        const double compute = k * task_s, comm = ring_allreduce_s(n, bytes, bw, alpha);
        std::printf(" %.1f%% |", 100 * compute / (compute + comm));
      }
    std::printf("\n");
  }
  std::printf("\n");
}

// UFOM load imbalance: over `steps` steps, with the real draws and the real assignments, the
// mean of (max-rank cost / mean-rank cost) for modulo and balanced assignment.
void print_imbalance(const Settings& st) {
  struct Cost {
    int r;
    mt::TrajectoryMode::Kind mode;
    double fo, exact;
  };
  std::printf(
      "## UFOM load imbalance: mean over %d steps of max-rank cost / mean-rank cost\n\n"
      "Task cost in gradient evaluations as the trainer predicts it (an HVP counts as one): "
      "C_F = first_order_cost = r + 1, plus C_E = exact_path_cost when ξ_t = 1 "
      "(ufom_takes_exact(seed=%llu, step, task, q)). Cells: modulo (t mod N) / balanced "
      "(balanced_tasks, longest first). 1.00 = perfect balance; the step takes max-rank time, "
      "so 1/imbalance is the efficiency left by the imbalance.\n\n",
      st.steps, static_cast<unsigned long long>(st.seed));
  const int max_b = kRanks.back() * kTasksPerRank.back();
  for (auto mode : {mt::TrajectoryMode::kStore, mt::TrajectoryMode::kRecompute}) {
    std::vector<Cost> costs;
    for (int r : kInnerSteps) {
      mt::InnerLoop inner;
      inner.steps = r;
      inner.trajectory.kind = mode;
      costs.push_back({r, mode, static_cast<double>(mt::first_order_cost(inner)),
                       static_cast<double>(mt::exact_path_cost(inner))});
    }
    for (int k : kTasksPerRank) {
      // sum[q][r][n][assignment]
      std::vector<double> sum(kQ.size() * costs.size() * kRanks.size() * 2, 0.0);
      auto at = [&](size_t qi, size_t ri, size_t ni, int a) -> double& {
        return sum[((qi * costs.size() + ri) * kRanks.size() + ni) * 2 + a];
      };
      for (size_t qi = 0; qi < kQ.size(); ++qi)
        for (int s = 0; s < st.steps; ++s) {
          std::vector<char> xi(max_b);
          for (int t = 0; t < max_b; ++t)
            xi[t] = mt::ufom_takes_exact(st.seed, static_cast<uint64_t>(s),
                                         static_cast<uint64_t>(t), kQ[qi]);
          for (size_t ni = 0; ni < kRanks.size(); ++ni) {
            const int n = kRanks[ni], b = n * k;
            std::vector<std::vector<int64_t>> modulo(n);
            for (int rank = 0; rank < n; ++rank) modulo[rank] = mt::dist::modulo_tasks(b, rank, n);
            for (size_t ri = 0; ri < costs.size(); ++ri) {
              std::vector<double> cost(b);
              for (int t = 0; t < b; ++t) cost[t] = costs[ri].fo + (xi[t] ? costs[ri].exact : 0.0);
              at(qi, ri, ni, 0) += mt::dist::imbalance(modulo, cost);
              at(qi, ri, ni, 1) += mt::dist::imbalance(mt::dist::balanced_tasks(cost, n), cost);
            }
          }
        }
      std::printf("### %s, k = %d tasks per rank\n\n",
                  mode == mt::TrajectoryMode::kStore ? "store" : "recompute", k);
      std::printf("| q | r | C_F | C_E |");
      for (int n : kRanks) std::printf(" N=%d |", n);
      std::printf("\n| --- | --- | --- | --- |");
      for (size_t i = 0; i < kRanks.size(); ++i) std::printf(" --- |");
      std::printf("\n");
      for (size_t qi = 0; qi < kQ.size(); ++qi)
        for (size_t ri = 0; ri < costs.size(); ++ri) {
          std::printf("| %g | %d | %.0f | %.0f |", kQ[qi], costs[ri].r, costs[ri].fo,
                      costs[ri].exact);
          for (size_t ni = 0; ni < kRanks.size(); ++ni)
            std::printf(" %.2f / %.2f |", at(qi, ri, ni, 0) / st.steps,
                        at(qi, ri, ni, 1) / st.steps);
          std::printf("\n");
        }
      std::printf("\n");
      std::fflush(stdout);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  Settings st;
  for (int i = 1; i < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--help" || k == "-h" || i + 1 >= argc) {
      std::fprintf(stderr,
                   "usage: scaling_model [--steps N] [--seed S] [--alpha-us A] [--gpu-task-ms T] "
                   "[--cpu-task-ms T] [--stats K]\n");
      return k == "--help" || k == "-h" ? 0 : 2;
    }
    const char* v = argv[i + 1];
    if (k == "--steps")
      st.steps = std::atoi(v);
    else if (k == "--seed")
      st.seed = std::strtoull(v, nullptr, 10);
    else if (k == "--alpha-us")
      st.alpha_us = std::atof(v);
    else if (k == "--gpu-task-ms")
      st.gpu_task_ms = std::atof(v);
    else if (k == "--cpu-task-ms")
      st.cpu_task_ms = std::atof(v);
    else if (k == "--stats")
      st.stats = std::atoi(v);
    else {
      std::fprintf(stderr, "scaling_model: unknown flag %s (see --help)\n", k.c_str());
      return 2;
    }
  }
  if (st.steps < 1) {
    std::fprintf(stderr, "scaling_model: --steps must be >= 1\n");
    return 2;
  }

  std::vector<ModelCase> models = {{"Omniglot Conv-4 (28x28x1, 64 filters)", {}},
                                   {"Mini-ImageNet Conv-4 (84x84x3, 32 filters)", {}}};
  models[0].spec.input = {1, 28, 28};
  models[0].spec.filters = 64;
  models[1].spec.input = {3, 84, 84};
  models[1].spec.filters = 32;
  for (auto& m : models) {
    m.spec.ways = 5;
    m.d = mt::make_conv4<float>(m.spec)->layout().total();
    m.conv_macs = conv4_macs(m.spec);
  }
  const double mini_scale = models[1].conv_macs / models[0].conv_macs;

  std::printf("# Cost model: distributed meta-training on 8–512 GPUs\n\n");
  std::printf(
      "Inputs: N in {8 … 512}; bandwidths 150 (NVLink-class, intra-node), 25 (InfiniBand "
      "200 Gb/s), 12.5 (100 Gb/s) GB/s; α = %.1f µs; per-task time: GPU %.2f ms (ASSUMED, "
      "Omniglot MAML r=1), CPU %.2f ms (MEASURED, 2-core rank, MAML r=1, RESULTS.md); "
      "Mini-ImageNet per-task time = Omniglot's x %.2f (ratio of conv multiply-adds per image: "
      "%.2fM vs %.2fM, ASSUMED to carry over); UFOM simulation %d steps, seed %llu.\n\n",
      st.alpha_us, st.gpu_task_ms, st.cpu_task_ms, mini_scale, models[1].conv_macs / 1e6,
      models[0].conv_macs / 1e6, st.steps, static_cast<unsigned long long>(st.seed));
  print_bytes(models, st);
  print_allreduce(models, st);
  print_exact_reduction(models, st);
  print_efficiency(models[0], "GPU (assumed)", st.gpu_task_ms / 1e3, st);
  print_efficiency(models[0], "CPU rank (measured)", st.cpu_task_ms / 1e3, st);
  print_efficiency(models[1], "GPU (assumed, scaled by MACs)", mini_scale * st.gpu_task_ms / 1e3,
                   st);
  print_imbalance(st);
  return 0;
}
