// Few-shot evaluation: adaptation and scoring in parallel over episodes (launch/evaluation.h).
#include "launch/evaluation.h"

#include <omp.h>

#include <cmath>

namespace mt {

EvalResult evaluate(const MetaGradient<float>& mg, const std::vector<float>& theta, int episodes,
                    int steps, int threads, const EvalEpisodeFn& episode) {
  std::vector<double> acc(episodes), loss(episodes);
  std::vector<TaskScratch<float>> scratch;
  for (int i = 0; i < threads; ++i) scratch.push_back(mg.make_scratch());
  std::vector<Episode<float>> eps(threads);
#pragma omp parallel for schedule(dynamic, 4) num_threads(threads)
  for (int e = 0; e < episodes; ++e) {
    const int tid = omp_get_thread_num();
    episode(e, eps[tid]);
    const LossStats s = mg.adapt_and_evaluate(theta.data(), eps[tid], steps, scratch[tid]);
    acc[e] = s.acc;
    loss[e] = s.loss;
  }
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

EvalResult evaluate_split(const MetaGradient<float>& mg, const std::vector<float>& theta,
                          const EpisodeSource& source, const EpisodeSpec& spec, uint64_t seed,
                          int episodes, int steps, int threads) {
  EvalResult r = evaluate(mg, theta, episodes, steps, threads, [&](int64_t e, Episode<float>& ep) {
    source.sample(spec, seed, kEvalStep, static_cast<uint64_t>(e), ep);
  });
  r.split = spec.split;
  return r;
}

}  // namespace mt
