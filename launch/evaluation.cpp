// Few-shot evaluation: adaptation and scoring of batches of episodes on the engine's backend
// (launch/evaluation.h).
#include "launch/evaluation.h"

#include <algorithm>
#include <cmath>

#include "core/parallel_for.h"

namespace mt {

namespace {
// Episodes per batch: enough to keep the backend busy, few enough to bound its memory.
constexpr int kEvalBatch = 32;
}  // namespace

EvalResult evaluate(MetaEngine<float>& engine, const std::vector<float>& theta, int episodes,
                    int steps, int threads, const EvalEpisodeFn& episode, dist::Comm* comm) {
  BatchedModel<float>& model = engine.model();
  const VecOps<float>& ops = model.ops();
  Buffer<float> theta_b = ops.alloc(static_cast<int64_t>(theta.size()));
  ops.upload(static_cast<int64_t>(theta.size()), theta.data(), theta_b.data());
  const int chunk = std::min(model.max_tasks(), kEvalBatch);
  std::vector<Episode<float>> eps(chunk);
  std::vector<LossStats> stats(chunk);
  TaskBatch& batch = engine.eval_batch();
  // acc[e] and loss[e] of every episode; this rank fills its block, the others stay 0.
  std::vector<double> values(2 * static_cast<size_t>(episodes), 0.0);
  double* acc = values.data();
  double* loss = values.data() + episodes;
  const int64_t ranks = comm ? comm->size() : 1, rank = comm ? comm->rank() : 0;
  const int mine_begin = static_cast<int>(episodes * rank / ranks);
  const int mine_end = static_cast<int>(episodes * (rank + 1) / ranks);
  for (int first = mine_begin; first < mine_end; first += chunk) {
    const int count = std::min(chunk, mine_end - first);
    parallel_for(threads, count, [&](int64_t i) { episode(first + i, eps[i]); });
    std::vector<const Episode<float>*> ptrs;
    for (int i = 0; i < count; ++i) ptrs.push_back(&eps[i]);
    model.load(ptrs, batch);
    engine.adapt_and_evaluate(theta_b.data(), batch, steps, stats.data());
    for (int i = 0; i < count; ++i) {
      acc[first + i] = stats[i].acc;
      loss[first + i] = stats[i].loss;
    }
  }
  if (ranks > 1) comm->allreduce_sum(values.data(), values.size());  // x + 0 + … + 0 == x

  EvalResult r;
  r.episodes = episodes;
  double sum = 0, sq = 0, lsum = 0;
  for (int e = 0; e < episodes; ++e) {
    sum += acc[e];
    lsum += loss[e];
  }
  r.acc_mean = sum / episodes;
  r.loss_mean = lsum / episodes;
  for (int e = 0; e < episodes; ++e) sq += (acc[e] - r.acc_mean) * (acc[e] - r.acc_mean);
  const double sd = episodes > 1 ? std::sqrt(sq / (episodes - 1)) : 0.0;
  r.acc_ci95 = 1.96 * sd / std::sqrt(static_cast<double>(episodes));
  return r;
}

EvalResult evaluate_split(MetaEngine<float>& engine, const std::vector<float>& theta,
                          const EpisodeSource& source, const EpisodeSpec& spec, uint64_t seed,
                          int episodes, int steps, int threads, dist::Comm* comm) {
  EvalResult r = evaluate(
      engine, theta, episodes, steps, threads,
      [&](int64_t e, Episode<float>& ep) {
        source.sample(spec, seed, kEvalStep, static_cast<uint64_t>(e), ep);
      },
      comm);
  r.split = spec.split;
  return r;
}

}  // namespace mt
