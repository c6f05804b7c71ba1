// A few-shot task as the model sees it: a labelled support set for the inner loop and a
// labelled query set for the outer loss. Images are [n, c, h, w] row-major, labels in [0, ways).
#pragma once

#include <cstdint>
#include <vector>

namespace mt {

// Per-example shape of an image or activation (channels, height, width).
struct Shape {
  int c = 0, h = 0, w = 0;
  int64_t size() const { return static_cast<int64_t>(c) * h * w; }
  bool operator==(const Shape& o) const { return c == o.c && h == o.h && w == o.w; }
};

template <typename T>
struct Batch {
  Shape item;              // shape of one example
  int n = 0;               // number of examples
  std::vector<T> x;        // [n, item.c, item.h, item.w]
  std::vector<int32_t> y;  // [n], class index within the episode
  // [n] per-example loss weights w_i: the loss is Σ_i w_i ℓ_i / n. Empty means every w_i = 1
  // (what episodes use); the bilevel hyper-cleaning problem weights its training examples.
  std::vector<T> weight;
  std::vector<int64_t> source;  // [n] store image index of each example; empty if not from a store

  // Sizes x and y for `count` examples of shape s; clears weight (all examples weight 1) and
  // source (the caller that draws from a store fills it).
  void resize(Shape s, int count) {
    item = s;
    n = count;
    x.resize(static_cast<size_t>(count) * s.size());
    y.resize(count);
    weight.clear();
    source.clear();
  }
  template <typename U>
  Batch<U> cast() const {
    Batch<U> b;
    b.item = item;
    b.n = n;
    b.x.assign(x.begin(), x.end());
    b.y = y;
    b.weight.assign(weight.begin(), weight.end());
    b.source = source;
    return b;
  }
};

template <typename T>
struct Episode {
  int ways = 0;
  Batch<T> support;  // ways * shots examples
  Batch<T> query;    // ways * queries examples

  template <typename U>
  Episode<U> cast() const {
    return Episode<U>{ways, support.template cast<U>(), query.template cast<U>()};
  }
};

}  // namespace mt
