// Tests of the prefetching EpisodeStream: episodes equal direct sampling bit for bit for any
// threads, depth and consumer order (glyphs and an HDF5 store), producer errors surface in take(),
// destruction never hangs, and out-of-order takes fail with Error instead of blocking.
#include "data/episode_stream.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/check.h"
#include "data/episode_store.h"
#include "data/glyphs.h"

namespace mt {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

bool bit_identical(const Episode<float>& a, const Episode<float>& b) {
  auto same = [](const auto& u, const auto& v) {
    return u.size() == v.size() && std::memcmp(u.data(), v.data(), u.size() * sizeof(u[0])) == 0;
  };
  return a.ways == b.ways && a.support.item == b.support.item && a.support.n == b.support.n &&
         a.query.item == b.query.item && a.query.n == b.query.n && same(a.support.x, b.support.x) &&
         same(a.support.y, b.support.y) && same(a.query.x, b.query.x) && same(a.query.y, b.query.y);
}

// Runs fn and returns its duration in seconds. A hang check, not a benchmark: if fn has not
// returned after `abort_after` seconds the process aborts with a message, so a deadlock fails
// the test quickly instead of waiting for CTest's timeout.
template <typename Fn>
double seconds_to_run(Fn&& fn, double abort_after = 30) {
  std::mutex m;
  std::condition_variable cv;
  bool done = false;
  std::thread watchdog([&] {
    std::unique_lock<std::mutex> lock(m);
    if (!cv.wait_for(lock, std::chrono::duration<double>(abort_after), [&] { return done; })) {
      std::fprintf(stderr, "hang: still running after %.0f s\n", abort_after);
      std::abort();
    }
  });
  const auto t0 = Clock::now();
  fn();
  const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  {
    std::lock_guard<std::mutex> lock(m);
    done = true;
  }
  cv.notify_one();
  watchdog.join();
  return elapsed;
}

// A small store: 10 classes x 6 images of 8x8x1 random bytes; train 0-6, val 7-8, test 9.
struct TempStore {
  std::string path;
  TempStore() {
    path = (fs::temp_directory_path() /
            ("mt_episode_stream_" + std::to_string(reinterpret_cast<uintptr_t>(this)) + "_" +
             std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + ".h5"))
               .string();
    StoreContents c;
    c.dataset = "omniglot";
    c.height = c.width = 8;
    c.channels = 1;
    std::mt19937 gen(7);
    const int classes = 10, per_class = 6;
    c.images.resize(static_cast<size_t>(classes) * per_class * 64);
    for (uint8_t& b : c.images) b = static_cast<uint8_t>(gen());
    c.class_offsets.push_back(0);
    for (int k = 0; k < classes; ++k) {
      for (int j = 0; j < per_class; ++j) c.labels.push_back(k);
      c.class_offsets.push_back(c.class_offsets.back() + per_class);
      c.class_names.push_back("class" + std::to_string(k));
    }
    c.splits["train"] = {0, 1, 2, 3, 4, 5, 6};
    c.splits["val"] = {7, 8};
    c.splits["test"] = {9};
    write_store(path, c);
  }
  ~TempStore() { fs::remove(path); }
};

// Wraps a source: sample throws UsageError at one key, or sleeps before drawing.
class RiggedSource : public EpisodeSource {
 public:
  explicit RiggedSource(const EpisodeSource& inner) : inner_(inner) {}
  int64_t fail_step = -1, fail_task = -1;
  int sleep_ms = 0;
  mutable std::atomic<int> calls{0};

  std::string name() const override { return "rigged " + inner_.name(); }
  Shape image_shape() const override { return inner_.image_shape(); }
  int64_t num_classes(const std::string& split) const override { return inner_.num_classes(split); }
  int min_examples_per_class(const std::string& split) const override {
    return inner_.min_examples_per_class(split);
  }
  void validate(const EpisodeSpec& spec) const override { inner_.validate(spec); }
  void sample(const EpisodeSpec& spec, uint64_t seed, uint64_t step, uint64_t task,
              Episode<float>& ep) const override {
    ++calls;
    if (sleep_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms));
    if (static_cast<int64_t>(step) == fail_step && static_cast<int64_t>(task) == fail_task)
      throw UsageError("rigged.h5: image 42 is unreadable");
    inner_.sample(spec, seed, step, task, ep);
  }

 private:
  const EpisodeSource& inner_;
};

const std::vector<int64_t> kTasks = {3, 0, 7, 1, 5};  // distinct, neither sorted nor 0..B-1
constexpr int64_t kFirstStep = 4, kLastStep = 9;
constexpr uint64_t kSeed = 1234;

enum class Consumers { kThreads, kOpenMP };

// Streams every key of [kFirstStep, kLastStep) x kTasks, each step's tasks in a scrambled order
// taken by 3 consumer threads, and counts the episodes that differ from direct sampling.
int count_mismatches(const EpisodeSource& source, const EpisodeSpec& spec, int threads, int depth,
                     Consumers consumers) {
  EpisodeStream stream(source, spec, kSeed, kTasks, kFirstStep, kLastStep, {threads, depth});
  EXPECT_EQ(stream.capacity(), std::max<int64_t>(depth == 0 ? 2 * kTasks.size() : depth,
                                                 static_cast<int64_t>(kTasks.size())));
  std::mt19937 gen(static_cast<unsigned>(threads * 100 + depth));
  std::atomic<int> mismatches{0}, failures{0};
  auto check_one = [&](int64_t step, int64_t task, Episode<float>& got) {
    try {
      stream.take(step, task, got);
      Episode<float> want;
      source.sample(spec, kSeed, static_cast<uint64_t>(step), static_cast<uint64_t>(task), want);
      if (!bit_identical(got, want)) ++mismatches;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "take(%lld, %lld): %s\n", static_cast<long long>(step),
                   static_cast<long long>(task), e.what());
      ++failures;
    }
  };
  for (int64_t step = kFirstStep; step < kLastStep; ++step) {
    std::vector<int64_t> order = kTasks;
    std::shuffle(order.begin(), order.end(), gen);
    const int n = static_cast<int>(order.size());
    if (consumers == Consumers::kThreads) {
      std::vector<std::thread> pool;
      for (int c = 0; c < 3; ++c)
        pool.emplace_back([&, c] {
          Episode<float> got;  // reused across takes: its buffers are recycled into the ring
          for (int k = c; k < n; k += 3) check_one(step, order[k], got);
        });
      for (std::thread& t : pool) t.join();
    } else {
#pragma omp parallel for num_threads(3) schedule(dynamic, 1)
      for (int k = 0; k < n; ++k) {
        Episode<float> got;
        check_one(step, order[k], got);
      }
    }
  }
  EXPECT_EQ(failures.load(), 0);
  return mismatches.load();
}

void expect_equals_direct_sampling(const EpisodeSource& source, const EpisodeSpec& spec) {
  const int per_step = static_cast<int>(kTasks.size());
  for (int threads : {1, 3})
    for (int depth : {1, 2 * per_step, 7, 0})
      for (Consumers consumers : {Consumers::kThreads, Consumers::kOpenMP}) {
        SCOPED_TRACE(::testing::Message()
                     << source.name() << " threads " << threads << " depth " << depth
                     << (consumers == Consumers::kThreads ? " std::thread" : " OpenMP"));
        seconds_to_run(
            [&] { EXPECT_EQ(count_mismatches(source, spec, threads, depth, consumers), 0); }, 60);
      }
}

TEST(EpisodeStream, GlyphEpisodesEqualDirectSamplingForAnyThreadsDepthAndOrder) {
  const GlyphSource glyphs(5);
  expect_equals_direct_sampling(glyphs, {"train", 5, 1, 3});
}

TEST(EpisodeStream, StoreEpisodesEqualDirectSamplingForAnyThreadsDepthAndOrder) {
  const TempStore file;
  const EpisodeStore store(file.path);
  expect_equals_direct_sampling(store, {"train", 5, 1, 2});
  // The check has teeth: a different seed gives different episodes.
  Episode<float> a, b;
  store.sample({"train", 5, 1, 2}, kSeed, kFirstStep, kTasks[0], a);
  store.sample({"train", 5, 1, 2}, kSeed + 1, kFirstStep, kTasks[0], b);
  EXPECT_FALSE(bit_identical(a, b));
}

TEST(EpisodeStream, ReusedOutputBuffersOfAnotherShapeAreOverwritten) {
  const GlyphSource glyphs(5);
  const EpisodeSpec spec{"val", 3, 2, 4};
  EpisodeStream stream(glyphs, spec, kSeed, {0, 1}, 0, 2, {2, 0});
  Episode<float> out, want;
  glyphs.sample({"train", 5, 1, 1}, 9, 9, 9, out);  // a differently shaped episode
  for (int64_t step = 0; step < 2; ++step)
    for (int64_t task : {1, 0}) {
      stream.take(step, task, out);
      glyphs.sample(spec, kSeed, step, task, want);
      EXPECT_TRUE(bit_identical(out, want)) << "step " << step << " task " << task;
    }
}

TEST(EpisodeStream, InvalidSpecOrTasksFailAtConstruction) {
  const GlyphSource glyphs;
  EXPECT_THROW(EpisodeStream(glyphs, {"train", 1, 1, 1}, 0, {0}, 0, 1, {}), UsageError);
  EXPECT_THROW(EpisodeStream(glyphs, {"nope", 5, 1, 1}, 0, {0}, 0, 1, {}), UsageError);
  EXPECT_THROW(EpisodeStream(glyphs, {"train", 5, 1, 1}, 0, {}, 0, 1, {}), Error);
  EXPECT_THROW(EpisodeStream(glyphs, {"train", 5, 1, 1}, 0, {2, 2}, 0, 1, {}), Error);
  EXPECT_THROW(EpisodeStream(glyphs, {"train", 5, 1, 1}, 0, {0}, 3, 2, {}), Error);
  EXPECT_THROW(EpisodeStream(glyphs, {"train", 5, 1, 1}, 0, {0}, 0, 1, {0, 0}), Error);
}

TEST(EpisodeStream, ProducerErrorIsRethrownInTakeAndDestructionIsPrompt) {
  const GlyphSource glyphs(5);
  const EpisodeSpec spec{"train", 5, 1, 3};
  for (int threads : {1, 3}) {
    SCOPED_TRACE(::testing::Message() << "threads " << threads);
    RiggedSource rigged(glyphs);
    rigged.fail_step = kFirstStep + 2;
    rigged.fail_task = kTasks[3];
    auto stream =
        std::make_unique<EpisodeStream>(rigged, spec, kSeed, kTasks, kFirstStep, kLastStep + 1000,
                                        EpisodeStream::Options{threads, 7});
    Episode<float> got, want;
    // Every key before the failing one is served, identical to direct sampling.
    for (int64_t step = kFirstStep; step < rigged.fail_step; ++step)
      for (int64_t task : kTasks) {
        stream->take(step, task, got);
        glyphs.sample(spec, kSeed, step, task, want);
        EXPECT_TRUE(bit_identical(got, want)) << "step " << step << " task " << task;
      }
    for (int p = 0; p < 3; ++p) stream->take(rigged.fail_step, kTasks[p], got);
    std::string message;
    const double sec = seconds_to_run([&] {
      try {
        stream->take(rigged.fail_step, rigged.fail_task, got);
      } catch (const UsageError& e) {
        message = e.what();
      }
    });
    EXPECT_EQ(message, "rigged.h5: image 42 is unreadable");
    EXPECT_LT(sec, 2.0);
    // Keys after it are not claimed any more: they fail too instead of blocking (with several
    // producers the next one may have been drawn before the failure was seen).
    bool thrown = false;
    seconds_to_run([&] {
      try {
        stream->take(rigged.fail_step, kTasks[4], got);
      } catch (const UsageError&) {
        thrown = true;
      }
    });
    if (threads == 1) {
      EXPECT_TRUE(thrown);
    }
    if (!thrown) {
      glyphs.sample(spec, kSeed, rigged.fail_step, kTasks[4], want);
      EXPECT_TRUE(bit_identical(got, want));
    }
    EXPECT_LT(seconds_to_run([&] { stream.reset(); }), 2.0);
    EXPECT_LE(rigged.calls.load(), static_cast<int>((rigged.fail_step - kFirstStep + 2) *
                                                    static_cast<int64_t>(kTasks.size())));
  }
}

TEST(EpisodeStream, DestructionIsPromptWithFullRingBusyOrUnstartedProducers) {
  const GlyphSource glyphs(5);
  const EpisodeSpec spec{"train", 5, 1, 3};
  const int64_t endless = int64_t{1} << 40;
  {  // ring full, producers blocked waiting for space
    auto stream = std::make_unique<EpisodeStream>(glyphs, spec, kSeed, kTasks, 0, endless,
                                                  EpisodeStream::Options{3, 6});
    Episode<float> got;
    stream->take(0, kTasks[2], got);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    EXPECT_LT(seconds_to_run([&] { stream.reset(); }), 2.0);
  }
  {  // producers in the middle of slow draws, consumer halfway through a step
    RiggedSource slow(glyphs);
    slow.sleep_ms = 100;
    auto stream = std::make_unique<EpisodeStream>(slow, spec, kSeed, kTasks, 0, endless,
                                                  EpisodeStream::Options{3, 64});
    Episode<float> got;
    stream->take(0, kTasks[0], got);
    stream->take(0, kTasks[1], got);
    const int calls_before = slow.calls.load();
    EXPECT_LT(seconds_to_run([&] { stream.reset(); }), 2.0);
    EXPECT_LE(slow.calls.load(), calls_before + 3);  // at most the draws in flight finish
  }
  {  // destroyed right after construction, and after the last key
    EXPECT_LT(seconds_to_run([&] { EpisodeStream(glyphs, spec, kSeed, kTasks, 0, endless, {}); }),
              2.0);
    auto stream = std::make_unique<EpisodeStream>(glyphs, spec, kSeed, kTasks, 0, 1,
                                                  EpisodeStream::Options{2, 0});
    Episode<float> got;
    for (int64_t task : kTasks) stream->take(0, task, got);
    EXPECT_THROW(stream->take(1, kTasks[0], got), Error);  // last_step is exclusive
    EXPECT_LT(seconds_to_run([&] { stream.reset(); }), 2.0);
  }
}

TEST(EpisodeStream, OutOfOrderTakeIsAnErrorNotAHang) {
  const GlyphSource glyphs(5);
  const EpisodeSpec spec{"train", 5, 1, 3};
  EpisodeStream stream(glyphs, spec, kSeed, kTasks, kFirstStep, kLastStep, {2, 0});
  Episode<float> got, want;
  auto error_of = [&](int64_t step, int64_t task) -> std::string {
    std::string message;
    seconds_to_run([&] {
      try {
        stream.take(step, task, got);
      } catch (const UsageError&) {
        message = "UsageError (expected Error from MT_CHECK)";
      } catch (const Error& e) {
        message = e.what();
      }
    });
    return message;
  };
  EXPECT_NE(error_of(kFirstStep + 1, kTasks[0]).find("taken while step"), std::string::npos);
  EXPECT_NE(error_of(kFirstStep - 1, kTasks[0]).find("outside the stream's steps"),
            std::string::npos);
  EXPECT_NE(error_of(kFirstStep, 2).find("not one of the stream's tasks"), std::string::npos);
  stream.take(kFirstStep, kTasks[1], got);
  EXPECT_NE(error_of(kFirstStep, kTasks[1]).find("already taken"), std::string::npos);
  // Step 4 still has tasks left: step 5 is refused until they are taken.
  EXPECT_NE(error_of(kFirstStep + 1, kTasks[1]).find("taken while step"), std::string::npos);
  // The failed calls changed nothing: the stream goes on, identical to direct sampling.
  for (int64_t task : kTasks)
    if (task != kTasks[1]) stream.take(kFirstStep, task, got);
  EXPECT_NE(error_of(kFirstStep, kTasks[0]).find("already taken"), std::string::npos);
  stream.take(kFirstStep + 1, kTasks[4], got);
  glyphs.sample(spec, kSeed, kFirstStep + 1, kTasks[4], want);
  EXPECT_TRUE(bit_identical(got, want));
}

}  // namespace
}  // namespace mt
