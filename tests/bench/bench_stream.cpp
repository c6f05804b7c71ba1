// Benchmark of episode streaming (not a test): episodes/s taken through EpisodeStream with 1 and
// 2 producer threads, next to direct single-threaded source.sample, for Omniglot (a packed store
// given by --omniglot), a synthetic Mini-ImageNet-shaped store and the built-in glyphs.
// JSON lines (one per configuration) go to stdout, the table and notes to stderr.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "core/check.h"
#include "data/episode_store.h"
#include "data/episode_stream.h"
#include "data/glyphs.h"
#include "launch/metrics_log.h"

namespace {

using mt::Episode;
using mt::EpisodeSource;
using mt::EpisodeSpec;

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Row {
  std::string config, source, mode;
  int threads = 1, depth = 0, tasks_per_step = 0;
  int64_t episodes = 0;
  double seconds = 0;
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

Row run_direct(const std::string& config, const EpisodeSource& source, const EpisodeSpec& spec,
               int tasks_per_step, double warmup, double min_seconds) {
  Row row{config, source.name(), "direct", 1, 0, tasks_per_step};
  Episode<float> ep;
  time_steps(
      [&](int64_t step) {
        for (int t = 0; t < tasks_per_step; ++t) source.sample(spec, 0, step, t, ep);
      },
      tasks_per_step, warmup, min_seconds, row);
  return row;
}

Row run_stream(const std::string& config, const EpisodeSource& source, const EpisodeSpec& spec,
               int tasks_per_step, int threads, double warmup, double min_seconds) {
  std::vector<int64_t> tasks(tasks_per_step);
  for (int t = 0; t < tasks_per_step; ++t) tasks[t] = t;
  mt::EpisodeStream stream(source, spec, 0, tasks, 0, std::numeric_limits<int64_t>::max(),
                           {threads, 0});
  Row row{config,        source.name(), "stream", threads, static_cast<int>(stream.capacity()),
          tasks_per_step};
  Episode<float> ep;
  time_steps(
      [&](int64_t step) {
        for (int t = 0; t < tasks_per_step; ++t) stream.take(step, t, ep);
      },
      tasks_per_step, warmup, min_seconds, row);
  return row;
}

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
      .add("config", r.config)
      .add("source", r.source)
      .add("mode", r.mode)
      .add("threads", r.threads)
      .add("depth", r.depth)
      .add("tasks_per_step", r.tasks_per_step)
      .add("episodes", static_cast<double>(r.episodes))
      .add("seconds", fixed(r.seconds, 3))
      .add("episodes_per_s", fixed(r.episodes / r.seconds, 1))
      .add("cores", std::thread::hardware_concurrency());
  if (!origin.empty()) line.add("store", origin);
  std::printf("%s\n", line.str().c_str());
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  std::string omniglot, mini;
  double seconds = 2, warmup = 0.5;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "--help" || k == "-h" || i + 1 >= argc) {
      std::fprintf(stderr,
                   "usage: bench_stream [--omniglot FILE.h5] [--mini FILE.h5] [--seconds S]"
                   " [--warmup S]\n  --mini: a Mini-ImageNet store to read; when the file does"
                   " not exist a synthetic one\n  (64 x 600 random 84x84x3 images) is written"
                   " there and kept; default a temporary file.\n");
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
    else {
      std::fprintf(stderr, "bench_stream: unknown option %s (see --help)\n", k.c_str());
      return 2;
    }
  }

  std::vector<Row> rows;
  auto bench = [&](const std::string& config, const EpisodeSource& source, int tasks_per_step,
                   const std::string& origin) {
    const EpisodeSpec spec{"train", 5, 1, 15};
    std::fprintf(stderr, "%s: %s, %d tasks per step\n", config.c_str(), source.name().c_str(),
                 tasks_per_step);
    rows.push_back(run_direct(config, source, spec, tasks_per_step, warmup, seconds));
    print(rows.back(), origin);
    for (int threads : {1, 2}) {
      rows.push_back(run_stream(config, source, spec, tasks_per_step, threads, warmup, seconds));
      print(rows.back(), origin);
    }
  };

  try {
    if (omniglot.empty() || !std::filesystem::exists(omniglot)) {
      std::fprintf(
          stderr, "omniglot: skipped (%s)\n",
          omniglot.empty() ? "no --omniglot FILE.h5 given" : ("no file " + omniglot).c_str());
    } else {
      const mt::EpisodeStore store(omniglot);
      bench("omniglot 5w1s15q B=32", store, 32, "");
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
    {
      const mt::EpisodeStore store(mini_path);
      bench("mini-imagenet-shaped 5w1s15q B=4", store, 4, mini_origin);
    }

    const mt::GlyphSource glyphs;
    bench("glyphs 5w1s15q B=32", glyphs, 32, "");
  } catch (const mt::Error& e) {
    std::fprintf(stderr, "bench_stream: %s\n", e.what());
    return static_cast<int>(e.code());
  }

  std::fprintf(stderr, "\n| config | mode | threads | depth | episodes | s | episodes/s |\n");
  std::fprintf(stderr, "|---|---|---|---|---|---|---|\n");
  for (const Row& r : rows)
    std::fprintf(stderr, "| %s | %s | %d | %d | %lld | %.2f | %.1f |\n", r.config.c_str(),
                 r.mode.c_str(), r.threads, r.depth, static_cast<long long>(r.episodes), r.seconds,
                 r.episodes / r.seconds);
  return 0;
}
