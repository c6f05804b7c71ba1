// The outer training loop (launch/trainer.h).
#include "launch/trainer.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "core/bias_probe.h"
#include "core/check.h"
#include "core/checkpoint.h"
#include "core/estimator.h"
#include "core/meta_params.h"
#include "core/meta_step.h"
#include "core/optimizer.h"
#include "core/ufom.h"
#include "data/episode_store.h"
#include "data/episode_stream.h"
#include "data/glyphs.h"
#include "dist/comm.h"
#include "dist/nccl_comm.h"
#include "dist/task_assignment.h"
#include "launch/backend.h"
#include "launch/bilevel_trainer.h"
#include "launch/evaluation.h"
#include "launch/metrics_log.h"
#include "launch/progress.h"
#include "launch/run_scaffold.h"
#include "launch/stop_signal.h"
#include "models/conv4.h"
#include "models/resnet12.h"

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
  if (cfg.algo == Algo::kSlbamm) return in;
  const Config::Inner& c = cfg.inner;  // resolved by the config: no "auto" left
  in.rates = c.rates == "per_param"        ? Rates::kPerParam
             : c.rates == "per_layer_step" ? Rates::kPerLayerStep
                                           : Rates::kFixed;
  in.adapt = c.adapt == "head" ? Adapt::kHead : c.adapt == "body" ? Adapt::kBody : Adapt::kAll;
  in.method = algo_preset(cfg.algo).method;
  in.multi_step_loss = c.multi_step_loss == "true";
  in.msl_anneal_steps = c.msl_anneal_steps;
  in.prox = cfg.imaml.prox;
  in.cg_steps = cfg.imaml.cg_steps;
  return in;
}

ParamLayout meta_parameters(const Config& cfg, const Model<float>& model) {
  return meta_layout(model.layout(), inner_loop(cfg));
}

std::unique_ptr<Model<float>> make_model(const Config& cfg, Shape input) {
  const Activation act =
      cfg.model.activation == "leaky_relu" ? Activation::kLeakyRelu : Activation::kRelu;
  if (cfg.model.name == "resnet12") {
    MT_CHECK(cfg.model.widths.size() == 4, "resnet12 needs 4 widths");
    ResNet12Spec spec;
    spec.input = input;
    std::copy(cfg.model.widths.begin(), cfg.model.widths.end(), spec.widths.begin());
    spec.ways = cfg.task.ways;
    spec.activation = act;
    return make_resnet12<float>(spec);
  }
  Conv4Spec spec;
  spec.input = input;
  spec.filters = cfg.model.filters;
  spec.ways = cfg.task.ways;
  spec.pool = cfg.model.pool == Config::Model::Pool::kMax ? Conv4Pool::kMax : Conv4Pool::kStride;
  spec.activation = act;
  return make_conv4<float>(spec);
}

namespace {

// Rejects settings this build cannot run yet, naming the key.
void check_supported(const Config& cfg) {
  MT_REQUIRE(cfg.dist.backend != "nccl" || cfg.device == Config::Device::kCuda,
             "dist.backend = nccl needs device=cuda (NCCL sums device buffers); use "
             "dist.backend=mpi (or auto) with device=cpu");
  const InnerLoop in = inner_loop(cfg);
  const bool plain = in.rates == Rates::kFixed && in.adapt == Adapt::kAll &&
                     in.method == Method::kUnrolled && !in.multi_step_loss;
  MT_REQUIRE(cfg.log.bias_every == 0 || plain, "log.bias_every = ", cfg.log.bias_every,
             ": the first-order bias probe measures MAML's estimators (algo maml, fomaml, ufom "
             "with a fixed rate on every tensor); set log.bias_every=0 for algo ",
             to_string(cfg.algo));
}

// 64-bit FNV-1a of θ's bytes: ranks compare it to prove they hold the same parameters.
int64_t checksum(const std::vector<float>& theta) {
  uint64_t h = 1469598103934665603ull;
  const auto* p = reinterpret_cast<const unsigned char*>(theta.data());
  for (size_t i = 0; i < theta.size() * sizeof(float); ++i) h = (h ^ p[i]) * 1099511628211ull;
  return static_cast<int64_t>(h);
}

// "; activations ~X MiB per task (n examples), ~Y MiB on T threads" for the CPU backend: what
// one task in flight holds (Sequential::activation_bytes: a gradient on the query set, and HVPs
// on the support set when the algorithm takes the exact path), and in all, as each worker
// thread keeps one task's buffers. Empty on other backends.
std::string activation_clause(const Config& cfg, const Model<float>& model, int threads) {
  const auto* seq = dynamic_cast<const Sequential<float>*>(&model);
  if (cfg.device != Config::Device::kCpu || !seq) return "";
  const int n = cfg.task.ways * std::max(cfg.task.shots, cfg.task.queries);
  const bool hvp = algo_preset(cfg.algo).estimator != Algo::kFomaml && cfg.inner.truncate != 0;
  const double mib = seq->activation_bytes(n, cfg.task.ways * cfg.task.shots, hvp) / 1048576.0;
  auto text = [](double x) {
    char s[32];
    std::snprintf(s, sizeof s, x < 10 ? "%.1f" : "%.0f", x);
    return std::string(s);
  };
  return detail::concat("; activations ~", text(mib), " MiB per task (", n, " examples), ~",
                        text(mib * threads), " MiB on ", threads,
                        threads == 1 ? " thread" : " threads");
}

// True when every rank passed the same value: max(v) == min(v), with min(v) = ~max(~v).
bool all_equal(dist::Comm& comm, int64_t v) {
  int64_t buf[2] = {v, ~v};
  comm.allreduce_max(buf, 2);
  return buf[0] == ~buf[1];
}

CheckpointState checkpoint_state(const Config& cfg, const ParamLayout& layout,
                                 const std::vector<float>& theta, Optimizer<float>& opt,
                                 int64_t step, int64_t grad_evals, const Estimator& est,
                                 int world) {
  CheckpointState s;
  s.layout = layout;
  s.params = theta;
  s.optimizer.name = opt.name();
  s.optimizer.step = opt.steps();
  for (auto& [name, buf] : opt.state()) s.optimizer.buffers.emplace_back(name, *buf);
  s.step = step;
  s.seed = static_cast<uint64_t>(cfg.seed);
  const EstimatorState e = est.state();
  s.ufom = {e.v2_ema, e.d2_ema, e.count, est.q()};
  s.data_cursor = step;  // episodes are keyed by (seed, step, task): the step is the cursor
  s.config_yaml = cfg.effective_yaml;
  s.world_size = world;
  s.grad_evals = grad_evals;
  return s;
}

// debug.dump: θ, the episodes and both gradients of every task of the first outer step.
// Computed on the run's backend, so a dump of a cuda run checks the GPU's gradients.
void write_dump(const Config& cfg, BatchedModel<float>& backend, const InnerLoop& inner,
                const ParamLayout& layout, const std::vector<float>& theta,
                const EpisodeSource& source, const EpisodeSpec& spec, int threads) {
  const Algo exact_path = inner.method == Method::kReptile ? Algo::kFomaml : Algo::kMaml;
  MetaStep<float> exact(backend, inner,
                        {exact_path, static_cast<uint64_t>(cfg.seed), threads,
                         /*keep_task_gradients=*/true});
  std::vector<int64_t> ids(cfg.meta_batch);
  for (int t = 0; t < cfg.meta_batch; ++t) ids[t] = t;
  MetaStepSums<float> sums;
  sums.reset(static_cast<int64_t>(theta.size()));
  exact.run(
      theta.data(), 0, ids,
      [&](int64_t t, Episode<float>& ep) { source.sample(spec, cfg.seed, 0, t, ep); }, 1.0, sums);
  std::vector<DumpTask> tasks(cfg.meta_batch);
  for (int t = 0; t < cfg.meta_batch; ++t) {
    tasks[t].episode = exact.task_episode(t);
    tasks[t].g_fo.assign(exact.task_fo(t), exact.task_fo(t) + theta.size());
    tasks[t].g_exact.assign(exact.task_exact(t), exact.task_exact(t) + theta.size());
  }
  write_debug_dump(cfg.debug.dump, layout, theta, tasks, cfg.effective_yaml, cfg.inner.lr,
                   cfg.inner.steps);
  std::printf("wrote debug dump of step 0 (%d tasks) to %s\n", cfg.meta_batch,
              cfg.debug.dump.c_str());
}

}  // namespace

std::unique_ptr<EpisodeSource> make_episode_source(const Config& cfg) {
  if (cfg.data.path == "glyphs") return std::make_unique<GlyphSource>();
  StoreOptions opt;
  opt.residency = parse_residency(cfg.data.resident);
  opt.cuda = cfg.device == Config::Device::kCuda;
  auto store = std::make_unique<EpisodeStore>(cfg.data.path, opt);
  // Device residency: episodes carry only image indices and the CUDA backend gathers the pixels
  // on the GPU (make_backend), except where the host needs pixels (the debug dump writes them).
  if (store->residency() == Residency::kDevice && cfg.debug.dump.empty())
    store->set_indices_only(true);
  return store;
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
void resume_from(const Config& cfg, const ParamLayout& layout, dist::Comm& comm, RunState& run,
                 Optimizer<float>& opt, Estimator& est) {
  CheckpointState st;
  const bool lead = comm.rank() == 0;
  on_lead_checked(comm, "resume", [&] {
    const std::string path = resume_checkpoint(cfg);
    st = read_checkpoint(path, layout);
    accept_resume(cfg, path, st.config_yaml, st.step, st.world_size, comm.size());
    MT_REQUIRE(st.optimizer.buffers.size() == opt.state().size(), "resume from ", path,
               ": optimizer state does not match outer.optimizer");
  });

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
  run.grad_evals = counts[3];
  est.restore({ema[0], ema[1], counts[2]});
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

// One meta-training run, built once from the config: the episode source, the backend's batched
// model and the engine on it, the estimator, the communicator's sums, the optimizer, and the
// checkpoint / log / evaluation around them. run() is the outer loop.
class Trainer {
 public:
  Trainer(const Config& cfg, dist::Comm& comm);
  EvalResult run();

 private:
  struct StepResult {
    double q = 0, sec = 0, loss = 0, acc = 0;
    bool logs = false;  // a metrics line is written (and fo_gap summed over ranks)
  };
  StepResult meta_step(int64_t step);                // episodes → engine → comm → optimizer
  void reduce(int64_t step, bool with_fo_gap);       // Σ over ranks, mean over the meta-batch
  void log_step(int64_t done, const StepResult& r);  // metrics line and progress
  void warn_if_inner_loop_diverges(int64_t done, double loss);
  bool after_step(int64_t done);  // checks, evaluation, checkpoint; false: stopped by a signal
  EvalResult finish();            // final evaluation and checkpoint
  EvalResult evaluate_now(int64_t step);
  void periodic_eval(int64_t step);
  void probe_bias(int64_t step, double q);
  std::string save(int64_t step);
  bool budget_spent() const {
    return cfg_.budget.grad_evals > 0 && run_.grad_evals >= cfg_.budget.grad_evals;
  }
  bool ends(int64_t done) const { return done == cfg_.steps || budget_spent(); }
  template <typename F>
  void off_the_clock(F&& work);  // evaluation, probes and checkpoints: not training time
  std::vector<int64_t> episode_tasks() const;

  const Config& cfg_;
  dist::Comm& comm_;
  const bool lead_;
  const int threads_;
  std::unique_ptr<EpisodeSource> source_;
  const EpisodeSpec train_spec_, eval_spec_;
  std::unique_ptr<Model<float>> model_;  // the per-task model: layout, initial θ, CPU backend
  ParamLayout layout_;                   // the meta-parameters ψ: θ, then the learned rates
  std::unique_ptr<BatchedModel<float>> backend_;
  const InnerLoop inner_;
  const double cost_fo_, cost_exact_;
  std::unique_ptr<Estimator> estimator_;
  std::unique_ptr<MetaStep<float>> meta_step_;
  std::unique_ptr<MetaEngine<float>> eval_engine_;
  std::unique_ptr<BiasProbe<float>> probe_;
  std::unique_ptr<Optimizer<float>> opt_;
  CheckpointManager checkpoints_;
  RunState run_;
  int64_t first_step_ = 0, last_ = 0;
  std::unique_ptr<MetricsLog> log_;
  std::unique_ptr<EpisodeStream> stream_;
  MetaStepSums<float> sums_;
  std::unique_ptr<Progress> progress_;
  std::chrono::steady_clock::time_point t_start_;
  double side_seconds_ = 0;
  bool warned_inner_ = false;
  int64_t evals_at_start_ = 0;
};

Trainer::Trainer(const Config& cfg, dist::Comm& comm)
    : cfg_(cfg),
      comm_(comm),
      lead_(comm.rank() == 0),
      threads_(worker_threads(cfg)),
      source_(make_episode_source(cfg)),
      train_spec_{cfg.data.train_split, cfg.task.ways, cfg.task.shots, cfg.task.queries},
      eval_spec_{cfg.data.eval_split, cfg.task.ways, cfg.task.shots, cfg.task.queries},
      inner_(inner_loop(cfg)),
      cost_fo_(static_cast<double>(first_order_cost(inner_))),
      cost_exact_(static_cast<double>(exact_path_cost(inner_))),
      checkpoints_(cfg.checkpoint.dir, cfg.checkpoint.keep) {
  source_->validate(train_spec_);
  source_->validate(eval_spec_);
  model_ = make_model(cfg, source_->image_shape());
  backend_ = make_backend(cfg, *model_, *source_, comm.local_rank(), threads_);
  EstimatorSettings es{cfg.algo,          cfg.ufom.q, cfg.ufom.adaptive, cfg.ufom.q_min,
                       cfg.ufom.d2_scale, cost_fo_,   cost_exact_};
  es.first_order_steps = cfg.inner.first_order_steps;
  estimator_ = make_estimator(es);
  MetaStepSettings ms{cfg.algo, static_cast<uint64_t>(cfg.seed), threads_};
  ms.first_order_steps = cfg.inner.first_order_steps;
  meta_step_ = std::make_unique<MetaStep<float>>(*backend_, inner_, ms);
  eval_engine_ = std::make_unique<MetaEngine<float>>(*backend_, inner_);
  if (cfg.log.bias_every > 0)
    probe_ = std::make_unique<BiasProbe<float>>(*backend_, inner_, static_cast<uint64_t>(cfg.seed),
                                                threads_);
  layout_ = meta_parameters(cfg, *model_);  // θ, then the learned rates
  const int64_t d = layout_.total();
  LrSchedule schedule;
  schedule.kind =
      cfg.outer.schedule == "cosine" ? LrSchedule::Kind::kCosine : LrSchedule::Kind::kConstant;
  schedule.warmup = cfg.outer.warmup;
  schedule.total = cfg.steps;
  opt_ =
      make_optimizer<float>(cfg.outer.optimizer == Config::Outer::Optimizer::kAdam ? "adam" : "sgd",
                            d, cfg.outer.lr, cfg.outer.momentum, schedule);

  run_.theta.resize(d);
  model_->init(run_.theta.data(), static_cast<uint64_t>(cfg.seed));
  init_rates(model_->layout(), inner_, run_.theta.data());
  if (cfg.resume != "none")
    resume_from(cfg, layout_, comm, run_, *opt_, *estimator_);
  else
    comm.broadcast(run_.theta.data(), run_.theta.size() * sizeof(float), 0);  // rank 0's θ
  first_step_ = last_ = run_.step;
  evals_at_start_ = run_.grad_evals;
  log_ = std::make_unique<MetricsLog>(lead_ ? metrics_jsonl_path(cfg) : "", first_step_ > 0);

  print_run_header(
      cfg, comm,
      detail::concat(
          "model ", describe_model(cfg), ": ", model_->layout().total(), " parameters",
          d > model_->layout().total()
              ? detail::concat(" + ", d - model_->layout().total(), " learned inner rates")
              : std::string(),
          activation_clause(cfg, *model_, threads_), "; data ", source_->name(), " (",
          cfg.data.path, "); ", threads_, " threads; ", comm.backend(),
          comm.backend() == "nccl" ? " (NCCL " + dist::nccl_version() + ")" : "", " backend, ",
          comm.size(), comm.size() == 1 ? " rank" : " ranks", "\ndevice: ", backend_->describe()));
  if (!cfg.debug.dump.empty() && lead_ && first_step_ == 0)
    write_dump(cfg, *backend_, inner_, layout_, run_.theta, *source_, train_spec_, threads_);

  // Training episodes: drawn ahead by the prefetching stream, or inline (always inline with the
  // balanced assignment, whose task lists change every step). Same episodes either way.
  const bool fixed_tasks = cfg.dist.assign == "modulo" || cfg.algo != Algo::kUfom;
  if (cfg.data.prefetch > 0 && fixed_tasks)
    stream_ = std::make_unique<EpisodeStream>(
        *source_, train_spec_, static_cast<uint64_t>(cfg.seed),
        dist::modulo_tasks(cfg.meta_batch, comm.rank(), comm.size()), first_step_, cfg.steps,
        EpisodeStream::Options{cfg.data.prefetch, 0});
  progress_ = std::make_unique<Progress>(cfg.steps, cfg.log.every, lead_);
}

template <typename F>
void Trainer::off_the_clock(F&& work) {
  const auto t0 = std::chrono::steady_clock::now();
  work();
  side_seconds_ += seconds_since(t0);
}

EvalResult Trainer::run() {
  install_stop_handlers();
  t_start_ = std::chrono::steady_clock::now();
  // Curves start where training starts: the accuracy of the initial θ (a fresh run only).
  if (first_step_ == 0 && cfg_.eval.every > 0 && cfg_.steps > 0) periodic_eval(0);
  for (int64_t step = first_step_; step < cfg_.steps && !budget_spent(); ++step) {
    enter_step(cfg_, comm_, step + 1);
    const StepResult r = meta_step(step);
    last_ = step + 1;
    leave_step(comm_, last_);
    log_step(last_, r);
    if (!after_step(last_)) {
      EvalResult stopped;
      stopped.split = "stopped";
      return stopped;
    }
  }
  return finish();
}

Trainer::StepResult Trainer::meta_step(int64_t step) {
  const auto t0 = std::chrono::steady_clock::now();
  StepResult r;
  r.q = estimator_->q();
  if (probe_ && step % cfg_.log.bias_every == 0) off_the_clock([&] { probe_bias(step, r.q); });

  if (cfg_.dist.reduce == "exact") {
    MT_REQUIRE(comm_.size() <= kExactMaxRanks && cfg_.meta_batch <= kExactMaxTasks,
               "dist.reduce = exact takes at most ", kExactMaxRanks,
               " ranks and meta_batch = ", kExactMaxTasks, " (here ", comm_.size(), " and ",
               cfg_.meta_batch, "); use dist.reduce=float");
    sums_.reset_exact(layout_.total(), cfg_.meta_batch);
  } else {
    sums_.reset(layout_.total());
  }
  const std::vector<int64_t> my_tasks =
      tasks_of_step(cfg_, comm_, step, r.q, cost_fo_, cost_exact_);
  try {
    meta_step_->run(
        run_.theta.data(), static_cast<uint64_t>(step), my_tasks,
        [&](int64_t t, Episode<float>& ep) {
          if (stream_)
            stream_->take(step, t, ep);
          else
            source_->sample(train_spec_, cfg_.seed, static_cast<uint64_t>(step), t, ep);
        },
        r.q, sums_);
  } catch (const Error& e) {  // dist.reduce = exact refuses non-finite and huge task gradients
    if (!sums_.exact || e.code() != ExitCode::kRuntime) throw;
    throw Error(e.code(), detail::concat(e.what(), ". Checkpoints already in ", cfg_.checkpoint.dir,
                                         " are intact."));
  }
  r.logs = (step + 1) % cfg_.log.every == 0 || step + 1 == cfg_.steps;
  reduce(step, r.logs);
  estimator_->update(sums_.exact_tasks, sums_.v2, sums_.d2);
  opt_->step(run_.theta.data(), sums_.grad.data());
  run_.grad_evals += std::llround(sums_.grad_evals);  // global: summed over ranks
  r.sec = seconds_since(t0);
  r.loss = sums_.loss / cfg_.meta_batch;
  r.acc = sums_.acc / cfg_.meta_batch;
  return r;
}

void Trainer::reduce(int64_t step, bool with_fo_gap) {
  if (sums_.exact) {  // dist.reduce = exact: one int64 allreduce, the same bits for any N
    std::vector<int64_t> packed = sums_.pack_exact(with_fo_gap);
    comm_.allreduce_sum(packed.data(), packed.size());
    sums_.unpack_exact(packed, with_fo_gap);
  } else {
    std::vector<float> packed = sums_.pack(with_fo_gap);
    comm_.allreduce_sum(packed.data(), packed.size());
    sums_.unpack(packed, with_fo_gap);
  }
  const float inv_b = 1.0f / cfg_.meta_batch;
  for (float& g : sums_.grad) g *= inv_b;
  for (size_t k = 0; k < sums_.grad.size(); ++k)
    if (!std::isfinite(sums_.grad[k]))
      throw Error(ExitCode::kRuntime,
                  detail::concat("non-finite meta-gradient at step ", step + 1, " in ",
                                 layout_.at(static_cast<int64_t>(k))->name,
                                 ": training diverged; lower inner.lr or outer.lr. Checkpoints "
                                 "already in ",
                                 cfg_.checkpoint.dir, " are intact."));
}

// The first steps' query loss after adaptation far above chance (ln ways) means the inner steps
// blow up (inner.lr too large for the data): a run that would otherwise train on silently at
// chance. Warned once, on rank 0, during the first kSteps steps of this process.
void Trainer::warn_if_inner_loop_diverges(int64_t done, double loss) {
  constexpr int64_t kSteps = 5;
  constexpr double kTimesChance = 3;
  const double chance = std::log(static_cast<double>(cfg_.task.ways));
  if (!lead_ || warned_inner_ || done - first_step_ > kSteps || !(loss > kTimesChance * chance))
    return;
  warned_inner_ = true;
  std::fprintf(stderr,
               "warning: step %lld: the query loss after %d inner step%s is %.3g, over %.0f times "
               "chance (ln %d = %.2f): the inner steps diverge; lower inner.lr (now %g; README's "
               "examples give per-dataset values, e.g. 0.01 for 84x84 images)\n",
               static_cast<long long>(done), inner_.steps, inner_.steps == 1 ? "" : "s", loss,
               kTimesChance, cfg_.task.ways, chance, inner_.lr);
}

void Trainer::log_step(int64_t done, const StepResult& r) {
  warn_if_inner_loop_diverges(done, r.loss);
  if (r.logs || ends(done)) {
    JsonObject line;
    line.add("step", static_cast<double>(done)).add("loss", r.loss).add("acc", r.acc);
    if (cfg_.algo == Algo::kUfom) line.add("q", r.q);
    if (sums_.exact_tasks > 0) {
      if (r.logs) {  // fo_gap is summed over ranks on logging steps only
        double gap = 0;
        for (float g : sums_.fo_gap)
          gap += static_cast<double>(g / sums_.exact_tasks) * (g / sums_.exact_tasks);
        line.add("fo_bias", std::sqrt(gap));
      }
      line.add("v2", sums_.v2 / sums_.exact_tasks).add("d2", sums_.d2 / sums_.exact_tasks);
    }
    line.add("exact_tasks", sums_.exact_tasks).add("grad_evals", sums_.grad_evals);
    line.add("grad_evals_total", static_cast<double>(run_.grad_evals));
    line.add("sec", r.sec).add("tasks_per_s", cfg_.meta_batch / r.sec);
    const double elapsed = seconds_since(t_start_);
    line.add("elapsed", elapsed).add("train_elapsed", elapsed - side_seconds_);
    line.add("ranks", comm_.size());
    log_->write(line);
  }
  char status[128];
  std::snprintf(status, sizeof status, "loss %.3f acc %.3f%s", r.loss, r.acc,
                cfg_.algo == Algo::kUfom ? (" q " + std::to_string(r.q).substr(0, 5)).c_str() : "");
  // With a budget, the share of it spent by this process drives the time estimate (steps is
  // then only an upper bound).
  const int64_t budget_left = cfg_.budget.grad_evals - evals_at_start_;
  progress_->update(done, status,
                    budget_left > 0
                        ? std::max(static_cast<double>(done - first_step_) /
                                       static_cast<double>(cfg_.steps - first_step_),
                                   static_cast<double>(run_.grad_evals - evals_at_start_) /
                                       static_cast<double>(budget_left))
                        : -1.0);
}

bool Trainer::after_step(int64_t done) {
  if (cfg_.dist.check_every > 0 && done % cfg_.dist.check_every == 0 &&
      !all_equal(comm_, checksum(run_.theta)))
    throw Error(ExitCode::kRuntime,
                detail::concat("ranks hold different parameters after step ", done,
                               " (checksums differ): a rank computed differently; stopping. "
                               "Checkpoints in ",
                               cfg_.checkpoint.dir, " are intact."));
  if (cfg_.eval.every > 0 && done % cfg_.eval.every == 0 && !ends(done)) periodic_eval(done);
  if (periodic_checkpoint_due(cfg_, done, ends(done))) off_the_clock([&] { save(done); });
  if (!stop_everywhere(comm_) || ends(done)) return true;
  progress_->finish_line();
  announce_stop(cfg_, comm_, done, save(done));
  return false;
}

// A periodic evaluation, printed and logged; off the training clock.
void Trainer::periodic_eval(int64_t step) {
  EvalResult r;
  off_the_clock([&] { r = evaluate_now(step); });
  progress_->finish_line();
  if (lead_)
    std::printf("eval @ step %lld: %s acc %.2f%% ± %.2f%%\n", static_cast<long long>(step),
                r.split.c_str(), 100 * r.acc_mean, 100 * r.acc_ci95);
}

EvalResult Trainer::finish() {
  progress_->finish_line();
  const long long last = last_, steps = cfg_.steps, spent = run_.grad_evals,
                  budget = cfg_.budget.grad_evals;
  if (lead_) {
    if (budget_spent())
      std::printf(
          "stopped after step %lld of %lld: gradient-evaluation budget spent (%lld >= "
          "budget.grad_evals = %lld)\n",
          last, steps, spent, budget);
    else if (budget > 0)
      std::printf(
          "stopped after step %lld: all steps = %lld done before the budget (%lld of "
          "budget.grad_evals = %lld gradient evaluations spent)\n",
          last, steps, spent, budget);
    else
      std::printf("stopped after step %lld: all steps = %lld done (%lld gradient evaluations)\n",
                  last, steps, spent);
  }
  const EvalResult final_eval = evaluate_now(last_);
  const std::string ckpt = save(last_);
  if (lead_) {
    std::printf(
        "final eval (%s, %d episodes, %d-way %d-shot, %d inner steps): accuracy %.2f%% ± %.2f%% "
        "(95%% CI)\n",
        final_eval.split.c_str(), final_eval.episodes, cfg_.task.ways, cfg_.task.shots,
        cfg_.inner.eval_steps, 100 * final_eval.acc_mean, 100 * final_eval.acc_ci95);
    std::printf("checkpoint: %s\nmetrics: %s\ntotal time: %.1f s\n", ckpt.c_str(),
                log_->path().c_str(), seconds_since(t_start_));
  }
  comm_.barrier();
  return final_eval;
}

// Every rank evaluates its block of the episodes (launch/evaluation.h); rank 0 logs.
EvalResult Trainer::evaluate_now(int64_t step) {
  const EvalResult r = evaluate_split(*eval_engine_, run_.theta, *source_, eval_spec_, cfg_.seed,
                                      cfg_.eval.episodes, cfg_.inner.eval_steps, threads_, &comm_);
  if (!lead_) return r;
  JsonObject e;
  e.add("split", r.split).add("episodes", r.episodes).add("acc_mean", r.acc_mean);
  e.add("acc_ci95", r.acc_ci95).add("loss_mean", r.loss_mean);
  log_->write(JsonObject().add("step", static_cast<double>(step)).add("eval", e));
  return r;
}

// log.bias_every: the first-order bias at the current θ (core/bias_probe.h), on tasks
// kProbeTaskBase + k of the training split, indices no meta-batch reaches, so training never
// sees them. Spread over the ranks like a meta-batch; logged as a "bias" line by rank 0.
void Trainer::probe_bias(int64_t step, double q) {
  constexpr int64_t kProbeTaskBase = int64_t{1} << 40;  // < 2^44, see BiasProbe::run
  const auto t0 = std::chrono::steady_clock::now();
  const bool ufom = cfg_.algo == Algo::kUfom;
  std::vector<int64_t> mine;
  for (int64_t k = comm_.rank(); k < cfg_.log.bias_tasks; k += comm_.size())
    mine.push_back(kProbeTaskBase + k);
  BiasSums<float> bs;
  const bool exact = cfg_.dist.reduce == "exact";  // the same bits for any number of ranks
  if (exact)
    bs.reset_exact(model_->layout().total(), kProbeTaskBase, cfg_.log.bias_tasks);
  else
    bs.reset(model_->layout().total());
  probe_->run(
      run_.theta.data(), static_cast<uint64_t>(step), mine,
      [&](int64_t t, Episode<float>& ep) { source_->sample(train_spec_, cfg_.seed, step, t, ep); },
      ufom ? q : 0.0, bs);
  if (exact) {
    std::vector<int64_t> packed = bs.pack_exact();
    comm_.allreduce_sum(packed.data(), packed.size());
    bs.unpack_exact(packed);
  } else {
    std::vector<float> packed = bs.pack();
    comm_.allreduce_sum(packed.data(), packed.size());
    bs.unpack(packed);
  }
  const BiasReport r = bias_report(bs, ufom);
  JsonObject b;
  b.add("tasks", r.tasks).add("fo", r.fo).add("fo_noise", r.fo_noise);
  if (ufom) b.add("ufom", r.ufom).add("ufom_noise", r.ufom_noise).add("q", q);
  b.add("exact_norm", r.exact_norm).add("sec", seconds_since(t0));
  log_->write(JsonObject().add("step", static_cast<double>(step)).add("bias", b));
}

std::string Trainer::save(int64_t step) {
  return lead_ ? checkpoints_.save(checkpoint_state(cfg_, layout_, run_.theta, *opt_, step,
                                                    run_.grad_evals, *estimator_, comm_.size()))
               : std::string();
}

}  // namespace

// `launch` is the config of the command line; a resumed run trains with the checkpoint's config
// under it (launch_config).
EvalResult train(const Config& launch) {
  const Config cfg = launch_config(launch);
  if (cfg.algo == Algo::kSlbamm) return train_bilevel(cfg);
  check_supported(cfg);
  return train_on_ranks(cfg, [&cfg](dist::Comm& comm) { return Trainer(cfg, comm).run(); });
}

}  // namespace mt
