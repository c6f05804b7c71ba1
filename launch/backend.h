// The compute backend of a run, picked once from `device` (DESIGN §5.1): the CPU backend (the
// per-task layers on threads) or the CUDA backend (batched kernels on this rank's GPU). Nothing
// after this choice knows which it got.
#pragma once

#include <memory>

#include "core/batched_model.h"
#include "data/episode_source.h"
#include "launch/config.h"

namespace mt {

// `model` (the per-task CPU model of cfg, make_model's) must outlive the result, and `source`
// too on the CUDA backend, which runs the batched plan of that same model (any Sequential the
// plan takes: Conv-4, ResNet-12). For cuda, binds this rank to GPU local_rank % gpus first; a
// store with data.resident=device is copied to that GPU and the backend gathers its batches
// there. Throws UsageError naming `device` when the binary has no CUDA backend or no GPU is
// usable.
std::unique_ptr<BatchedModel<float>> make_backend(const Config& cfg, const Model<float>& model,
                                                  const EpisodeSource& source, int local_rank,
                                                  int threads);

}  // namespace mt
