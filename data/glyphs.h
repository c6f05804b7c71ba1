// The built-in synthetic "glyphs" dataset: procedurally generated stroke characters, 28x28x1,
// ink ~1 on background 0 (like inverted Omniglot), for the zero-download default run and tests.
// No files, no caches: every drawing is rendered on demand from counter-based RNG streams.
#pragma once

#include <cstdint>
#include <string>

#include "core/episode.h"
#include "core/rng.h"
#include "data/episode_source.h"

namespace mt {

// A class is a fixed random character of 1-4 strokes (lines, corners, quadratic and cubic
// curves, often attached to each other), drawn from Rng(dataset_seed, class id, 0, kGlyph).
// A drawing of a class adds per-drawing variation from the caller's RNG: a small affine map
// (rotation up to 10 degrees, scale 0.9-1.1, shear, translation up to 2 px), control-point
// jitter, stroke width and ink variation. Splits are disjoint ranges of class ids: "train" has
// 2^20 classes, "val" and "test" 1000 each, so evaluation classes are never seen in training.
class GlyphSource : public EpisodeSource {
 public:
  static constexpr int kSize = 28;
  static constexpr int64_t kTrainClasses = int64_t{1} << 20;
  static constexpr int64_t kEvalClasses = 1000;
  // Every class can be drawn without limit; this is what min_examples_per_class reports.
  static constexpr int kExamplesPerClass = 1 << 30;

  // Global class ids [first, first + count) of one split.
  struct ClassRange {
    int64_t first = 0, count = 0;
  };

  explicit GlyphSource(uint64_t dataset_seed = 0) : dataset_seed_(dataset_seed) {}

  std::string name() const override { return "glyphs"; }
  Shape image_shape() const override { return {1, kSize, kSize}; }
  int64_t num_classes(const std::string& split) const override;
  int min_examples_per_class(const std::string& split) const override;
  void validate(const EpisodeSpec& spec) const override;
  // Support images are drawn first (class-major), then query images, each an independent
  // drawing with its own variation from Rng(seed, step, task, kEpisode).
  void sample(const EpisodeSpec& spec, uint64_t seed, uint64_t step, uint64_t task,
              Episode<float>& ep) const override;

  // Throws UsageError for a split other than train, val, test.
  ClassRange class_range(const std::string& split) const;
  // Overwrites out[0 .. kSize*kSize) with one drawing of global class `class_id`, its
  // variation drawn from `rng`.
  void render(int64_t class_id, Rng& rng, float* out) const;

 private:
  uint64_t dataset_seed_;
};

// Writes the images of `b` as one binary PGM, `cols` images per row with a grey 1-pixel gap,
// values in [0, 1] mapped to 0..255 (channels averaged). Throws UsageError if `path` cannot be
// written.
void write_pgm_grid(const std::string& path, const Batch<float>& b, int cols);

}  // namespace mt
