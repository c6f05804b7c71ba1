// Small deterministic episodes and models for algorithm tests that must not depend on data/.
#pragma once

#include <memory>

#include "core/episode.h"
#include "core/rng.h"
#include "models/conv4.h"
#include "models/linear.h"

namespace mt::testing {

// Episode with uniform-noise images whose class shifts their mean (so there is signal).
template <typename T>
Episode<T> noise_episode(Shape item, int ways, int shots, int queries, uint64_t seed,
                         uint64_t step = 0, uint64_t task = 0) {
  Rng rng(seed, step, task, Stream::kTest);
  Episode<T> ep;
  ep.ways = ways;
  auto fill = [&](Batch<T>& b, int per_class) {
    b.resize(item, ways * per_class);
    for (int i = 0; i < b.n; ++i) {
      b.y[i] = i % ways;
      for (int64_t k = 0; k < item.size(); ++k)
        b.x[i * item.size() + k] =
            static_cast<T>(rng.uniform() + 0.5 * ((k * 7 + b.y[i] * 3) % (ways + 2) == 0));
    }
  };
  fill(ep.support, shots);
  fill(ep.query, queries);
  return ep;
}

// Softmax regression on `features` inputs: the cheapest model with curvature.
template <typename T>
std::unique_ptr<Sequential<T>> softmax_regression(int features, int classes) {
  auto net = std::make_unique<Sequential<T>>(Shape{features, 1, 1}, classes);
  net->add("head", std::make_unique<Linear<T>>(Shape{features, 1, 1}, classes));
  return net;
}

// Two overlapping Gaussian clouds per class in `features` dimensions: not linearly separable,
// so the (meta-)objective of softmax regression has a finite minimiser.
template <typename T>
Episode<T> gaussian_episode(int features, int ways, int shots, int queries, uint64_t seed,
                            uint64_t task) {
  Rng rng(seed, 0, task, Stream::kTest);
  Rng centres(seed, 1, 0, Stream::kTest);  // class centres shared by all tasks
  std::vector<double> mu(static_cast<size_t>(ways) * features);
  for (double& m : mu) m = centres.normal();
  const double task_shift = rng.normal() * 0.5;
  Episode<T> ep;
  ep.ways = ways;
  auto fill = [&](Batch<T>& b, int per_class) {
    b.resize({features, 1, 1}, ways * per_class);
    for (int i = 0; i < b.n; ++i) {
      b.y[i] = i % ways;
      for (int f = 0; f < features; ++f)
        b.x[i * features + f] =
            static_cast<T>(mu[b.y[i] * features + f] + task_shift + 1.5 * rng.normal());
    }
  };
  fill(ep.support, shots);
  fill(ep.query, queries);
  return ep;
}

}  // namespace mt::testing
