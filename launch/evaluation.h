// The evaluation protocol shared by `metatrain` and `metaeval`: adapt θ on each episode's
// support set with a number of inner steps, score the query set, and report the accuracy's
// mean and 95% confidence half-width over the episodes. Under several ranks each evaluates a
// contiguous block of the episodes and all receive every episode's accuracy in episode order, so
// the result is the same bits for any number of ranks.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/episode.h"
#include "core/meta_engine.h"
#include "data/episode_source.h"
#include "dist/comm.h"

namespace mt {

struct EvalResult {
  std::string split;
  int episodes = 0;
  double acc_mean = 0, acc_ci95 = 0;  // mean accuracy and the 95% confidence half-width
  double loss_mean = 0;
};

// Overwrites `ep` with evaluation episode e (0 <= e < episodes); called from several threads.
using EvalEpisodeFn = std::function<void(int64_t e, Episode<float>& ep)>;

// Accuracy of `theta` (host) over `episodes` episodes, each adapted with `steps` inner steps,
// in batches of the engine's backend; episodes are drawn on `threads` threads. The CI
// half-width is 1.96 · sd / √episodes. With `comm`, a collective over its ranks: rank r of N
// evaluates episodes [E·r/N, E·(r+1)/N), and every rank returns the same result, computed from
// all episodes' values in episode order (a sum-allreduce where each value has one non-zero
// contributor is exact). Each episode's values do not depend on the batch it ran in, so the
// result's bits do not depend on N.
EvalResult evaluate(MetaEngine<float>& engine, const std::vector<float>& theta, int episodes,
                    int steps, int threads, const EvalEpisodeFn& episode,
                    dist::Comm* comm = nullptr);

// The standard protocol: episodes e = 0 .. episodes-1 of `spec` drawn with the keys
// (seed, kEvalStep, e), so every evaluation of a run, and metaeval later, sees the same ones.
EvalResult evaluate_split(MetaEngine<float>& engine, const std::vector<float>& theta,
                          const EpisodeSource& source, const EpisodeSpec& spec, uint64_t seed,
                          int episodes, int steps, int threads, dist::Comm* comm = nullptr);

// Evaluation episodes use this reserved step key, which training never reaches.
constexpr uint64_t kEvalStep = 0xFFFFFFFFull;

}  // namespace mt
