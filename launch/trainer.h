// Meta-training as run by `metatrain` (DESIGN §2): builds data, model and algorithm from a
// Config, runs the outer loop with progress, metrics log, periodic evaluation and checkpoints,
// and returns the final evaluation.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/meta_gradient.h"
#include "data/episode_source.h"
#include "launch/config.h"
#include "launch/evaluation.h"

namespace mt {

// The episode source named by data.path: the built-in "glyphs", or an HDF5 episode store file.
std::unique_ptr<EpisodeSource> make_episode_source(const Config& cfg);

// The model of cfg.model for inputs of shape `input`, with cfg.task.ways outputs.
std::unique_ptr<Model<float>> make_model(const Config& cfg, Shape input);

// CPU worker threads of this rank: cfg.threads, or every core when it is 0.
int worker_threads(const Config& cfg);

// The inner loop of cfg.inner (and ufom.adjoint_clip).
InnerLoop inner_loop(const Config& cfg);
// The layout of the meta-parameters a run of cfg trains on `model`: θ, then the learned rates.
ParamLayout meta_parameters(const Config& cfg, const Model<float>& model);

// Runs training; returns the final evaluation.
EvalResult train(const Config& cfg);

}  // namespace mt
