// Pieces shared by every EpisodeSource: checking an EpisodeSpec against the size of a split,
// drawing distinct indices (classes, examples) from the episode RNG, and laying out an
// episode's buffers and labels.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/episode.h"
#include "core/rng.h"
#include "data/episode_source.h"

namespace mt {

// Throws UsageError naming task.ways / task.shots / task.queries when `spec` does not fit a
// split of `num_classes` classes with at least `examples_per_class` examples each.
void check_episode_spec(const EpisodeSpec& spec, const std::string& source, int64_t num_classes,
                        int64_t examples_per_class);

// Overwrites `out` with k distinct integers drawn uniformly from [0, n), in random order
// (every ordered k-subset equally likely). Requires 0 <= k <= n.
void sample_distinct(Rng& rng, int64_t n, int k, std::vector<int64_t>& out);

// Sizes ep for `spec` and writes its labels. Layout is class-major: support example
// c * shots + s and query example c * queries + q belong to label c. Buffers are only
// reallocated when their sizes change; image values are left for the caller to overwrite.
// Clears `source` (a store fills it). pixels = false leaves x empty (indices-only episodes).
void shape_episode(const EpisodeSpec& spec, Shape image, Episode<float>& ep, bool pixels = true);

}  // namespace mt
