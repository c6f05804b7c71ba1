// Benchmark of episode streaming (not a test): episodes/s drawn directly on one thread and through
// EpisodeStream with 1 and 2 producer threads, for each residency of the store (data.resident:
// off = HDF5 per image, host = gathered from memory; device = indices only + the GPU gather, when
// a GPU is usable), for Omniglot (a packed store given by --omniglot), a synthetic
// Mini-ImageNet-shaped store and the built-in glyphs; 5-way 1-shot 15 queries, B = 32 tasks per
// step. JSON lines (one per row) go to stdout, the table and notes to stderr.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "core/check.h"
#include "core/device.h"
#include "data/episode_store.h"
#include "data/episode_stream.h"
#include "data/glyphs.h"
#include "launch/metrics_log.h"
#include "models/batched_net.h"  // pack_rows
#if defined(MT_WITH_CUDA)
#include "core/cuda_check.h"  // the device rows' buffers
#endif

namespace {

using mt::Episode;
using mt::EpisodeSource;
using mt::EpisodeSpec;

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Row {
  std::string set_up, source, mode, draw;
  int threads = 1, depth = 0, tasks_per_step = 0;
  int64_t episodes = 0;
  double seconds = 0, open_seconds = 0;
};

// Takes whole steps of `tasks_per_step` episodes through take_step(step) for `warmup` seconds,
// then times whole steps until at least `min_seconds` have passed.
template <typename TakeStep>
void time_steps(TakeStep&& take_step, int tasks_per_step, double warmup, double min_seconds,
                Row& row) {
  int64_t step = 0;
  for (const double t0 = now(); now() - t0 < warmup;) take_step(step++);
  const double t1 = now();
  do {
    take_step(step++);
    row.episodes += tasks_per_step;
    row.seconds = now() - t1;
  } while (row.seconds < min_seconds);
}

// `after_step(eps)` runs on the consumer once a step's episodes are all taken (the device rows'
// GPU gather); empty for the others.
using AfterStep = std::function<void(const std::vector<const Episode<float>*>&)>;

Row run_direct(Row row, const EpisodeSource& source, const EpisodeSpec& spec, double warmup,
               double min_seconds, const AfterStep& after_step) {
  row.draw = "direct";
  std::vector<Episode<float>> eps(row.tasks_per_step);
  std::vector<const Episode<float>*> ptrs;
  for (const auto& ep : eps) ptrs.push_back(&ep);
  time_steps(
      [&](int64_t step) {
        for (int t = 0; t < row.tasks_per_step; ++t) source.sample(spec, 0, step, t, eps[t]);
        if (after_step) after_step(ptrs);
      },
      row.tasks_per_step, warmup, min_seconds, row);
  return row;
}

Row run_stream(Row row, const EpisodeSource& source, const EpisodeSpec& spec, int threads,
               double warmup, double min_seconds, const AfterStep& after_step) {
  row.draw = "stream";
  row.threads = threads;
  std::vector<int64_t> tasks(row.tasks_per_step);
  for (int t = 0; t < row.tasks_per_step; ++t) tasks[t] = t;
  mt::EpisodeStream stream(source, spec, 0, tasks, 0, std::numeric_limits<int64_t>::max(),
                           {threads, 0});
  row.depth = static_cast<int>(stream.capacity());
  std::vector<Episode<float>> eps(row.tasks_per_step);
  std::vector<const Episode<float>*> ptrs;
  for (const auto& ep : eps) ptrs.push_back(&ep);
  time_steps(
      [&](int64_t step) {
        for (int t = 0; t < row.tasks_per_step; ++t) stream.take(step, t, eps[t]);
        if (after_step) after_step(ptrs);
      },
      row.tasks_per_step, warmup, min_seconds, row);
  return row;
}

#if defined(MT_WITH_CUDA)
// The device path's consumer per step: pack_rows of both splits, the indices up to the GPU and
// gather_rows into float rows there, waited for (what the CUDA backend's batch loader would do).
class DeviceGather {
 public:
  DeviceGather(const mt::DeviceImages& images, int64_t max_rows)
      : images_(images),
        rows_host_(max_rows),
        y_(max_rows),
        rows_(max_rows),
        x_(max_rows * images.shape().item()) {}
  void operator()(const std::vector<const Episode<float>*>& eps) {
    for (mt::Split s : {mt::Split::kSupport, mt::Split::kQuery}) {
      const int64_t rows = int64_t{s == mt::Split::kSupport ? eps[0]->support.n : eps[0]->query.n} *
                           static_cast<int64_t>(eps.size());
      mt::pack_rows(eps, s, rows_host_.data(), y_.data());
      rows_.copy_from_host(rows_host_.data(), rows);
      images_.gather_rows(rows_.data(), rows, x_.data(), nullptr);
    }
    MT_CUDA_CHECK(cudaDeviceSynchronize());
  }

 private:
  const mt::DeviceImages& images_;
  std::vector<int64_t> rows_host_;
  std::vector<int32_t> y_;
  mt::DeviceBuffer<int64_t> rows_;
  mt::DeviceBuffer<float> x_;
};
#endif

// A temporary file, removed however the scope is left.
struct RemoveOnExit {
  std::string path;
  ~RemoveOnExit() {
    std::error_code ignored;
    if (!path.empty()) std::filesystem::remove(path, ignored);
  }
};

// 64 classes x 600 images of 84x84x3 bytes from a xorshift generator, all in the train split.
void write_synthetic_mini(const std::string& path) {
  mt::StoreContents c;
  c.dataset = "miniimagenet";
  c.height = c.width = 84;
  c.channels = 3;
  const int classes = 64, per_class = 600;
  c.images.resize(static_cast<size_t>(classes) * per_class * c.image_bytes());
  uint64_t x = 0x9e3779b97f4a7c15ull;
  for (size_t i = 0; i < c.images.size(); i += 8) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    for (size_t b = 0; b < 8 && i + b < c.images.size(); ++b)
      c.images[i + b] = static_cast<uint8_t>(x >> (8 * b));
  }
  c.class_offsets.push_back(0);
  for (int k = 0; k < classes; ++k) {
    c.labels.insert(c.labels.end(), per_class, k);
    c.class_offsets.push_back(c.class_offsets.back() + per_class);
    c.class_names.push_back("synthetic" + std::to_string(k));
    c.splits["train"].push_back(k);
  }
  c.string_attrs["created_by"] = "bench_stream (synthetic random bytes)";
  mt::write_store(path, c);
}

// One JSON line; `origin` ("" for none) says where the Mini-ImageNet-shaped store came from.
void print(const Row& r, const std::string& origin) {
  auto fixed = [](double x, int decimals) {
    const double scale = std::pow(10.0, decimals);
    return std::round(x * scale) / scale;
  };
  mt::JsonObject line;
  line.add("bench", "stream")
      .add("set_up", r.set_up)
      .add("mode", r.mode)
      .add("draw", r.draw)
      .add("threads", r.threads)
      .add("depth", r.depth)
      .add("tasks_per_step", r.tasks_per_step)
      .add("episodes", static_cast<double>(r.episodes))
      .add("seconds", fixed(r.seconds, 3))
      .add("episodes_per_s", fixed(r.episodes / r.seconds, 1))
      .add("open_s", fixed(r.open_seconds, 3))
      .add("source", r.source)
      .add("cores", std::thread::hardware_concurrency());
  if (!origin.empty()) line.add("store", origin);
  std::printf("%s\n", line.str().c_str());
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  std::string omniglot, mini;
  double seconds = 2, warmup = 0.5;
  int max_threads = 2;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "--help" || k == "-h" || i + 1 >= argc) {
      std::fprintf(stderr,
                   "usage: bench_stream [--omniglot FILE.h5] [--mini FILE.h5] [--seconds S]"
                   " [--warmup S] [--threads 1|2]\n  --mini: a Mini-ImageNet store to read; when"
                   " the file does not exist a synthetic one\n  (64 x 600 random 84x84x3 images)"
                   " is written there and kept; default a temporary file.\n  --threads: the"
                   " most producer threads of the stream rows (1 under taskset -c 0).\n");
      return k == "--help" || k == "-h" ? 0 : 2;
    }
    const std::string v = argv[++i];
    if (k == "--omniglot")
      omniglot = v;
    else if (k == "--mini")
      mini = v;
    else if (k == "--seconds")
      seconds = std::atof(v.c_str());
    else if (k == "--warmup")
      warmup = std::atof(v.c_str());
    else if (k == "--threads")
      max_threads = std::atoi(v.c_str());
    else {
      std::fprintf(stderr, "bench_stream: unknown option %s (see --help)\n", k.c_str());
      return 2;
    }
  }

  const EpisodeSpec spec{"train", 5, 1, 15};
  const int tasks_per_step = 32;
  std::vector<Row> rows;
  // Every draw (direct, stream with 1..max_threads producers) of one source in one mode.
  auto bench = [&](Row base, const EpisodeSource& source, const std::string& origin,
                   const AfterStep& after_step) {
    base.source = source.name();
    base.tasks_per_step = tasks_per_step;
    std::fprintf(stderr, "%s, %s: %s\n", base.set_up.c_str(), base.mode.c_str(),
                 source.name().c_str());
    rows.push_back(run_direct(base, source, spec, warmup, seconds, after_step));
    print(rows.back(), origin);
    for (int threads = 1; threads <= max_threads; ++threads) {
      rows.push_back(run_stream(base, source, spec, threads, warmup, seconds, after_step));
      print(rows.back(), origin);
    }
  };
  // A store in each mode, side by side: off (HDF5 per image), host (gathered from memory),
  // indices (labels and sources only: the producer of device mode, no GPU needed) and device
  // (indices + the GPU gather, when a GPU is usable). Then the write bound: memset of the
  // episodes' float bytes, the most any producer of float episodes can do on this core.
  auto bench_store = [&](const std::string& set_up, const std::string& path,
                         const std::string& origin) {
    struct Mode {
      const char* name;
      mt::StoreOptions options;
      bool indices_only;
    };
    const Mode modes[] = {{"off", {mt::Residency::kOff}, false},
                          {"host", {mt::Residency::kHost}, false},
                          {"indices", {mt::Residency::kOff}, true},
                          {"device", {mt::Residency::kDevice, true}, true}};
    int64_t floats_per_episode = 0;
    for (const Mode& mode : modes) {
      Row base;
      base.set_up = set_up;
      base.mode = mode.name;
      const bool device = mode.options.residency == mt::Residency::kDevice;
      if (device && mt::gpu_count() == 0) {
        std::fprintf(stderr, "%s, device: skipped (no GPU: %s)\n", set_up.c_str(),
                     mt::describe_devices().c_str());
        continue;
      }
      if (device) mt::select_gpu(0);
      const double t0 = now();
      mt::EpisodeStore store(path, mode.options);
      store.set_indices_only(mode.indices_only);
      AfterStep after_step;
#if defined(MT_WITH_CUDA)
      std::unique_ptr<DeviceGather> gather;
      if (device) {
        gather = std::make_unique<DeviceGather>(store.device_images(),
                                                int64_t{tasks_per_step} * spec.ways * spec.queries);
        after_step = [&gather](const auto& eps) { (*gather)(eps); };
      }
#endif
      base.open_seconds = now() - t0;
      bench(base, store, origin, after_step);
      floats_per_episode = store.image_shape().size() * spec.ways * (spec.shots + spec.queries);
    }
    Row bound;
    bound.set_up = set_up;
    bound.mode = "write bound";
    bound.draw = "memset";
    bound.tasks_per_step = tasks_per_step;
    bound.source = "memset of the floats of B episodes";
    std::vector<std::vector<float>> xs(tasks_per_step,
                                       std::vector<float>(static_cast<size_t>(floats_per_episode)));
    time_steps(
        [&](int64_t step) {
          for (auto& x : xs) std::memset(x.data(), static_cast<int>(step & 1), x.size() * 4);
        },
        tasks_per_step, warmup, seconds, bound);
    rows.push_back(bound);
    print(rows.back(), origin);
  };

  try {
    if (omniglot.empty() || !std::filesystem::exists(omniglot)) {
      std::fprintf(
          stderr, "omniglot: skipped (%s)\n",
          omniglot.empty() ? "no --omniglot FILE.h5 given" : ("no file " + omniglot).c_str());
    } else {
      bench_store("omniglot 5-way 1-shot 15-query B=32", omniglot, "");
    }

    std::string mini_path = mini, mini_origin = "given";
    RemoveOnExit temporary;
    if (mini.empty() || !std::filesystem::exists(mini)) {
      if (mini.empty()) {
        mini_path = (std::filesystem::temp_directory_path() /
                     ("bench_stream_mini_" + std::to_string(::getpid()) + ".h5"))
                        .string();
        temporary.path = mini_path;
      }
      std::fprintf(stderr,
                   "mini-imagenet: writing a SYNTHETIC store (64 classes x 600 random 84x84x3 "
                   "images, 813 MB) to %s%s\n",
                   mini_path.c_str(), temporary.path.empty() ? "" : " (removed at exit)");
      const double t0 = now();
      write_synthetic_mini(mini_path);
      std::fprintf(stderr, "  written in %.1f s\n", now() - t0);
      mini_origin = "synthetic random bytes";
    }
    bench_store("miniimagenet-shaped 5-way 1-shot 15-query B=32", mini_path, mini_origin);

    const mt::GlyphSource glyphs;
    Row base;
    base.set_up = "glyphs 5-way 1-shot 15-query B=32";
    base.mode = "generated";
    bench(base, glyphs, "", {});
  } catch (const mt::Error& e) {
    std::fprintf(stderr, "bench_stream: %s\n", e.what());
    return static_cast<int>(e.code());
  }

  std::fprintf(
      stderr,
      "\n| set-up | mode | draw | threads | depth | open s | episodes | s | episodes/s |\n");
  std::fprintf(stderr, "|---|---|---|---|---|---|---|---|---|\n");
  for (const Row& r : rows)
    std::fprintf(stderr, "| %s | %s | %s | %d | %d | %.2f | %lld | %.2f | %.1f |\n",
                 r.set_up.c_str(), r.mode.c_str(), r.draw.c_str(), r.threads, r.depth,
                 r.open_seconds, static_cast<long long>(r.episodes), r.seconds,
                 r.episodes / r.seconds);
  return 0;
}
