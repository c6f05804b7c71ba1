// algo=slbamm in metatrain (launch/bilevel_trainer.h): builds the problem of the slbamm: block
// (the hyper-cleaning classifier from models/, its data from data/), wires the solver's rank
// sums to Comm::allreduce_sum, runs the iterations on the shared run scaffolding, and for
// hyper-cleaning reports test accuracy against the two baselines and how well the weights find
// the noise.
#include "launch/bilevel_trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>

#include "core/bilevel_checkpoint.h"
#include "core/bilevel_hyperclean.h"
#include "core/bilevel_toy.h"
#include "core/check.h"
#include "core/checkpoint.h"
#include "core/slbamm.h"
#include "data/episode_store.h"
#include "data/hyperclean_data.h"
#include "launch/metrics_log.h"
#include "launch/progress.h"
#include "launch/run_scaffold.h"
#include "launch/stop_signal.h"
#include "models/conv4.h"
#include "models/linear.h"
#include "models/sequential.h"

namespace mt {

namespace {

SlBammOptions solver_options(const Config& cfg) {
  const Config::Slbamm& s = cfg.slbamm;
  SlBammOptions o;
  o.reduce =
      cfg.dist.reduce == "float" ? SlBammOptions::Reduce::kFloat : SlBammOptions::Reduce::kExact;
  o.variant = s.variant == "averaged" ? SlBammOptions::Variant::kAveraged
              : s.variant == "plain"  ? SlBammOptions::Variant::kNoAveraging
                                      : SlBammOptions::Variant::kRegularised;
  o.mu0 = s.mu0;
  o.p = s.p;
  o.tau = s.tau;
  o.y_lr = s.y_lr;
  o.x_lr = s.x_lr;
  o.z_step = s.z_step == "scheduled" ? SlBammOptions::ZStep::kScheduled
                                     : SlBammOptions::ZStep::kLineSearch;
  o.z_lr = s.z_lr;
  o.z_lr_max = s.z_lr_max;
  o.reg = s.reg;
  return o;
}

HypercleanSpec hyperclean_spec(const Config& cfg) {
  HypercleanSpec h;
  h.split = cfg.data.train_split;
  h.classes = cfg.slbamm.classes;
  h.train_per_class = cfg.slbamm.train_per_class;
  h.val_per_class = cfg.slbamm.val_per_class;
  h.test_per_class = cfg.slbamm.test_per_class;
  h.noise = cfg.slbamm.noise;
  h.seed = static_cast<uint64_t>(cfg.seed);
  return h;
}

// The hyper-cleaning classifier of slbamm.model: Linear(D → K) on the standardised features,
// y = [W (K×D), b (K)]; or Conv-4 (max-pool) with slbamm.filters channels on the pixels in
// [0, 1], batch norm with the statistics of each block of examples (core/bilevel_hyperclean.h).
std::unique_ptr<Model<double>> hyperclean_classifier(const Config& cfg, const HypercleanData& d) {
  if (cfg.slbamm.model == "conv4")
    return make_conv4<double>({d.item, cfg.slbamm.filters, d.classes, Conv4Pool::kMax});
  auto linear = std::make_unique<Sequential<double>>(d.item, d.classes);
  linear->add("head", std::make_unique<Linear<double>>(d.item, d.classes));
  return linear;
}

HypercleanInput hyperclean_input(const Config& cfg) {
  return cfg.slbamm.model == "conv4" ? HypercleanInput::kPixels : HypercleanInput::kFeatures;
}

// One sl-BAMM run: the problem and solver built from the config, the checkpoints, log and
// progress around them. run() is the loop.
class BilevelTrainer {
 public:
  BilevelTrainer(const Config& cfg, dist::Comm& comm);
  EvalResult run();

 private:
  bool after_step(int64_t done);  // checkpoint cadence; false: stopped by a signal
  EvalResult finish();            // final checkpoint and, for hyper-cleaning, the test scores
  std::string save(int64_t step);
  void resume();
  [[noreturn]] void diverged(const char* what, int64_t done) const;

  const Config& cfg_;
  dist::Comm& comm_;
  const bool lead_;
  const bool hyperclean_;
  HypercleanData data_;
  std::unique_ptr<Model<double>> classifier_;
  std::unique_ptr<BilevelProblem> problem_;
  std::unique_ptr<SlBamm> solver_;
  CheckpointManager checkpoints_;
  int64_t first_step_ = 0;
  std::unique_ptr<MetricsLog> log_;
  std::unique_ptr<Progress> progress_;
  std::chrono::steady_clock::time_point t_start_;
  double F_ = 0, f_ = 0, x_err_ = -1;  // of the last logged iteration
};

BilevelTrainer::BilevelTrainer(const Config& cfg, dist::Comm& comm)
    : cfg_(cfg),
      comm_(comm),
      lead_(comm.rank() == 0),
      hyperclean_(cfg.slbamm.problem == "hyperclean"),
      checkpoints_(cfg.checkpoint.dir, cfg.checkpoint.keep) {
  std::string what;
  if (hyperclean_) {
    MT_REQUIRE(cfg.data.path != "glyphs",
               "slbamm.problem = hyperclean needs data.path = an HDF5 store packed by metapack "
               "(e.g. metapack omniglot -o omniglot.h5 images_background*.zip), not glyphs");
    data_ = make_hyperclean_data(read_store(cfg.data.path), hyperclean_spec(cfg));
    classifier_ = hyperclean_classifier(cfg, data_);
    const HypercleanInput in = hyperclean_input(cfg);
    problem_ = std::make_unique<HypercleanProblem>(
        *classifier_, hyperclean_batch(data_, data_.train, in),
        hyperclean_batch(data_, data_.val, in), static_cast<uint64_t>(cfg.seed), comm.rank(),
        comm.size());
    what = detail::concat(
        "hyperclean on ", cfg.data.path, " (", cfg.data.train_split, "): ", data_.classes,
        " classes, ", data_.train.n, " train (", static_cast<int>(cfg.slbamm.noise * 100 + 0.5),
        "% corrupted), ", data_.val.n, " val, ", data_.test.n, " test; ",
        cfg.slbamm.model == "conv4" ? detail::concat("Conv-4 (", cfg.slbamm.filters, " filters)")
                                    : std::string("linear"),
        " classifier, ", problem_->dim_y(), " parameters");
  } else {
    // Only rank 0 holds the toy; the other ranks add zeros to every sum.
    problem_ = std::make_unique<BilevelToy>(cfg.slbamm.toy_dim, lead_);
    what = detail::concat("merely-convex toy, n = ", cfg.slbamm.toy_dim);
  }

  SumRanks sum_ranks;
  SumRanksInt sum_ranks_int;
  if (comm.size() > 1) {
    MT_REQUIRE(cfg.dist.reduce == "float" || comm.size() <= kExactMaxRanks,
               "dist.reduce = exact takes at most ", kExactMaxRanks, " ranks (here ", comm.size(),
               "); use dist.reduce=float");
    sum_ranks = [&comm](double* buf, size_t n) { comm.allreduce_sum(buf, n); };
    sum_ranks_int = [&comm](int64_t* buf, size_t n) { comm.allreduce_sum(buf, n); };
  }
  solver_ = std::make_unique<SlBamm>(*problem_, solver_options(cfg), sum_ranks, sum_ranks_int);
  if (cfg.resume != "none") resume();
  first_step_ = solver_->iterations();

  log_ = std::make_unique<MetricsLog>(lead_ ? metrics_jsonl_path(cfg) : "", first_step_ > 0);
  print_run_header(cfg, comm,
                   detail::concat("sl-BAMM (", cfg.slbamm.variant, ", z-step ", cfg.slbamm.z_step,
                                  "): ", what, "; ", comm.backend(), " backend, ", comm.size(),
                                  comm.size() == 1 ? " rank" : " ranks"));
  progress_ = std::make_unique<Progress>(cfg.steps, cfg.log.every, lead_, "iteration");
}

// Rank 0 reads and validates the checkpoint; every rank receives the solver state.
void BilevelTrainer::resume() {
  BilevelCheckpoint c;
  on_lead_checked(comm_, "resume", [&] {
    const std::string path = resume_checkpoint(cfg_);
    c = read_bilevel_checkpoint(path, problem_->dim_x(), problem_->dim_y());
    accept_resume(cfg_, path, c.config_yaml, c.solver.step, c.world_size, comm_.size());
  });
  SlBammState s = lead_ ? c.solver : solver_->state();
  comm_.broadcast(&s.step, sizeof s.step, 0);
  for (std::vector<double>* v : {&s.x, &s.y, &s.z})
    comm_.broadcast(v->data(), v->size() * sizeof(double), 0);
  solver_->restore(s);
}

EvalResult BilevelTrainer::run() {
  install_stop_handlers();
  t_start_ = std::chrono::steady_clock::now();
  for (int64_t k = first_step_; k < cfg_.steps; ++k) {
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t done = k + 1;
    const bool report = done % cfg_.log.every == 0 || done == cfg_.steps;
    SlBammStats st;
    enter_step(cfg_, comm_, done);
    try {
      st = solver_->step(report);
    } catch (const SlBammRangeError& e) {  // the exact reduction refuses huge block parts
      throw Error(e.code(), detail::concat(e.what(),
                                           "; lower slbamm.x_lr, y_lr or z_lr_max. "
                                           "Checkpoints already in ",
                                           cfg_.checkpoint.dir, " are intact."));
    }
    leave_step(comm_, done);
    if (report) {
      if (!std::isfinite(st.F) || !std::isfinite(st.f) || !std::isfinite(st.x_grad))
        diverged("objective", done);
      JsonObject line;
      line.add("step", static_cast<double>(done)).add("F", st.F).add("f", st.f);
      if (st.x_err >= 0) line.add("x_err", st.x_err);
      line.add("z_res", st.z_res).add("x_grad", st.x_grad).add("mu", st.mu).add("eta", st.eta);
      line.add("sec", seconds_since(t0)).add("elapsed", seconds_since(t_start_));
      log_->write(line);
      char status[128];
      if (st.x_err >= 0)
        std::snprintf(status, sizeof status, "F %.4g f %.4g x_err %.3g", st.F, st.f, st.x_err);
      else
        std::snprintf(status, sizeof status, "F %.4g f %.4g z_res %.3g", st.F, st.f, st.z_res);
      progress_->update(done, status);
      F_ = st.F;
      f_ = st.f;
      x_err_ = st.x_err;
    }
    if (!after_step(done)) {
      EvalResult stopped;
      stopped.split = "stopped";
      stopped.loss_mean = F_;
      return stopped;
    }
  }
  return finish();
}

bool BilevelTrainer::after_step(int64_t done) {
  const bool last = done == cfg_.steps;
  if (periodic_checkpoint_due(cfg_, done, last)) save(done);
  if (!stop_everywhere(comm_) || last) return true;
  progress_->finish_line();
  announce_stop(cfg_, comm_, done, save(done));
  return false;
}

void BilevelTrainer::diverged(const char* what, int64_t done) const {
  throw Error(ExitCode::kRuntime,
              detail::concat("non-finite ", what, " at iteration ", done,
                             ": the iteration diverged; lower slbamm.x_lr, y_lr or z_lr_max. "
                             "Checkpoints already in ",
                             cfg_.checkpoint.dir, " are intact."));
}

std::string BilevelTrainer::save(int64_t step) {
  if (!lead_) return std::string();
  const BilevelCheckpoint c{solver_->state(), cfg_.effective_yaml, comm_.size()};
  MT_CHECK(c.solver.step == step, "checkpoint of step ", step, " holds step ", c.solver.step);
  // A diverged state is never saved over the last good one (x, y, z are only checked at logged
  // iterations otherwise).
  for (const std::vector<double>* v : {&c.solver.x, &c.solver.y, &c.solver.z})
    for (double e : *v)
      if (!std::isfinite(e)) diverged("iterate", step);
  return checkpoints_.save(step,
                           [&c](const std::string& path) { write_bilevel_checkpoint(path, c); });
}

EvalResult BilevelTrainer::finish() {
  progress_->finish_line();
  const double total = seconds_since(t_start_);
  const std::string ckpt = save(cfg_.steps);
  EvalResult r;
  r.split = hyperclean_ ? "test" : "bilevel";
  r.loss_mean = F_;
  if (hyperclean_ && lead_) {
    // The baselines train on every example in one process, with the same steps and schedule.
    const HypercleanInput in = hyperclean_input(cfg_);
    const Batch<double> train = hyperclean_batch(data_, data_.train, in);
    const Batch<double> test = hyperclean_batch(data_, data_.test, in);
    const uint64_t seed = static_cast<uint64_t>(cfg_.seed);
    const double lr = cfg_.slbamm.y_lr, tau = cfg_.slbamm.tau;
    std::vector<double> ones(data_.train.n, 1.0), clean(data_.train.n);
    for (int64_t i = 0; i < data_.train.n; ++i) clean[i] = data_.corrupted[i] ? 0.0 : 1.0;
    const double test_acc = classifier_accuracy(*classifier_, test, solver_->y().data());
    const double noisy_acc = classifier_accuracy(
        *classifier_, test,
        train_weighted(*classifier_, train, ones, seed, cfg_.steps, lr, tau).data());
    const double clean_acc = classifier_accuracy(
        *classifier_, test,
        train_weighted(*classifier_, train, clean, seed, cfg_.steps, lr, tau).data());
    const Detection det = detect_corrupted(data_, solver_->x());
    r.acc_mean = test_acc;
    r.episodes = static_cast<int>(data_.test.n);
    JsonObject h;
    h.add("test_acc", test_acc).add("noisy_acc", noisy_acc).add("clean_acc", clean_acc);
    h.add("precision", det.precision).add("recall", det.recall).add("f1", det.f1);
    h.add("flagged", static_cast<double>(det.flagged));
    log_->write(JsonObject().add("step", static_cast<double>(cfg_.steps)).add("hyperclean", h));
    std::printf(
        "hyper-cleaning test accuracy: bilevel (%s) %.2f%%, noisy labels %.2f%%, clean subset "
        "%.2f%%\ncorrupted-label detection (sigma(x_i) < 0.5): precision %.3f recall %.3f F1 "
        "%.3f (%lld flagged)\n",
        cfg_.slbamm.variant.c_str(), 100 * test_acc, 100 * noisy_acc, 100 * clean_acc,
        det.precision, det.recall, det.f1, static_cast<long long>(det.flagged));
  }
  if (lead_) {
    if (x_err_ >= 0) std::printf("final x_err %.3e\n", x_err_);
    std::printf("final F %.6g f %.6g\ncheckpoint: %s\nmetrics: %s\ntotal time: %.2f s\n", F_, f_,
                ckpt.c_str(), log_->path().c_str(), total);
    std::fflush(stdout);
  }
  comm_.barrier();
  return r;
}

}  // namespace

EvalResult train_bilevel(const Config& cfg) {
  MT_REQUIRE(cfg.device == Config::Device::kCpu,
             "algo = slbamm runs on the CPU only; set device=cpu");
  return train_on_ranks(cfg, [&cfg](dist::Comm& comm) { return BilevelTrainer(cfg, comm).run(); });
}

}  // namespace mt
