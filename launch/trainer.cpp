// The outer training loop (launch/trainer.h).
#include "launch/trainer.h"

#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdio>

#include "core/blas.h"
#include "core/check.h"
#include "core/checkpoint.h"
#include "core/meta_step.h"
#include "core/optimizer.h"
#include "core/ufom.h"
#include "data/episode_store.h"
#include "data/episode_stream.h"
#include "data/glyphs.h"
#include "dist/comm.h"
#include "launch/evaluation.h"
#include "launch/metrics_log.h"
#include "launch/progress.h"
#include "models/conv4.h"

namespace mt {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int resolve_threads(int requested) { return requested > 0 ? requested : omp_get_num_procs(); }

}  // namespace

InnerLoop inner_loop(const Config& cfg) {
  InnerLoop in;
  in.steps = cfg.inner.steps;
  in.lr = cfg.inner.lr;
  in.trajectory = cfg.inner.trajectory;
  in.truncate = cfg.inner.truncate;
  in.adjoint_clip = cfg.ufom.adjoint_clip;
  return in;
}

std::unique_ptr<Model<float>> make_model(const Config& cfg, Shape input) {
  Conv4Spec spec;
  spec.input = input;
  spec.filters = cfg.model.filters;
  spec.ways = cfg.task.ways;
  spec.pool = cfg.model.pool == Config::Model::Pool::kMax ? Conv4Pool::kMax : Conv4Pool::kStride;
  return make_conv4<float>(spec);
}

namespace {

// Rejects settings this build cannot run yet, naming the key.
void check_supported(const Config& cfg) {
  MT_REQUIRE(cfg.device == Config::Device::kCpu,
             "device = cuda: training on the GPU is not available in this version (the CUDA "
             "build has the device query and a cuBLAS linear kernel only); use device=cpu");
  MT_REQUIRE(cfg.resume == "none", "resume = ", cfg.resume,
             ": resuming is not available in this version; use resume=none");
}

CheckpointState checkpoint_state(const Config& cfg, const ParamLayout& layout,
                                 const std::vector<float>& theta, Optimizer<float>& opt,
                                 int64_t step, const AdaptiveQ& aq, double q, int world) {
  CheckpointState s;
  s.layout = layout;
  s.params = theta;
  s.optimizer.name = opt.name();
  s.optimizer.step = opt.steps();
  for (auto& [name, buf] : opt.state()) s.optimizer.buffers.emplace_back(name, *buf);
  s.step = step;
  s.seed = static_cast<uint64_t>(cfg.seed);
  s.ufom = {aq.v2_ema, aq.d2_ema, aq.count, q};
  s.data_cursor = step;  // episodes are keyed by (seed, step, task): the step is the cursor
  s.config_yaml = cfg.effective_yaml;
  s.world_size = world;
  return s;
}

// debug.dump: θ, the episodes and both gradients of every task of the first outer step.
void write_dump(const Config& cfg, const MetaGradient<float>& mg, const std::vector<float>& theta,
                const EpisodeSource& source, const EpisodeSpec& spec) {
  std::vector<DumpTask> tasks(cfg.meta_batch);
  auto scratch = mg.make_scratch();
  for (int t = 0; t < cfg.meta_batch; ++t) {
    DumpTask& d = tasks[t];
    source.sample(spec, cfg.seed, 0, t, d.episode);
    d.g_fo.resize(theta.size());
    d.g_exact.resize(theta.size());
    mg.compute(theta.data(), d.episode, d.g_fo.data(), d.g_exact.data(), scratch);
  }
  write_debug_dump(cfg.debug.dump, mg.model().layout(), theta, tasks, cfg.effective_yaml,
                   cfg.inner.lr, cfg.inner.steps);
  std::printf("wrote debug dump of step 0 (%d tasks) to %s\n", cfg.meta_batch,
              cfg.debug.dump.c_str());
}

}  // namespace

std::unique_ptr<EpisodeSource> make_episode_source(const Config& cfg) {
  if (cfg.data.path == "glyphs") return std::make_unique<GlyphSource>();
  return std::make_unique<EpisodeStore>(cfg.data.path);
}

EvalResult train(const Config& cfg) {
  check_supported(cfg);
  blas_use_single_thread();
  auto comm = dist::make_comm("single");
  const bool lead = comm->rank() == 0;
  const int threads = resolve_threads(cfg.threads);

  auto source = make_episode_source(cfg);
  const EpisodeSpec train_spec{cfg.data.train_split, cfg.task.ways, cfg.task.shots,
                               cfg.task.queries};
  const EpisodeSpec eval_spec{cfg.data.eval_split, cfg.task.ways, cfg.task.shots, cfg.task.queries};
  source->validate(train_spec);
  source->validate(eval_spec);

  auto model = make_model(cfg, source->image_shape());
  const ParamLayout& layout = model->layout();
  const int64_t d = layout.total();
  std::vector<float> theta(d);
  model->init(theta.data(), static_cast<uint64_t>(cfg.seed));

  const InnerLoop inner = inner_loop(cfg);
  MetaGradient<float> mg(*model, inner);
  MetaStep<float> meta_step(mg, {cfg.algo, static_cast<uint64_t>(cfg.seed), threads});
  const std::string opt_name =
      cfg.outer.optimizer == Config::Outer::Optimizer::kAdam ? "adam" : "sgd";
  auto opt = make_optimizer<float>(opt_name, d, cfg.outer.lr, cfg.outer.momentum);
  AdaptiveQ adaptive(cfg.ufom.q_min, cfg.ufom.d2_scale);
  const double cost_fo = static_cast<double>(first_order_cost(inner));
  const double cost_exact = static_cast<double>(exact_path_cost(inner));
  CheckpointManager checkpoints(cfg.checkpoint.dir, cfg.checkpoint.keep);
  MetricsLog log(lead ? metrics_jsonl_path(cfg) : "", /*append=*/false);

  if (lead) {
    std::printf("effective config:\n%s\n", cfg.effective_yaml.c_str());
    std::printf("model conv4: %lld parameters; data %s (%s); %d threads; %s backend\n",
                static_cast<long long>(d), source->name().c_str(), cfg.data.path.c_str(), threads,
                comm->backend().c_str());
    std::fflush(stdout);
  }
  if (!cfg.debug.dump.empty() && lead) write_dump(cfg, mg, theta, *source, train_spec);

  std::vector<int64_t> my_tasks;
  for (int t = comm->rank(); t < cfg.meta_batch; t += comm->size()) my_tasks.push_back(t);
  // Training episodes: drawn ahead by the prefetching stream, or inline. Same episodes either way.
  std::unique_ptr<EpisodeStream> stream;
  if (cfg.data.prefetch > 0)
    stream = std::make_unique<EpisodeStream>(*source, train_spec, static_cast<uint64_t>(cfg.seed),
                                             my_tasks, 0, cfg.steps,
                                             EpisodeStream::Options{cfg.data.prefetch, 0});
  auto episode_fn = [&](uint64_t step) {
    return [&, step](int64_t t, Episode<float>& ep) {
      if (stream)
        stream->take(static_cast<int64_t>(step), t, ep);
      else
        source->sample(train_spec, cfg.seed, step, t, ep);
    };
  };
  auto run_eval = [&](int64_t step) {
    const EvalResult r = evaluate_split(mg, theta, *source, eval_spec, cfg.seed, cfg.eval.episodes,
                                        cfg.inner.eval_steps, threads);
    JsonObject e;
    e.add("split", r.split).add("episodes", r.episodes).add("acc_mean", r.acc_mean);
    e.add("acc_ci95", r.acc_ci95).add("loss_mean", r.loss_mean);
    log.write(JsonObject().add("step", static_cast<double>(step)).add("eval", e));
    return r;
  };

  Progress progress(cfg.steps, cfg.log.every, lead);
  MetaStepSums<float> sums;
  const auto t_start = std::chrono::steady_clock::now();
  for (int64_t step = 0; step < cfg.steps; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    double q = cfg.algo == Algo::kMaml ? 1.0 : 0.0;
    if (cfg.algo == Algo::kUfom)
      q = cfg.ufom.adaptive ? adaptive.q(cost_fo, cost_exact) : cfg.ufom.q;

    sums.reset(d);
    meta_step.run(theta.data(), static_cast<uint64_t>(step), my_tasks, episode_fn(step), q, sums);
    std::vector<float> packed = sums.pack();
    comm->allreduce_sum(packed.data(), packed.size());
    sums.unpack(packed);

    const float inv_b = 1.0f / cfg.meta_batch;
    for (float& g : sums.grad) g *= inv_b;
    for (int64_t k = 0; k < d; ++k)
      if (!std::isfinite(sums.grad[k]))
        throw Error(ExitCode::kRuntime, detail::concat("non-finite meta-gradient at step ",
                                                       step + 1, " in ", layout.at(k)->name,
                                                       ": training diverged; lower inner.lr or "
                                                       "outer.lr. Checkpoints already in ",
                                                       cfg.checkpoint.dir, " are intact."));
    if (cfg.algo == Algo::kUfom && cfg.ufom.adaptive && sums.exact_tasks > 0)
      adaptive.update(sums.v2 / sums.exact_tasks, sums.d2 / sums.exact_tasks);
    opt->step(theta.data(), sums.grad.data());

    const int64_t done = step + 1;
    const double sec = seconds_since(t0);
    const double loss = sums.loss / cfg.meta_batch, acc = sums.acc / cfg.meta_batch;
    if (done % cfg.log.every == 0 || done == cfg.steps) {
      JsonObject line;
      line.add("step", static_cast<double>(done)).add("loss", loss).add("acc", acc);
      if (cfg.algo == Algo::kUfom) line.add("q", q);
      if (sums.exact_tasks > 0) {
        double gap = 0;
        for (float g : sums.fo_gap)
          gap += static_cast<double>(g / sums.exact_tasks) * (g / sums.exact_tasks);
        line.add("fo_bias", std::sqrt(gap));
        line.add("v2", sums.v2 / sums.exact_tasks).add("d2", sums.d2 / sums.exact_tasks);
      }
      line.add("exact_tasks", sums.exact_tasks).add("grad_evals", sums.grad_evals);
      line.add("sec", sec).add("tasks_per_s", cfg.meta_batch / sec);
      line.add("elapsed", seconds_since(t_start));
      log.write(line);
    }
    char status[128];
    std::snprintf(status, sizeof status, "loss %.3f acc %.3f%s", loss, acc,
                  cfg.algo == Algo::kUfom ? (" q " + std::to_string(q).substr(0, 5)).c_str() : "");
    progress.update(done, status);

    if (cfg.eval.every > 0 && done % cfg.eval.every == 0 && done != cfg.steps) {
      const EvalResult r = run_eval(done);
      progress.finish_line();
      if (lead)
        std::printf("eval @ step %lld: %s acc %.2f%% ± %.2f%%\n", static_cast<long long>(done),
                    r.split.c_str(), 100 * r.acc_mean, 100 * r.acc_ci95);
    }
    if (lead && cfg.checkpoint.every > 0 && done % cfg.checkpoint.every == 0 && done != cfg.steps)
      checkpoints.save(checkpoint_state(cfg, layout, theta, *opt, done, adaptive, q, comm->size()));
  }
  progress.finish_line();

  const EvalResult final_eval = run_eval(cfg.steps);
  std::string ckpt;
  if (lead) {
    const double q =
        cfg.algo == Algo::kUfom && cfg.ufom.adaptive ? adaptive.q(cost_fo, cost_exact) : cfg.ufom.q;
    ckpt = checkpoints.save(
        checkpoint_state(cfg, layout, theta, *opt, cfg.steps, adaptive, q, comm->size()));
    std::printf(
        "final eval (%s, %d episodes, %d-way %d-shot, %d inner steps): accuracy %.2f%% ± %.2f%% "
        "(95%% CI)\n",
        final_eval.split.c_str(), final_eval.episodes, cfg.task.ways, cfg.task.shots,
        cfg.inner.eval_steps, 100 * final_eval.acc_mean, 100 * final_eval.acc_ci95);
    std::printf("checkpoint: %s\nmetrics: %s\ntotal time: %.1f s\n", ckpt.c_str(),
                log.path().c_str(), seconds_since(t_start));
  }
  return final_eval;
}

}  // namespace mt
