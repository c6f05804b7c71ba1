// The hyper-cleaning data set (data/hyperclean_data.h): classes and images drawn from an episode
// store by a seeded RNG stream, corrupted labels, standardised features, and the detection score.
#include "data/hyperclean_data.h"

#include <cmath>

#include "core/check.h"
#include "core/rng.h"
#include "data/episode_sampler.h"

namespace mt {

namespace {

// Key of the RNG stream that picks classes, splits images and corrupts labels.
constexpr uint64_t kHypercleanKey = 0x6879706572636c6eull;  // "hypercln"

}  // namespace

HypercleanData make_hyperclean_data(const StoreContents& store, const HypercleanSpec& spec) {
  const auto it = store.splits.find(spec.split);
  MT_REQUIRE(it != store.splits.end(), "hyperclean: the store has no split '", spec.split, "'");
  const std::vector<int32_t>& pool = it->second;
  MT_REQUIRE(spec.classes >= 2 && spec.classes <= static_cast<int>(pool.size()),
             "slbamm.classes = ", spec.classes, ": the split '", spec.split, "' has ", pool.size(),
             " classes; choose 2..", pool.size());
  const int per_class = spec.train_per_class + spec.val_per_class + spec.test_per_class;
  MT_REQUIRE(spec.train_per_class >= 1 && spec.val_per_class >= 1 && spec.test_per_class >= 1,
             "slbamm.{train,val,test}_per_class must each be >= 1");
  MT_REQUIRE(spec.noise >= 0 && spec.noise <= 1, "slbamm.noise must be in [0, 1]");

  Rng rng(spec.seed, kHypercleanKey, 0, Stream::kSplit);
  std::vector<int64_t> picked;
  sample_distinct(rng, static_cast<int64_t>(pool.size()), spec.classes, picked);

  HypercleanData d;
  d.classes = spec.classes;
  d.item = {store.channels, store.height, store.width};
  const int64_t px = store.image_bytes(), plane = static_cast<int64_t>(store.height) * store.width;
  d.dim = static_cast<int>(px);
  auto add = [&](LabelledSet& set, int64_t image, int label) {
    const uint8_t* src = store.images.data() + image * px;  // [h, w, c]
    for (int c = 0; c < store.channels; ++c)
      for (int64_t q = 0; q < plane; ++q) set.pixels.push_back(src[q * store.channels + c] / 255.0);
    set.labels.push_back(label);
    set.n += 1;
  };
  std::vector<int64_t> order;
  for (int c = 0; c < spec.classes; ++c) {
    const int32_t cls = pool[picked[c]];
    const int64_t first = store.class_offsets[cls];
    const int64_t count = store.class_offsets[cls + 1] - first;
    MT_REQUIRE(count >= per_class, "hyperclean: class ", store.class_names[cls], " has ", count,
               " images, fewer than train + val + test per class = ", per_class);
    sample_distinct(rng, count, per_class, order);
    int j = 0;
    for (; j < spec.train_per_class; ++j) add(d.train, first + order[j], c);
    for (; j < spec.train_per_class + spec.val_per_class; ++j) add(d.val, first + order[j], c);
    for (; j < per_class; ++j) add(d.test, first + order[j], c);
  }

  // Standardise with training statistics: subtract the mean image, scale to mean ‖a‖² = 1.
  std::vector<double> mean(px, 0.0);
  for (int64_t i = 0; i < d.train.n; ++i)
    for (int64_t j = 0; j < px; ++j) mean[j] += d.train.pixels[i * px + j] / d.train.n;
  double sq = 0;
  for (int64_t i = 0; i < d.train.n; ++i)
    for (int64_t j = 0; j < px; ++j) {
      const double v = d.train.pixels[i * px + j] - mean[j];
      sq += v * v / d.train.n;
    }
  const double scale = sq > 0 ? 1.0 / std::sqrt(sq) : 1.0;
  for (LabelledSet* s : {&d.train, &d.val, &d.test}) {
    s->features.resize(s->pixels.size());
    for (int64_t i = 0; i < s->n; ++i)
      for (int64_t j = 0; j < px; ++j)
        s->features[i * px + j] = (s->pixels[i * px + j] - mean[j]) * scale;
  }

  // Corrupt a random subset of round(noise · n) training labels.
  d.clean_labels = d.train.labels;
  d.corrupted.assign(d.train.n, 0);
  const int corrupt = static_cast<int>(std::lround(spec.noise * d.train.n));
  sample_distinct(rng, d.train.n, corrupt, order);
  for (int64_t i : order) {
    const int other = static_cast<int>(rng.below(spec.classes - 1));
    const int clean = d.train.labels[i];
    d.train.labels[i] = other < clean ? other : other + 1;
    d.corrupted[i] = 1;
  }
  return d;
}

Batch<double> hyperclean_batch(const HypercleanData& data, const LabelledSet& set,
                               HypercleanInput input) {
  Batch<double> b;
  b.item = data.item;
  b.n = static_cast<int>(set.n);
  b.x = input == HypercleanInput::kPixels ? set.pixels : set.features;
  b.y = set.labels;
  return b;
}

Detection detect_corrupted(const HypercleanData& data, const std::vector<double>& x) {
  Detection r;
  int64_t hit = 0, corrupted = 0;
  for (int64_t i = 0; i < data.train.n; ++i) {
    const bool flag = x[i] < 0;  // σ(x_i) < 0.5
    r.flagged += flag;
    corrupted += data.corrupted[i];
    hit += flag && data.corrupted[i];
  }
  r.precision = r.flagged > 0 ? static_cast<double>(hit) / r.flagged : 0;
  r.recall = corrupted > 0 ? static_cast<double>(hit) / corrupted : 0;
  r.f1 = r.precision + r.recall > 0 ? 2 * r.precision * r.recall / (r.precision + r.recall) : 0;
  return r;
}

}  // namespace mt
