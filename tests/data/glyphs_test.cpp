// Tests of the synthetic glyphs source: determinism in (seed, step, task), episode layout and
// labels, disjoint splits, spec validation, pixel range, and a pixel-space nearest-neighbour
// baseline that pins the difficulty of the task.
#include "data/glyphs.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/check.h"
#include "data/episode_sampler.h"

namespace mt {
namespace {

constexpr int kPixels = GlyphSource::kSize * GlyphSource::kSize;

bool same_episode(const Episode<float>& a, const Episode<float>& b) {
  return a.ways == b.ways && a.support.x == b.support.x && a.support.y == b.support.y &&
         a.query.x == b.query.x && a.query.y == b.query.y;
}

// The message of the UsageError thrown by validate(spec), or "" if none is thrown.
std::string validation_error(const GlyphSource& g, const EpisodeSpec& spec) {
  try {
    g.validate(spec);
  } catch (const UsageError& e) {
    return e.what();
  }
  return "";
}

TEST(Glyphs, SameKeysGiveIdenticalEpisodesOnAnyThreadAndOrder) {
  const GlyphSource g(3);
  const EpisodeSpec spec{"train", 5, 2, 3};
  Episode<float> first, other, again, threaded;
  g.sample(spec, 11, 4, 7, first);
  g.sample(spec, 11, 4, 8, other);
  g.sample(spec, 11, 4, 7, again);
  std::thread worker([&] { g.sample(spec, 11, 4, 7, threaded); });
  worker.join();
  EXPECT_TRUE(same_episode(first, again));
  EXPECT_TRUE(same_episode(first, threaded));
  EXPECT_FALSE(same_episode(first, other));
  EXPECT_NE(first.support.x, other.support.x);

  Episode<float> step_changed, seed_changed, dataset_changed;
  g.sample(spec, 11, 5, 7, step_changed);
  g.sample(spec, 12, 4, 7, seed_changed);
  GlyphSource(4).sample(spec, 11, 4, 7, dataset_changed);
  EXPECT_NE(first.support.x, step_changed.support.x);
  EXPECT_NE(first.support.x, seed_changed.support.x);
  EXPECT_NE(first.support.x, dataset_changed.support.x);
}

TEST(Glyphs, ReusesEpisodeBuffersWhenSizesMatch) {
  const GlyphSource g;
  const EpisodeSpec spec{"val", 5, 1, 15};
  Episode<float> ep;
  g.sample(spec, 0, 0, 0, ep);
  const float* support = ep.support.x.data();
  const float* query = ep.query.x.data();
  g.sample(spec, 0, 1, 0, ep);
  EXPECT_EQ(ep.support.x.data(), support);
  EXPECT_EQ(ep.query.x.data(), query);
}

TEST(Glyphs, ShapesAndClassMajorLabels) {
  const GlyphSource g;
  const EpisodeSpec spec{"test", 7, 3, 4};
  Episode<float> ep;
  g.sample(spec, 1, 2, 3, ep);
  EXPECT_EQ(ep.ways, 7);
  EXPECT_EQ(g.image_shape(), (Shape{1, 28, 28}));
  for (const Batch<float>* b : {&ep.support, &ep.query}) {
    EXPECT_EQ(b->item, g.image_shape());
    EXPECT_EQ(b->x.size(), static_cast<size_t>(b->n) * kPixels);
    ASSERT_EQ(b->y.size(), static_cast<size_t>(b->n));
  }
  ASSERT_EQ(ep.support.n, 7 * 3);
  ASSERT_EQ(ep.query.n, 7 * 4);
  for (int i = 0; i < ep.support.n; ++i) EXPECT_EQ(ep.support.y[i], i / 3);
  for (int i = 0; i < ep.query.n; ++i) EXPECT_EQ(ep.query.y[i], i / 4);
  for (int c = 0; c < 7; ++c) {
    EXPECT_EQ(std::count(ep.support.y.begin(), ep.support.y.end(), c), 3);
    EXPECT_EQ(std::count(ep.query.y.begin(), ep.query.y.end(), c), 4);
  }
}

TEST(Glyphs, PixelsInUnitRangeWithInkOnDarkBackground) {
  const GlyphSource g;
  const EpisodeSpec spec{"train", 10, 2, 5};
  Episode<float> ep;
  for (int step = 0; step < 5; ++step) {
    g.sample(spec, 0, step, 0, ep);
    for (const Batch<float>* b : {&ep.support, &ep.query}) {
      for (int i = 0; i < b->n; ++i) {
        const float* img = b->x.data() + i * kPixels;
        const auto [lo, hi] = std::minmax_element(img, img + kPixels);
        EXPECT_GE(*lo, 0.0f);
        EXPECT_LE(*hi, 1.0f);
        EXPECT_GT(*hi, 0.75f) << "image without a fully inked stroke";
        const int background = static_cast<int>(std::count(img, img + kPixels, 0.0f));
        EXPECT_GT(background, kPixels / 2) << "strokes should cover well under half the image";
        EXPECT_LT(background, kPixels - 20) << "almost empty image";
      }
    }
  }
}

TEST(Glyphs, EverySupportAndQueryImageIsADistinctDrawing) {
  const GlyphSource g;
  const EpisodeSpec spec{"test", 5, 5, 15};
  Episode<float> ep;
  g.sample(spec, 2, 0, 0, ep);
  std::set<std::vector<float>> images;
  for (const Batch<float>* b : {&ep.support, &ep.query}) {
    for (int i = 0; i < b->n; ++i) {
      images.emplace(b->x.begin() + i * kPixels, b->x.begin() + (i + 1) * kPixels);
    }
  }
  EXPECT_EQ(images.size(), static_cast<size_t>(ep.support.n + ep.query.n));
}

TEST(Glyphs, SplitsAreDisjointAndSized) {
  const GlyphSource g;
  const std::vector<std::string> splits = {"train", "val", "test"};
  EXPECT_EQ(g.num_classes("train"), GlyphSource::kTrainClasses);
  EXPECT_GE(g.num_classes("train"), 100000);
  EXPECT_EQ(g.num_classes("val"), 1000);
  EXPECT_EQ(g.num_classes("test"), 1000);
  for (size_t i = 0; i < splits.size(); ++i) {
    const auto a = g.class_range(splits[i]);
    EXPECT_EQ(a.count, g.num_classes(splits[i]));
    EXPECT_GE(a.first, 0);
    for (size_t j = i + 1; j < splits.size(); ++j) {
      const auto b = g.class_range(splits[j]);
      EXPECT_TRUE(a.first + a.count <= b.first || b.first + b.count <= a.first)
          << splits[i] << " and " << splits[j] << " overlap";
    }
  }
  // Episodes of different splits draw different classes: with identical keys, the drawings
  // of val and test differ.
  Episode<float> val, test;
  g.sample({"val", 5, 1, 1}, 0, 0, 0, val);
  g.sample({"test", 5, 1, 1}, 0, 0, 0, test);
  EXPECT_NE(val.support.x, test.support.x);
  EXPECT_THROW(g.num_classes("training"), UsageError);
  EXPECT_THROW(g.min_examples_per_class("Test"), UsageError);
  EXPECT_GE(g.min_examples_per_class("test"), 1000000);
}

TEST(Glyphs, ValidateRejectsImpossibleSpecsNamingTheKey) {
  const GlyphSource g;
  EXPECT_EQ(validation_error(g, {"test", 5, 1, 15}), "");
  EXPECT_EQ(validation_error(g, {"test", 1000, 5, 50}), "");
  EXPECT_EQ(validation_error(g, {"train", 5000, 1, 1}), "");

  const std::string too_many = validation_error(g, {"test", 2000, 1, 15});
  EXPECT_NE(too_many.find("task.ways = 2000"), std::string::npos) << too_many;
  EXPECT_NE(too_many.find("1000 classes"), std::string::npos) << too_many;
  EXPECT_NE(too_many.find("'test'"), std::string::npos) << too_many;
  EXPECT_NE(validation_error(g, {"val", 1, 1, 15}).find("task.ways"), std::string::npos);
  EXPECT_NE(validation_error(g, {"val", 5, 0, 15}).find("task.shots"), std::string::npos);
  EXPECT_NE(validation_error(g, {"val", 5, 1, 0}).find("task.queries"), std::string::npos);
  EXPECT_NE(validation_error(g, {"nope", 5, 1, 15}).find("'nope'"), std::string::npos);

  Episode<float> ep;
  EXPECT_THROW(g.sample({"test", 1001, 1, 1}, 0, 0, 0, ep), UsageError);
}

TEST(EpisodeSampler, SampleDistinctCoversAndNeverRepeats) {
  Rng rng(5, 0, 0, Stream::kTest);
  std::vector<int64_t> out;
  for (const auto& [n, k] :
       std::vector<std::pair<int64_t, int>>{{10, 10}, {1000, 5}, {1 << 20, 300}}) {
    sample_distinct(rng, n, k, out);
    ASSERT_EQ(out.size(), static_cast<size_t>(k));
    EXPECT_EQ(std::set<int64_t>(out.begin(), out.end()).size(), static_cast<size_t>(k));
    for (int64_t v : out) {
      EXPECT_GE(v, 0);
      EXPECT_LT(v, n);
    }
  }
  // Drawing all of a small range is a random permutation: not always the identity.
  int identity = 0;
  for (int r = 0; r < 20; ++r) {
    sample_distinct(rng, 6, 6, out);
    identity += std::is_sorted(out.begin(), out.end());
  }
  EXPECT_LT(identity, 3);
  // Every value of a small range is reachable in the first position.
  std::set<int64_t> first;
  for (int r = 0; r < 200; ++r) {
    sample_distinct(rng, 8, 2, out);
    first.insert(out[0]);
  }
  EXPECT_EQ(first.size(), 8u);
}

// 5-way 1-shot nearest neighbour in raw pixel space (L2) on unseen test classes. Chance is
// 20%; with the shipped jitter it measures about 65% (seed 0, 300 episodes). The range pins
// the difficulty: well above chance (classes are distinct characters) yet far from perfect
// (drawings vary enough that learning a representation helps).
TEST(Glyphs, PixelNearestNeighbourIsAboveChanceButFarFromPerfect) {
  const GlyphSource g;
  const EpisodeSpec spec{"test", 5, 1, 15};
  Episode<float> ep;
  int correct = 0, total = 0;
  for (int e = 0; e < 300; ++e) {
    g.sample(spec, 0, 0, e, ep);
    for (int q = 0; q < ep.query.n; ++q) {
      const float* xq = ep.query.x.data() + q * kPixels;
      float best = 1e30f;
      int label = -1;
      for (int s = 0; s < ep.support.n; ++s) {
        const float* xs = ep.support.x.data() + s * kPixels;
        float d = 0;
        for (int p = 0; p < kPixels; ++p) d += (xq[p] - xs[p]) * (xq[p] - xs[p]);
        if (d < best) {
          best = d;
          label = ep.support.y[s];
        }
      }
      correct += label == ep.query.y[q];
      ++total;
    }
  }
  const double acc = static_cast<double>(correct) / total;
  std::printf("pixel 1-NN accuracy, 5-way 1-shot, 300 test episodes: %.3f\n", acc);
  EXPECT_GT(acc, 0.55);
  EXPECT_LT(acc, 0.75);
}

TEST(Glyphs, WritesPgmGrid) {
  const GlyphSource g;
  Episode<float> ep;
  g.sample({"train", 5, 1, 2}, 0, 0, 0, ep);
  const std::string path = ::testing::TempDir() + "glyphs_grid.pgm";
  write_pgm_grid(path, ep.query, 4);  // 10 images: 3 rows of 4
  std::ifstream f(path, std::ios::binary);
  std::string magic;
  int width = 0, height = 0, maxval = 0;
  f >> magic >> width >> height >> maxval;
  f.get();
  EXPECT_EQ(magic, "P5");
  EXPECT_EQ(width, 4 * 29 + 1);
  EXPECT_EQ(height, 3 * 29 + 1);
  EXPECT_EQ(maxval, 255);
  std::vector<char> pix((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_EQ(pix.size(), static_cast<size_t>(width * height));
  std::remove(path.c_str());
  EXPECT_THROW(write_pgm_grid("/nonexistent-dir/x.pgm", ep.query, 4), UsageError);
}

}  // namespace
}  // namespace mt
