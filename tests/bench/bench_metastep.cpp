// Benchmark of one meta-iteration (not a test): B tasks of an N-way K-shot episode (Omniglot
// 28×28×1 glyphs, or Mini-ImageNet-shaped 84×84×3 noise) through Conv-4 or ResNet-12 and the
// chosen algorithm on the CPU or CUDA backend, the sum, and one Adam step. Prints one JSON line:
// seconds per iteration (median), tasks/s, peak RSS, peak device memory (cuda: peak_device_mib,
// measured as the PyTorch reference measures it, see DeviceMemorySampler), and on the CPU GEMM
// GFLOP/s, the fraction of this machine's measured SGEMM peak and the activation memory per
// task that metatrain's start-up line predicts (Sequential::activation_bytes). The GFLOP/s count
// every convolution as its direct GEMM: Winograd passes do fewer multiplications, so with them
// the fraction can pass 1 (it is the speed of the direct arithmetic, not of the machine). The model and the
// backend are built as metatrain builds them (make_model, make_backend). Run each configuration
// in its own process so that peak memory belongs to it alone (tests/bench/run_cpu_bench.sh,
// run_memory_bench.sh, run_gpu_bench.sh do).
#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/blas.h"
#include "core/cpu_kernels.h"
#include "core/device.h"
#include "core/meta_step.h"
#include "core/optimizer.h"
#include "data/glyphs.h"
#include "launch/backend.h"
#include "launch/config.h"
#include "launch/exit_codes.h"
#include "launch/metrics_log.h"
#include "launch/trainer.h"
#include "models/sequential.h"
#include "tests/support/episodes.h"

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Achievable FP32 peak: a large multi-threaded SGEMM (OpenBLAS) on all `threads` cores.
double sgemm_peak_gflops(int threads) {
  const int n = 1536;
  std::vector<float> a(n * n, 1.0f), b(n * n, 0.5f), c(n * n);
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    const double t0 = now();
#pragma omp parallel num_threads(threads)
    {
      // Each thread multiplies its own row block: per-thread BLAS stays single-threaded.
      const int tid = omp_get_thread_num(), rows = n / threads;
      mt::gemm<float>(false, false, rows, n, n, 1.0f, a.data() + tid * rows * n, n, b.data(), n,
                      0.0f, c.data() + tid * rows * n, n);
    }
    best = std::max(best, 2.0 * n * n * n / (now() - t0) / 1e9);
  }
  return best;
}

// The process's device memory in use, as tests/bench/reference/torch_metastep.py measures it
// (the same quantity on the same schedule, named by kMemoryMethod in both): cudaMemGetInfo's
// total − free, the maximum over a thread sampling every 5 ms during the timed iterations and a
// reading after each; the caller subtracts the reading taken right after context creation.
const char* kMemoryMethod =
    "cudaMemGetInfo total-free: max over the timed iterations (5 ms sampler thread + after "
    "each), minus the same right after context creation";

class DeviceMemorySampler {
 public:
  explicit DeviceMemorySampler(int gpu) : gpu_(gpu) {}
  ~DeviceMemorySampler() { stop(); }
  void start() {
    thread_ = std::thread([this] {
      try {
        mt::select_gpu(gpu_);  // the current device is per thread
        while (!stop_) {
          sample();
          std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(mutex_);
        error_ = e.what();
      }
    });
  }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  void sample() {
    const size_t used = mt::gpu_memory_used();
    std::lock_guard<std::mutex> lock(mutex_);
    peak_ = std::max(peak_, used);
    ++samples_;
  }
  size_t peak() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return peak_;
  }
  int samples() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return samples_;
  }
  std::string error() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return error_;
  }

 private:
  const int gpu_;
  std::atomic<bool> stop_{false};
  mutable std::mutex mutex_;
  size_t peak_ = 0;
  int samples_ = 0;
  std::string error_;
  std::thread thread_;
};

// The input shape for make_backend, which reads nothing else of the source (the episodes come
// ready-made: glyphs, or noise of the Mini-ImageNet shape).
class ShapeOnlySource final : public mt::EpisodeSource {
 public:
  explicit ShapeOnlySource(mt::Shape s) : shape_(s) {}
  std::string name() const override { return "bench"; }
  mt::Shape image_shape() const override { return shape_; }
  int64_t num_classes(const std::string&) const override { return 0; }
  int min_examples_per_class(const std::string&) const override { return 0; }
  void validate(const mt::EpisodeSpec&) const override {}
  void sample(const mt::EpisodeSpec&, uint64_t, uint64_t, uint64_t,
              mt::Episode<float>&) const override {
    throw mt::Error(mt::ExitCode::kRuntime, "bench: ShapeOnlySource draws no episodes");
  }

 private:
  mt::Shape shape_;
};

const char* kUsage =
    "usage: bench_metastep [--device cpu|cuda] [--dataset omniglot|miniimagenet] [--model "
    "conv4|resnet12] [--widths A,B,C,D] [--algo maml|fomaml|ufom] [--q Q] [--r R] [--trajectory "
    "store|recompute|checkpoint:C] [--B B] [--ways N] [--shots K] [--queries Q] [--filters F] "
    "[--iters I] [--warmup W] [--threads T] [--graphs 0|1]\n"
    "  --filters: Conv-4's width (default 64); --widths: ResNet-12's (default 64,160,320,640)\n";

// "64,160,320,640" -> {64, 160, 320, 640}; an empty vector when an entry is not a positive int.
std::vector<int> parse_widths(const std::string& text) {
  std::vector<int> out;
  size_t at = 0;
  while (at <= text.size()) {
    const size_t end = std::min(text.find(',', at), text.size());
    const std::string item = text.substr(at, end - at);
    char* stop = nullptr;
    const long w = std::strtol(item.c_str(), &stop, 10);
    if (item.empty() || *stop != '\0' || w < 1) return {};
    out.push_back(static_cast<int>(w));
    at = end + 1;
  }
  return out;
}

int run(int argc, char** argv) {
  if (argc == 2 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
    std::printf("%s", kUsage);
    return 0;
  }
  if (argc % 2 == 0) {
    std::fprintf(stderr, "%s", kUsage);
    return 2;
  }
  std::string algo = "maml", trajectory = "store", device = "cpu", dataset = "omniglot";
  std::string model_name = "conv4", widths_text = "64,160,320,640";
  bool graphs = true;
  int r = 1, B = 32, ways = 5, shots = 1, queries = 15, filters = 64, iters = 3, warmup = 1;
  int threads = omp_get_num_procs();
  double q = 0.1;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--algo")
      algo = v;
    else if (k == "--trajectory")
      trajectory = v;
    else if (k == "--r")
      r = std::atoi(v.c_str());
    else if (k == "--B")
      B = std::atoi(v.c_str());
    else if (k == "--ways")
      ways = std::atoi(v.c_str());
    else if (k == "--shots")
      shots = std::atoi(v.c_str());
    else if (k == "--queries")
      queries = std::atoi(v.c_str());
    else if (k == "--filters")
      filters = std::atoi(v.c_str());
    else if (k == "--iters")
      iters = std::atoi(v.c_str());
    else if (k == "--warmup")
      warmup = std::atoi(v.c_str());
    else if (k == "--threads")
      threads = std::atoi(v.c_str());
    else if (k == "--q")
      q = std::atof(v.c_str());
    else if (k == "--device")
      device = v;
    else if (k == "--dataset")
      dataset = v;
    else if (k == "--graphs")
      graphs = v != "0";
    else if (k == "--model")
      model_name = v;
    else if (k == "--widths")
      widths_text = v;
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  const std::vector<int> widths = parse_widths(widths_text);
  if ((device != "cpu" && device != "cuda") ||
      (dataset != "omniglot" && dataset != "miniimagenet") ||
      (model_name != "conv4" && model_name != "resnet12") || widths.size() != 4) {
    std::fprintf(stderr, "%s", kUsage);
    return 2;
  }
  const bool cuda = device == "cuda";
  mt::print_cpu_kernels_line();
  mt::blas_use_single_thread();
  const double peak = cuda ? 0.0 : sgemm_peak_gflops(threads);

  mt::GlyphSource source;
  const mt::EpisodeSpec spec{"train", ways, shots, queries};
  const mt::Shape input = dataset == "omniglot" ? source.image_shape() : mt::Shape{3, 84, 84};
  // The model and the backend as metatrain builds them from these settings.
  mt::Config cfg;
  cfg.device = cuda ? mt::Config::Device::kCuda : mt::Config::Device::kCpu;
  cfg.model.name = model_name;
  cfg.model.filters = filters;
  cfg.model.widths = model_name == "conv4" ? std::vector<int>{filters} : widths;
  cfg.model.activation = model_name == "conv4" ? "relu" : "leaky_relu";
  cfg.model.pool = mt::Config::Model::Pool::kMax;
  cfg.task = {ways, shots, queries};
  cfg.meta_batch = B;
  cfg.cuda.graphs = graphs;
  auto model = mt::make_model(cfg, input);
  const int64_t d = model->layout().total();
  std::vector<float> theta(d);
  model->init(theta.data(), 0);
  mt::InnerLoop inner;
  inner.steps = r;
  inner.trajectory = mt::parse_trajectory(trajectory);
  // Baseline: right after the context exists, before the backend's first allocation.
  size_t device_baseline = 0;
  const ShapeOnlySource shape_source(input);  // outlives the backend, as make_backend asks
  if (cuda) {
    mt::select_gpu(0);
    device_baseline = mt::gpu_memory_used();  // creates the primary context if not yet there
  }
  const std::unique_ptr<mt::BatchedModel<float>> backend =
      mt::make_backend(cfg, *model, shape_source, 0, threads);
  mt::MetaStep<float> step(*backend, inner, {mt::parse_algo(algo), 0, threads});
  mt::Adam<float> adam(d, 1e-3);
  std::vector<int64_t> tasks(B);
  for (int t = 0; t < B; ++t) tasks[t] = t;
  // Episodes are sampled before timing (the reference gets its data ready-made too).
  const int n_iter = warmup + iters;
  std::vector<std::vector<mt::Episode<float>>> eps(n_iter, std::vector<mt::Episode<float>>(B));
  for (int it = 0; it < n_iter; ++it)
    for (int t = 0; t < B; ++t)
      if (dataset == "omniglot")
        source.sample(spec, 0, it, t, eps[it][t]);
      else
        eps[it][t] = mt::testing::noise_episode<float>(input, ways, shots, queries, it * B + t);

  mt::MetaStepSums<float> sums;
  std::vector<double> secs;
  uint64_t flops = 0;
  double exact = 0;
  DeviceMemorySampler memory(0);
  for (int it = 0; it < n_iter; ++it) {
    if (cuda && it == warmup) memory.start();
    const uint64_t f0 = mt::gemm_flops();
    const double t0 = now();
    sums.reset(d);
    step.run(
        theta.data(), it, tasks, [&](int64_t t, mt::Episode<float>& ep) { ep = eps[it][t]; }, q,
        sums);
    for (float& g : sums.grad) g /= B;
    adam.step(theta.data(), sums.grad.data());
    if (it >= warmup) {
      secs.push_back(now() - t0);
      flops += mt::gemm_flops() - f0;
      exact += sums.exact_tasks;
      if (cuda) memory.sample();  // the step has finished: its gradient is on the host
    }
  }
  memory.stop();
  std::sort(secs.begin(), secs.end());
  const double med = secs[secs.size() / 2];
  double total = 0;
  for (double s : secs) total += s;
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  const size_t device_peak = memory.peak();
  const double device_mib =
      device_peak > device_baseline ? (device_peak - device_baseline) / 1048576.0 : 0.0;
  const double gflops = flops / total / 1e9;
  // What metatrain's start-up line predicts for one task in flight (the CPU's per-task model).
  const auto* seq = dynamic_cast<const mt::Sequential<float>*>(model.get());
  const double activations_mib =
      cuda || !seq
          ? 0.0
          : seq->activation_bytes(ways * std::max(shots, queries), ways * shots, algo != "fomaml") /
                1048576.0;
  // Rounded to the digits worth reading: the line then prints without noise.
  auto fixed = [](double x, int decimals) {
    const double scale = std::pow(10.0, decimals);
    return std::round(x * scale) / scale;
  };
  mt::JsonObject line;
  line.add("impl", "ours")
      .add("device", device)
      .add("dataset", dataset)
      .add("model", model_name)
      .add("widths", model_name == "conv4" ? std::to_string(filters) : widths_text)
      .add("ways", ways)
      .add("shots", shots)
      .add("queries", queries)
      .add("algo", algo)
      .add("trajectory", trajectory)
      .add("r", r)
      .add("B", B)
      .add("sec_per_iter", fixed(med, 4))
      .add("tasks_per_s", fixed(B / med, 2))
      .add("peak_rss_mb", fixed(ru.ru_maxrss / 1024.0, 1))
      .add("peak_mem_bytes", std::round(cuda ? device_mib * 1048576.0 : ru.ru_maxrss * 1024.0))
      .add("gemm_gflops", fixed(gflops, 1))
      .add("sgemm_peak_gflops", fixed(peak, 1))
      .add("peak_fraction", fixed(cuda ? 0.0 : gflops / peak, 3))
      .add("activations_mib_per_task", fixed(activations_mib, 1))
      .add("exact_tasks_per_iter", fixed(exact / iters, 2))
      .add("params", static_cast<double>(d))
      .add("threads", threads)
      .add("blas_core", mt::blas_core_name());
  if (cuda) {
    line.add("peak_device_mib", fixed(device_mib, 1))
        .add("baseline_device_mib", fixed(device_baseline / 1048576.0, 1))
        .add("memory_method", memory.error().empty() ? std::string(kMemoryMethod)
                                                     : std::string(kMemoryMethod) +
                                                           " (sampler failed: " + memory.error() +
                                                           "; after-each readings only)")
        .add("memory_samples", memory.samples());
  }
  std::printf("%s\n", line.str().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return mt::guarded_main("bench_metastep", nullptr, [&] { return run(argc, argv); });
}
