// The hyper-cleaning data set (data/hyperclean_data.h): sizes, the share of corrupted labels,
// the two input scalings, determinism in the seed, the usage errors, and the detection score.
#include "data/hyperclean_data.h"

#include <gtest/gtest.h>

#include "core/check.h"
#include "tests/support/synthetic_store.h"

namespace mt {
namespace {

TEST(HypercleanData, HasTheStatedSizesNoiseAndScaling) {
  HypercleanSpec spec;
  spec.classes = 4;
  spec.train_per_class = 6;
  spec.val_per_class = 3;
  spec.test_per_class = 2;
  spec.noise = 0.5;
  const HypercleanData d = make_hyperclean_data(testing::synthetic_store(7, 12, 4, 2), spec);
  EXPECT_EQ(d.classes, 4);
  EXPECT_EQ(d.dim, 16);
  EXPECT_EQ(d.item, (Shape{1, 4, 4}));
  for (double v : d.train.pixels) {
    EXPECT_GE(v, 0.0);
    EXPECT_LE(v, 1.0);
  }
  EXPECT_EQ(d.train.n, 24);
  EXPECT_EQ(d.val.n, 12);
  EXPECT_EQ(d.test.n, 8);
  int corrupted = 0;
  for (int64_t i = 0; i < d.train.n; ++i) {
    corrupted += d.corrupted[i];
    EXPECT_EQ(d.corrupted[i] != 0, d.train.labels[i] != d.clean_labels[i]) << i;
    EXPECT_GE(d.train.labels[i], 0);
    EXPECT_LT(d.train.labels[i], 4);
  }
  EXPECT_EQ(corrupted, 12);
  double sq = 0, mean0 = 0;
  for (int64_t i = 0; i < d.train.n; ++i) {
    mean0 += d.train.features[i * 16] / d.train.n;
    for (int j = 0; j < 16; ++j) sq += d.train.features[i * 16 + j] * d.train.features[i * 16 + j];
  }
  EXPECT_NEAR(sq / d.train.n, 1.0, 1e-12);
  EXPECT_NEAR(mean0, 0.0, 1e-12);
  // Same seed, same data set; another seed, other labels.
  const HypercleanData again = make_hyperclean_data(testing::synthetic_store(7, 12, 4, 2), spec);
  EXPECT_EQ(again.train.labels, d.train.labels);
  spec.seed = 1;
  EXPECT_NE(make_hyperclean_data(testing::synthetic_store(7, 12, 4, 2), spec).corrupted,
            d.corrupted);
}

TEST(HypercleanData, BatchesCarryTheChosenScaling) {
  HypercleanSpec spec;
  spec.classes = 2;
  spec.train_per_class = 3;
  spec.val_per_class = 1;
  spec.test_per_class = 1;
  const HypercleanData d = make_hyperclean_data(testing::synthetic_store(3, 6, 3, 4), spec);
  const Batch<double> px = hyperclean_batch(d, d.train, HypercleanInput::kPixels);
  const Batch<double> ft = hyperclean_batch(d, d.train, HypercleanInput::kFeatures);
  EXPECT_EQ(px.n, 6);
  EXPECT_EQ(px.item, d.item);
  EXPECT_EQ(px.x, d.train.pixels);
  EXPECT_EQ(ft.x, d.train.features);
  EXPECT_EQ(ft.y, d.train.labels);
  EXPECT_TRUE(ft.weight.empty());
}

TEST(HypercleanData, TooFewImagesOrClassesIsAUsageError) {
  HypercleanSpec spec;
  spec.classes = 3;
  spec.train_per_class = 8;
  EXPECT_THROW(make_hyperclean_data(testing::synthetic_store(5, 10, 3, 1), spec), UsageError);
  spec.classes = 6;
  spec.train_per_class = 2;
  EXPECT_THROW(make_hyperclean_data(testing::synthetic_store(5, 10, 3, 1), spec), UsageError);
}

TEST(HypercleanData, DetectionCountsPrecisionRecallAndF1) {
  HypercleanData d;
  d.train.n = 4;
  d.corrupted = {1, 1, 0, 0};
  // Flags examples 0 and 2: one hit of two flagged, one of two corrupted found.
  const Detection r = detect_corrupted(d, {-1.0, 2.0, -0.5, 0.1});
  EXPECT_EQ(r.flagged, 2);
  EXPECT_DOUBLE_EQ(r.precision, 0.5);
  EXPECT_DOUBLE_EQ(r.recall, 0.5);
  EXPECT_DOUBLE_EQ(r.f1, 0.5);
}

}  // namespace
}  // namespace mt
