// A small in-memory episode store of random images for tests that need a StoreContents without
// the shared data: `classes` classes of `per_class` images each, all in the "train" split.
#pragma once

#include <string>

#include "core/rng.h"
#include "data/episode_store.h"

namespace mt::testing {

// Class c's images are a random prototype plus pixel noise, so a linear classifier can learn them.
inline StoreContents synthetic_store(int classes, int per_class, int side, uint64_t seed) {
  StoreContents s;
  s.dataset = "synthetic";
  s.height = s.width = side;
  s.channels = 1;
  Rng rng(seed, 0, 0, Stream::kTest);
  s.class_offsets.push_back(0);
  for (int c = 0; c < classes; ++c) {
    std::vector<double> proto(side * side);
    for (double& p : proto) p = rng.uniform(0, 255);
    for (int i = 0; i < per_class; ++i) {
      for (double p : proto) {
        const double v = p + 60 * rng.normal();
        s.images.push_back(static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v));
      }
      s.labels.push_back(c);
    }
    s.class_offsets.push_back(s.class_offsets.back() + per_class);
    s.class_names.push_back("class" + std::to_string(c));
    s.splits["train"].push_back(c);
  }
  s.splits["val"];
  s.splits["test"];
  return s;
}

}  // namespace mt::testing
