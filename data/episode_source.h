// The interface every episode source implements (the built-in synthetic glyphs, the HDF5 episode
// store): a set of labelled image classes split into train/val/test, from which few-shot
// episodes are drawn as a pure function of (spec, seed, step, task).
#pragma once

#include <cstdint>
#include <string>

#include "core/episode.h"

namespace mt {

// What one episode looks like; `split` names the class split the episode is drawn from.
struct EpisodeSpec {
  std::string split;
  int ways = 5, shots = 1, queries = 15;
};

class EpisodeSource {
 public:
  virtual ~EpisodeSource() = default;
  virtual std::string name() const = 0;
  virtual Shape image_shape() const = 0;
  // Both throw UsageError for an unknown split.
  virtual int64_t num_classes(const std::string& split) const = 0;
  virtual int min_examples_per_class(const std::string& split) const = 0;
  // Throws UsageError naming the config key (task.ways, task.shots, task.queries) when the spec
  // cannot be served: ways < 2 or more than the split's classes, shots < 1, queries < 1, or
  // shots + queries more than the examples of the smallest class.
  virtual void validate(const EpisodeSpec& spec) const = 0;
  // Overwrites ep with the episode of task `task` at step `step`: `ways` distinct classes drawn
  // uniformly from the split in random order (label = draw position), support = ways * shots
  // and query = ways * queries examples, laid out class-major (see shape_episode in
  // data/episode_sampler.h). A pure function of its arguments: thread-safe, independent of
  // call order and thread. Reuses ep's buffers when their sizes already match. A store also
  // fills each batch's `source` (the image index of every example); other sources clear it.
  virtual void sample(const EpisodeSpec& spec, uint64_t seed, uint64_t step, uint64_t task,
                      Episode<float>& ep) const = 0;
};

}  // namespace mt
