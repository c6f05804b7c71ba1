// The outer training loop (launch/trainer.h).
#include "launch/trainer.h"

#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "core/bias_probe.h"
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
#include "dist/task_assignment.h"
#include "launch/bilevel_trainer.h"
#include "launch/evaluation.h"
#include "launch/metrics_log.h"
#include "launch/progress.h"
#include "launch/stop_signal.h"
#include "models/conv4.h"

namespace mt {

int worker_threads(const Config& cfg) {
  return cfg.threads > 0 ? cfg.threads : omp_get_num_procs();
}

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
  MT_REQUIRE(cfg.dist.backend != "nccl",
             "dist.backend = nccl needs device=cuda, which this version cannot train on; use "
             "dist.backend=mpi (or auto)");
}

// 64-bit FNV-1a of θ's bytes: ranks compare it to prove they hold the same parameters.
int64_t checksum(const std::vector<float>& theta) {
  uint64_t h = 1469598103934665603ull;
  const auto* p = reinterpret_cast<const unsigned char*>(theta.data());
  for (size_t i = 0; i < theta.size() * sizeof(float); ++i) h = (h ^ p[i]) * 1099511628211ull;
  return static_cast<int64_t>(h);
}

// True when every rank passed the same value: max(v) == min(v), with min(v) = ~max(~v).
bool all_equal(dist::Comm& comm, int64_t v) {
  int64_t buf[2] = {v, ~v};
  comm.allreduce_max(buf, 2);
  return buf[0] == ~buf[1];
}

// The checkpoint named by `resume`: "latest" is <checkpoint.dir>/latest.h5.
std::string resume_path(const Config& cfg, const CheckpointManager& checkpoints) {
  if (cfg.resume != "latest") return cfg.resume;
  const std::string p = checkpoints.latest_path();
  MT_REQUIRE(std::filesystem::exists(p), "resume = latest: no checkpoint ", p, " in ",
             "checkpoint.dir = ", cfg.checkpoint.dir, "; start without resume or point ",
             "checkpoint.dir at the run to continue");
  return p;
}

// The lines of the stored and current effective configs that differ, "'old' -> 'new'" (both
// come from to_yaml of the same schema, so their lines correspond one to one).
std::vector<std::string> config_changes(const std::string& before, const std::string& after) {
  auto lines = [](const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string l; std::getline(in, l);) out.push_back(l);
    return out;
  };
  const std::vector<std::string> a = lines(before), b = lines(after);
  std::vector<std::string> changes;
  for (size_t i = 0; i < std::max(a.size(), b.size()); ++i) {
    const std::string x = i < a.size() ? a[i] : "", y = i < b.size() ? b[i] : "";
    if (x != y) changes.push_back("'" + x + "' -> '" + y + "'");
  }
  return changes;
}

// Settings a resumed run may not change: they would make it another run, not a continuation.
void check_resume_compatible(const Config& now, const Config& then, const std::string& path) {
  auto refuse = [&](const char* key, const std::string& a, const std::string& b) {
    return UsageError(detail::concat("resume from ", path, ": ", key, " was ", a, " and is now ", b,
                                     "; a resumed run must keep it (start a new run instead)"));
  };
  if (now.seed != then.seed)
    throw refuse("seed", std::to_string(then.seed), std::to_string(now.seed));
  auto optimizer = [](const Config& c) {
    return c.outer.optimizer == Config::Outer::Optimizer::kAdam ? "adam" : "sgd";
  };
  if (now.outer.optimizer != then.outer.optimizer)
    throw refuse("outer.optimizer", optimizer(then), optimizer(now));
  if (now.algo != then.algo) throw refuse("algo", to_string(then.algo), to_string(now.algo));
  // data.path may change (the same store moved, or another cluster's copy); it is logged.
}

CheckpointState checkpoint_state(const Config& cfg, const ParamLayout& layout,
                                 const std::vector<float>& theta, Optimizer<float>& opt,
                                 int64_t step, int64_t grad_evals, const AdaptiveQ& aq, double q,
                                 int world) {
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
  s.grad_evals = grad_evals;
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

namespace {

// Everything of a run's state that a checkpoint restores and rank 0 broadcasts.
struct RunState {
  std::vector<float> theta;
  int64_t step = 0;
  int64_t grad_evals = 0;  // cumulative over all steps and ranks, for budget.grad_evals
};

// Resume: rank 0 reads and validates the checkpoint; every rank learns whether that worked
// (so no rank waits in a collective for a rank that failed), then receives the state.
void resume_from(const Config& cfg, const CheckpointManager& checkpoints, const ParamLayout& layout,
                 dist::Comm& comm, RunState& run, Optimizer<float>& opt, AdaptiveQ& adaptive) {
  std::string problem;
  CheckpointState st;
  const bool lead = comm.rank() == 0;
  if (lead) {
    try {
      const std::string path = resume_path(cfg, checkpoints);
      st = read_checkpoint(path, layout);
      const Config then = load_config_text(st.config_yaml, path + ":/config", {});
      check_resume_compatible(cfg, then, path);
      MT_REQUIRE(st.step <= cfg.steps, "resume from ", path, ": it is at step ", st.step,
                 ", beyond steps = ", cfg.steps, "; raise steps to continue");
      MT_REQUIRE(st.optimizer.buffers.size() == opt.state().size(), "resume from ", path,
                 ": optimizer state does not match outer.optimizer");
      std::printf("resuming from %s at step %lld (saved by %d rank%s, now %d)\n", path.c_str(),
                  static_cast<long long>(st.step), st.world_size, st.world_size == 1 ? "" : "s",
                  comm.size());
      for (const std::string& c : config_changes(st.config_yaml, cfg.effective_yaml))
        std::printf("  config changed on resume: %s\n", c.c_str());
    } catch (const UsageError& e) {
      problem = e.what();
    }
  }
  int64_t failed = problem.empty() ? 0 : 1;
  comm.allreduce_max(&failed, 1);
  if (failed) throw UsageError(lead ? problem : "resume failed on rank 0 (see its message)");

  // Broadcast: step, optimizer step count, adaptive-UFOM state, gradient evaluations spent, θ,
  // optimizer buffers.
  int64_t counts[4] = {st.step, st.optimizer.step, st.ufom.count, st.grad_evals};
  double ema[2] = {st.ufom.v2_ema, st.ufom.d2_ema};
  comm.broadcast(counts, sizeof counts, 0);
  comm.broadcast(ema, sizeof ema, 0);
  if (lead) run.theta = st.params;
  comm.broadcast(run.theta.data(), run.theta.size() * sizeof(float), 0);
  auto buffers = opt.state();
  for (size_t i = 0; i < buffers.size(); ++i) {
    std::vector<float>& b = *buffers[i].second;
    if (lead) b = st.optimizer.buffers[i].second;
    comm.broadcast(b.data(), b.size() * sizeof(float), 0);
  }
  run.step = counts[0];
  opt.set_steps(counts[1]);
  adaptive.count = counts[2];
  run.grad_evals = counts[3];
  adaptive.v2_ema = ema[0];
  adaptive.d2_ema = ema[1];
}

// The tasks of step `step` this rank runs: t mod N, or balanced by UFOM's predicted cost.
std::vector<int64_t> tasks_of_step(const Config& cfg, const dist::Comm& comm, int64_t step,
                                   double q, double cost_fo, double cost_exact) {
  if (cfg.dist.assign == "modulo" || cfg.algo != Algo::kUfom)
    return dist::modulo_tasks(cfg.meta_batch, comm.rank(), comm.size());
  std::vector<double> cost(cfg.meta_batch);
  for (int t = 0; t < cfg.meta_batch; ++t)
    cost[t] = cost_fo +
              (ufom_takes_exact(static_cast<uint64_t>(cfg.seed), static_cast<uint64_t>(step), t, q)
                   ? cost_exact
                   : 0.0);
  return dist::balanced_tasks(cost, comm.size())[comm.rank()];
}

EvalResult train_on(const Config& cfg, dist::Comm& comm) {
  const bool lead = comm.rank() == 0;
  const int threads = worker_threads(cfg);

  auto source = make_episode_source(cfg);
  const EpisodeSpec train_spec{cfg.data.train_split, cfg.task.ways, cfg.task.shots,
                               cfg.task.queries};
  const EpisodeSpec eval_spec{cfg.data.eval_split, cfg.task.ways, cfg.task.shots, cfg.task.queries};
  source->validate(train_spec);
  source->validate(eval_spec);

  auto model = make_model(cfg, source->image_shape());
  const ParamLayout& layout = model->layout();
  const int64_t d = layout.total();
  RunState run;
  run.theta.resize(d);
  model->init(run.theta.data(), static_cast<uint64_t>(cfg.seed));
  std::vector<float>& theta = run.theta;

  const InnerLoop inner = inner_loop(cfg);
  MetaGradient<float> mg(*model, inner);
  MetaStep<float> meta_step(mg, {cfg.algo, static_cast<uint64_t>(cfg.seed), threads});
  std::unique_ptr<BiasProbe<float>> probe;
  if (cfg.log.bias_every > 0)
    probe = std::make_unique<BiasProbe<float>>(mg, static_cast<uint64_t>(cfg.seed), threads);
  const std::string opt_name =
      cfg.outer.optimizer == Config::Outer::Optimizer::kAdam ? "adam" : "sgd";
  auto opt = make_optimizer<float>(opt_name, d, cfg.outer.lr, cfg.outer.momentum);
  AdaptiveQ adaptive(cfg.ufom.q_min, cfg.ufom.d2_scale);
  const double cost_fo = static_cast<double>(first_order_cost(inner));
  const double cost_exact = static_cast<double>(exact_path_cost(inner));
  CheckpointManager checkpoints(cfg.checkpoint.dir, cfg.checkpoint.keep);

  if (cfg.resume != "none") {
    resume_from(cfg, checkpoints, layout, comm, run, *opt, adaptive);
  } else {
    comm.broadcast(theta.data(), theta.size() * sizeof(float), 0);  // rank 0's θ for everyone
  }
  const int64_t first_step = run.step;
  MetricsLog log(lead ? metrics_jsonl_path(cfg) : "", /*append=*/first_step > 0);

  if (lead) {
    std::printf("effective config:\n%s\n", cfg.effective_yaml.c_str());
    std::printf("model conv4: %lld parameters; data %s (%s); %d threads; %s backend, %d rank%s\n",
                static_cast<long long>(d), source->name().c_str(), cfg.data.path.c_str(), threads,
                comm.backend().c_str(), comm.size(), comm.size() == 1 ? "" : "s");
    std::fflush(stdout);
  }
  if (!cfg.debug.dump.empty() && lead && first_step == 0)
    write_dump(cfg, mg, theta, *source, train_spec);

  // Training episodes: drawn ahead by the prefetching stream, or inline (always inline with the
  // balanced assignment, whose task lists change every step). Same episodes either way.
  const bool fixed_tasks = cfg.dist.assign == "modulo" || cfg.algo != Algo::kUfom;
  std::unique_ptr<EpisodeStream> stream;
  if (cfg.data.prefetch > 0 && fixed_tasks)
    stream = std::make_unique<EpisodeStream>(
        *source, train_spec, static_cast<uint64_t>(cfg.seed),
        dist::modulo_tasks(cfg.meta_batch, comm.rank(), comm.size()), first_step, cfg.steps,
        EpisodeStream::Options{cfg.data.prefetch, 0});
  auto episode_fn = [&](uint64_t step) {
    return [&, step](int64_t t, Episode<float>& ep) {
      if (stream)
        stream->take(static_cast<int64_t>(step), t, ep);
      else
        source->sample(train_spec, cfg.seed, step, t, ep);
    };
  };
  // Evaluation runs on rank 0; the other ranks wait at the next collective.
  auto run_eval = [&](int64_t step) {
    if (!lead) return EvalResult{};
    const EvalResult r = evaluate_split(mg, theta, *source, eval_spec, cfg.seed, cfg.eval.episodes,
                                        cfg.inner.eval_steps, threads);
    JsonObject e;
    e.add("split", r.split).add("episodes", r.episodes).add("acc_mean", r.acc_mean);
    e.add("acc_ci95", r.acc_ci95).add("loss_mean", r.loss_mean);
    log.write(JsonObject().add("step", static_cast<double>(step)).add("eval", e));
    return r;
  };
  // log.bias_every: the first-order bias at the current θ (core/bias_probe.h), on tasks
  // kProbeTaskBase + k of the training split, indices no meta-batch reaches, so training never
  // sees them. Spread over the ranks like a meta-batch; logged as a "bias" line by rank 0.
  auto probe_bias = [&](int64_t step, double q) {
    constexpr int64_t kProbeTaskBase = int64_t{1} << 40;  // < 2^44, see BiasProbe::run
    const auto t0 = std::chrono::steady_clock::now();
    const bool ufom = cfg.algo == Algo::kUfom;
    std::vector<int64_t> mine;
    for (int64_t k = comm.rank(); k < cfg.log.bias_tasks; k += comm.size())
      mine.push_back(kProbeTaskBase + k);
    BiasSums<float> bs;
    bs.reset(d);
    probe->run(
        theta.data(), static_cast<uint64_t>(step), mine,
        [&](int64_t t, Episode<float>& ep) { source->sample(train_spec, cfg.seed, step, t, ep); },
        ufom ? q : 0.0, bs);
    std::vector<float> packed = bs.pack();
    comm.allreduce_sum(packed.data(), packed.size());
    bs.unpack(packed);
    const BiasReport r = bias_report(bs, ufom);
    JsonObject b;
    b.add("tasks", r.tasks).add("fo", r.fo).add("fo_noise", r.fo_noise);
    if (ufom) b.add("ufom", r.ufom).add("ufom_noise", r.ufom_noise).add("q", q);
    b.add("exact_norm", r.exact_norm).add("sec", seconds_since(t0));
    log.write(JsonObject().add("step", static_cast<double>(step)).add("bias", b));
  };
  auto current_q = [&] {
    return cfg.algo == Algo::kUfom && cfg.ufom.adaptive ? adaptive.q(cost_fo, cost_exact)
                                                        : cfg.ufom.q;
  };
  auto save = [&](int64_t step) {
    return lead ? checkpoints.save(checkpoint_state(cfg, layout, theta, *opt, step, run.grad_evals,
                                                    adaptive, current_q(), comm.size()))
                : std::string();
  };

  install_stop_handlers();
  Progress progress(cfg.steps, cfg.log.every, lead);
  MetaStepSums<float> sums;
  const auto t_start = std::chrono::steady_clock::now();
  double side_seconds = 0;  // evaluation, bias probes and checkpoints: not training time
  auto timed = [&side_seconds](auto&& work) {
    const auto t0 = std::chrono::steady_clock::now();
    work();
    side_seconds += seconds_since(t0);
  };
  // budget.grad_evals: stop after the step at which the cumulative count reaches the budget.
  auto budget_spent = [&] {
    return cfg.budget.grad_evals > 0 && run.grad_evals >= cfg.budget.grad_evals;
  };
  const int64_t evals_at_start = run.grad_evals;
  int64_t last = first_step;  // outer steps completed when the loop ends
  for (int64_t step = first_step; step < cfg.steps && !budget_spent(); ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    double q = cfg.algo == Algo::kMaml ? 1.0 : 0.0;
    if (cfg.algo == Algo::kUfom) q = current_q();
    if (probe && step % cfg.log.bias_every == 0) timed([&] { probe_bias(step, q); });

    sums.reset(d);
    const std::vector<int64_t> my_tasks = tasks_of_step(cfg, comm, step, q, cost_fo, cost_exact);
    meta_step.run(theta.data(), static_cast<uint64_t>(step), my_tasks, episode_fn(step), q, sums);
    const bool logs = (step + 1) % cfg.log.every == 0 || step + 1 == cfg.steps;
    std::vector<float> packed = sums.pack(logs);
    comm.allreduce_sum(packed.data(), packed.size());
    sums.unpack(packed, logs);

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
    last = done;
    run.grad_evals += std::llround(sums.grad_evals);        // global: summed over ranks above
    const bool ends = done == cfg.steps || budget_spent();  // the final eval and save follow
    const double sec = seconds_since(t0);
    const double loss = sums.loss / cfg.meta_batch, acc = sums.acc / cfg.meta_batch;
    if (logs || ends) {
      JsonObject line;
      line.add("step", static_cast<double>(done)).add("loss", loss).add("acc", acc);
      if (cfg.algo == Algo::kUfom) line.add("q", q);
      if (sums.exact_tasks > 0) {
        if (logs) {  // fo_gap is summed over ranks on logging steps only
          double gap = 0;
          for (float g : sums.fo_gap)
            gap += static_cast<double>(g / sums.exact_tasks) * (g / sums.exact_tasks);
          line.add("fo_bias", std::sqrt(gap));
        }
        line.add("v2", sums.v2 / sums.exact_tasks).add("d2", sums.d2 / sums.exact_tasks);
      }
      line.add("exact_tasks", sums.exact_tasks).add("grad_evals", sums.grad_evals);
      line.add("grad_evals_total", static_cast<double>(run.grad_evals));
      line.add("sec", sec).add("tasks_per_s", cfg.meta_batch / sec);
      const double elapsed = seconds_since(t_start);
      line.add("elapsed", elapsed).add("train_elapsed", elapsed - side_seconds);
      line.add("ranks", comm.size());
      log.write(line);
    }
    char status[128];
    std::snprintf(status, sizeof status, "loss %.3f acc %.3f%s", loss, acc,
                  cfg.algo == Algo::kUfom ? (" q " + std::to_string(q).substr(0, 5)).c_str() : "");
    // With a budget, the share of it spent by this process drives the time estimate (steps is
    // then only an upper bound).
    const int64_t budget_left = cfg.budget.grad_evals - evals_at_start;
    progress.update(done, status,
                    budget_left > 0
                        ? std::max(static_cast<double>(done - first_step) /
                                       static_cast<double>(cfg.steps - first_step),
                                   static_cast<double>(run.grad_evals - evals_at_start) /
                                       static_cast<double>(budget_left))
                        : -1.0);

    if (cfg.dist.check_every > 0 && done % cfg.dist.check_every == 0 &&
        !all_equal(comm, checksum(theta)))
      throw Error(ExitCode::kRuntime,
                  detail::concat("ranks hold different parameters after step ", done,
                                 " (checksums differ): a rank computed differently; stopping. "
                                 "Checkpoints in ",
                                 cfg.checkpoint.dir, " are intact."));
    if (cfg.eval.every > 0 && done % cfg.eval.every == 0 && !ends) {
      EvalResult r;
      timed([&] { r = run_eval(done); });
      progress.finish_line();
      if (lead)
        std::printf("eval @ step %lld: %s acc %.2f%% ± %.2f%%\n", static_cast<long long>(done),
                    r.split.c_str(), 100 * r.acc_mean, 100 * r.acc_ci95);
    }
    if (cfg.checkpoint.every > 0 && done % cfg.checkpoint.every == 0 && !ends)
      timed([&] { save(done); });

    // A stop requested on any rank stops every rank after the same step.
    int64_t stop = stop_requested() ? 1 : 0;
    comm.allreduce_max(&stop, 1);
    if (stop && !ends) {
      progress.finish_line();
      const std::string ckpt = save(done);
      if (lead) {
        std::printf(
            "stopped by signal after step %lld of %lld; checkpoint %s\n"
            "resume with the same command plus: resume=latest (checkpoint.dir=%s)\n",
            static_cast<long long>(done), static_cast<long long>(cfg.steps), ckpt.c_str(),
            cfg.checkpoint.dir.c_str());
        std::fflush(stdout);
      }
      comm.barrier();
      EvalResult stopped;
      stopped.split = "stopped";
      return stopped;
    }
  }
  progress.finish_line();
  if (lead) {
    if (budget_spent())
      std::printf(
          "stopped after step %lld of %lld: gradient-evaluation budget spent (%lld >= "
          "budget.grad_evals = %lld)\n",
          static_cast<long long>(last), static_cast<long long>(cfg.steps),
          static_cast<long long>(run.grad_evals), static_cast<long long>(cfg.budget.grad_evals));
    else if (cfg.budget.grad_evals > 0)
      std::printf(
          "stopped after step %lld: all steps = %lld done before the budget (%lld of "
          "budget.grad_evals = %lld gradient evaluations spent)\n",
          static_cast<long long>(last), static_cast<long long>(cfg.steps),
          static_cast<long long>(run.grad_evals), static_cast<long long>(cfg.budget.grad_evals));
    else
      std::printf("stopped after step %lld: all steps = %lld done (%lld gradient evaluations)\n",
                  static_cast<long long>(last), static_cast<long long>(cfg.steps),
                  static_cast<long long>(run.grad_evals));
  }

  const EvalResult final_eval = run_eval(last);
  const std::string ckpt = save(last);
  if (lead) {
    std::printf(
        "final eval (%s, %d episodes, %d-way %d-shot, %d inner steps): accuracy %.2f%% ± %.2f%% "
        "(95%% CI)\n",
        final_eval.split.c_str(), final_eval.episodes, cfg.task.ways, cfg.task.shots,
        cfg.inner.eval_steps, 100 * final_eval.acc_mean, 100 * final_eval.acc_ci95);
    std::printf("checkpoint: %s\nmetrics: %s\ntotal time: %.1f s\n", ckpt.c_str(),
                log.path().c_str(), seconds_since(t_start));
  }
  comm.barrier();
  return final_eval;
}

}  // namespace

namespace {

// One rank's failure ends the whole job: no rank may be left waiting in a collective.
[[noreturn]] void end_job(dist::Comm& comm, ExitCode code, const char* what) {
  std::fprintf(stderr, "metatrain: rank %d of %d: %s: %s\n", comm.rank(), comm.size(),
               code == ExitCode::kUsage ? "error" : "fatal", what);
  std::fflush(stderr);
  comm.abort(static_cast<int>(code));
  std::abort();  // not reached: abort() ends the process
}

}  // namespace

EvalResult train(const Config& cfg) {
  if (cfg.algo == Algo::kSlbamm) return train_bilevel(cfg);
  check_supported(cfg);
  blas_use_single_thread();
  auto comm = dist::make_comm(cfg.dist.backend);
  try {
    return train_on(cfg, *comm);
  } catch (const Error& e) {
    if (comm->size() == 1) throw;
    end_job(*comm, e.code(), e.what());
  } catch (const std::exception& e) {
    if (comm->size() == 1) throw;
    end_job(*comm, ExitCode::kRuntime, e.what());
  }
}

}  // namespace mt
