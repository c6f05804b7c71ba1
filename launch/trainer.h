// Meta-training as run by `metatrain` (DESIGN §2): builds data, model and algorithm from a
// Config, runs the outer loop with progress, metrics log, periodic evaluation and checkpoints,
// and returns the final evaluation. Also the evaluation protocol shared with `metaeval`.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/meta_gradient.h"
#include "data/episode_source.h"
#include "launch/config.h"

namespace mt {

struct EvalResult {
  std::string split;
  int episodes = 0;
  double acc_mean = 0, acc_ci95 = 0;  // mean accuracy and the 95% confidence half-width
  double loss_mean = 0;
};

// The episode source named by data.path ("glyphs" or, later, an HDF5 store).
std::unique_ptr<EpisodeSource> make_episode_source(const Config& cfg);

// Accuracy of `theta` over `episodes` episodes of `spec`, each adapted with `steps` inner
// steps; episodes are fixed by (seed, episode index), identical at every evaluation.
EvalResult evaluate(const MetaGradient<float>& mg, const std::vector<float>& theta,
                    const EpisodeSource& source, const EpisodeSpec& spec, uint64_t seed,
                    int episodes, int steps, int threads);

// Runs training; returns the final evaluation.
EvalResult train(const Config& cfg);

}  // namespace mt
