// algo=slbamm in metatrain (launch/bilevel_trainer.h): builds the problem of the slbamm: block,
// wires the solver's rank sums to Comm::allreduce_sum, logs metrics, and for hyper-cleaning
// reports test accuracy against the two baselines and how well the weights find the noise.
#include "launch/bilevel_trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "core/bilevel_toy.h"
#include "core/blas.h"
#include "core/check.h"
#include "core/slbamm.h"
#include "data/episode_store.h"
#include "launch/metrics_log.h"
#include "launch/progress.h"

namespace mt {

namespace {

SlBammOptions solver_options(const Config::Slbamm& s) {
  SlBammOptions o;
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

HypercleanModel hyperclean_model(const Config& cfg) {
  HypercleanModel m;
  m.name = cfg.slbamm.model;
  m.filters = cfg.slbamm.filters;
  m.seed = static_cast<uint64_t>(cfg.seed);
  return m;
}

}  // namespace

BilevelOutcome run_bilevel(const Config& cfg, dist::Comm& comm) {
  MT_REQUIRE(cfg.device == Config::Device::kCpu,
             "algo = slbamm runs on the CPU only; set device=cpu");
  const bool lead = comm.rank() == 0;
  const bool hyperclean = cfg.slbamm.problem == "hyperclean";

  HypercleanData data;
  std::unique_ptr<BilevelProblem> problem;
  std::string what;
  if (hyperclean) {
    MT_REQUIRE(cfg.data.path != "glyphs",
               "slbamm.problem = hyperclean needs data.path = an HDF5 store packed by metapack "
               "(e.g. metapack omniglot -o omniglot.h5 images_background*.zip), not glyphs");
    data = make_hyperclean_data(read_store(cfg.data.path), hyperclean_spec(cfg));
    problem =
        std::make_unique<HypercleanProblem>(data, hyperclean_model(cfg), comm.rank(), comm.size());
    what = detail::concat(
        "hyperclean on ", cfg.data.path, " (", cfg.data.train_split, "): ", data.classes,
        " classes, ", data.train.n, " train (", static_cast<int>(cfg.slbamm.noise * 100 + 0.5),
        "% corrupted), ", data.val.n, " val, ", data.test.n, " test; ",
        cfg.slbamm.model == "conv4" ? detail::concat("Conv-4 (", cfg.slbamm.filters, " filters)")
                                    : std::string("linear"),
        " classifier, ", problem->dim_y(), " parameters");
  } else {
    // Only rank 0 holds the toy; the other ranks add zeros to every sum.
    problem = std::make_unique<BilevelToy>(cfg.slbamm.toy_dim, lead);
    what = detail::concat("merely-convex toy, n = ", cfg.slbamm.toy_dim);
  }

  SumRanks sum_ranks;
  if (comm.size() > 1) sum_ranks = [&comm](double* buf, size_t n) { comm.allreduce_sum(buf, n); };
  SlBamm solver(*problem, solver_options(cfg.slbamm), sum_ranks);

  MetricsLog log(lead ? metrics_jsonl_path(cfg) : "", /*append=*/false);
  if (lead) {
    std::printf("effective config:\n%s\n", cfg.effective_yaml.c_str());
    std::printf("sl-BAMM (%s, z-step %s): %s; %s backend, %d rank%s\n", cfg.slbamm.variant.c_str(),
                cfg.slbamm.z_step.c_str(), what.c_str(), comm.backend().c_str(), comm.size(),
                comm.size() == 1 ? "" : "s");
    std::fflush(stdout);
  }

  BilevelOutcome out;
  out.steps = cfg.steps;
  Progress progress(cfg.steps, cfg.log.every, lead, "iteration");
  const auto t_start = std::chrono::steady_clock::now();
  for (int64_t k = 0; k < cfg.steps; ++k) {
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t done = k + 1;
    const bool report = done % cfg.log.every == 0 || done == cfg.steps;
    const SlBammStats st = solver.step(report);
    if (!report) continue;
    MT_CHECK(std::isfinite(st.F) && std::isfinite(st.f) && std::isfinite(st.x_grad),
             "non-finite objective at iteration ", done,
             ": the iteration diverged; lower slbamm.x_lr, y_lr or z_lr_max");
    JsonObject line;
    line.add("step", static_cast<double>(done)).add("F", st.F).add("f", st.f);
    if (st.x_err >= 0) line.add("x_err", st.x_err);
    line.add("z_res", st.z_res).add("x_grad", st.x_grad).add("mu", st.mu).add("eta", st.eta);
    line.add("sec", seconds_since(t0)).add("elapsed", seconds_since(t_start));
    log.write(line);
    char status[128];
    if (st.x_err >= 0)
      std::snprintf(status, sizeof status, "F %.4g f %.4g x_err %.3g", st.F, st.f, st.x_err);
    else
      std::snprintf(status, sizeof status, "F %.4g f %.4g z_res %.3g", st.F, st.f, st.z_res);
    progress.update(done, status);
    out.F = st.F;
    out.f = st.f;
    out.x_err = st.x_err;
  }
  progress.finish_line();
  const double total = seconds_since(t_start);

  if (hyperclean && lead) {
    out.hyperclean = true;
    // A single-process problem holding every example: the baselines train on all of them.
    const HypercleanProblem whole(data, hyperclean_model(cfg));
    out.test_acc = classifier_accuracy(whole, data.test, solver.y().data());
    std::vector<double> ones(data.train.n, 1.0), clean(data.train.n);
    for (int64_t i = 0; i < data.train.n; ++i) clean[i] = data.corrupted[i] ? 0.0 : 1.0;
    const double lr = cfg.slbamm.y_lr, tau = cfg.slbamm.tau;
    out.noisy_acc = classifier_accuracy(whole, data.test,
                                        train_weighted(whole, ones, cfg.steps, lr, tau).data());
    out.clean_acc = classifier_accuracy(whole, data.test,
                                        train_weighted(whole, clean, cfg.steps, lr, tau).data());
    out.detection = detect_corrupted(data, solver.x());
    JsonObject h;
    h.add("test_acc", out.test_acc).add("noisy_acc", out.noisy_acc);
    h.add("clean_acc", out.clean_acc).add("precision", out.detection.precision);
    h.add("recall", out.detection.recall).add("f1", out.detection.f1);
    h.add("flagged", static_cast<double>(out.detection.flagged));
    log.write(JsonObject().add("step", static_cast<double>(cfg.steps)).add("hyperclean", h));
    std::printf(
        "hyper-cleaning test accuracy: bilevel (%s) %.2f%%, noisy labels %.2f%%, clean subset "
        "%.2f%%\ncorrupted-label detection (sigma(x_i) < 0.5): precision %.3f recall %.3f F1 "
        "%.3f (%lld flagged)\n",
        cfg.slbamm.variant.c_str(), 100 * out.test_acc, 100 * out.noisy_acc, 100 * out.clean_acc,
        out.detection.precision, out.detection.recall, out.detection.f1,
        static_cast<long long>(out.detection.flagged));
  }
  if (lead) {
    if (out.x_err >= 0) std::printf("final x_err %.3e\n", out.x_err);
    std::printf("final F %.6g f %.6g\nmetrics: %s\ntotal time: %.2f s\n", out.F, out.f,
                log.path().c_str(), total);
    std::fflush(stdout);
  }
  comm.barrier();
  return out;
}

EvalResult train_bilevel(const Config& cfg) {
  blas_use_single_thread();
  auto comm = dist::make_comm(cfg.dist.backend);
  BilevelOutcome o;
  try {
    o = run_bilevel(cfg, *comm);
  } catch (const std::exception& e) {
    if (comm->size() == 1) throw;
    const Error* err = dynamic_cast<const Error*>(&e);
    const ExitCode code = err ? err->code() : ExitCode::kRuntime;
    std::fprintf(stderr, "metatrain: rank %d of %d: %s: %s\n", comm->rank(), comm->size(),
                 code == ExitCode::kUsage ? "error" : "fatal", e.what());
    std::fflush(stderr);
    comm->abort(static_cast<int>(code));
  }
  EvalResult r;
  r.split = o.hyperclean ? "test" : "bilevel";
  r.acc_mean = o.test_acc;
  r.loss_mean = o.F;
  return r;
}

}  // namespace mt
