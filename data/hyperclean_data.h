// The data set of data hyper-cleaning (DESIGN §3.7), drawn from an episode store: classes of a
// split with training, validation and test images each, a seeded share of the training labels
// corrupted, in the two input scalings of the classifiers; and how well per-example weights
// flag the corrupted examples. The bilevel problem on it is core/bilevel_hyperclean.h.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/episode.h"
#include "data/episode_store.h"

namespace mt {

// A labelled set of images [n, c, h, w] row-major, in the two scalings the classifiers use.
struct LabelledSet {
  int64_t n = 0;
  std::vector<double> pixels;    // pixel / 255, in [0, 1] (Conv-4 input)
  std::vector<double> features;  // standardised pixels (linear classifier input)
  std::vector<int32_t> labels;
};

struct HypercleanData {
  int classes = 0;                    // K
  Shape item;                         // shape of one image
  int dim = 0;                        // D = item.size() values per example
  LabelledSet train;                  // labels after corruption
  std::vector<uint8_t> corrupted;     // [n_train] 1 where the label was replaced
  std::vector<int32_t> clean_labels;  // [n_train] the true labels
  LabelledSet val, test;              // clean
};

struct HypercleanSpec {
  std::string split = "train";  // store split the classes are drawn from
  int classes = 20;
  int train_per_class = 10, val_per_class = 5, test_per_class = 5;
  double noise = 0.5;  // fraction of training labels replaced by another class
  uint64_t seed = 0;
};

// Draws spec.classes classes of the split (seeded), splits each class's images into training,
// validation and test parts, and replaces the labels of round(noise · n_train) training examples
// (a seeded random subset) by a uniformly drawn other class. pixels: image / 255; features:
// pixels minus the mean training image, scaled so that the mean squared norm of a training
// feature is 1. UsageError when the split has too few classes or a class too few images.
HypercleanData make_hyperclean_data(const StoreContents& store, const HypercleanSpec& spec);

// Which scaling a classifier reads: Conv-4 the pixels, the linear classifier the features.
enum class HypercleanInput { kPixels, kFeatures };
// All of `set` as one batch (weights empty) in that scaling.
Batch<double> hyperclean_batch(const HypercleanData& data, const LabelledSet& set,
                               HypercleanInput input);

struct Detection {
  double precision = 0, recall = 0, f1 = 0;
  int64_t flagged = 0;  // examples with σ(x_i) < 0.5
};
// How well "σ(x_i) < 0.5" (x_i < 0) detects the corrupted training examples.
Detection detect_corrupted(const HypercleanData& data, const std::vector<double>& x);

}  // namespace mt
