// metabench estimators: how close every cheap estimator of MAML's meta-gradient comes to the
// exact one, on the same θ and tasks. For each estimator (FOMAML, UFOM at several q, the
// k-truncated adjoint, iMAML at several μ and conjugate-gradient steps, Reptile's direction) it
// reports the cosine and relative error of its meta-batch mean to the exact mean, the per-draw
// error and variance of the stochastic ones, gradient evaluations, wall time and the predicted
// memory per task; JSON lines, and an SVG of error against cost.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "core/blas.h"
#include "core/check.h"
#include "core/checkpoint.h"
#include "core/cpu_kernels.h"
#include "core/meta_engine.h"
#include "core/ufom.h"
#include "launch/backend.h"
#include "launch/config.h"
#include "launch/exit_codes.h"
#include "launch/metrics_log.h"
#include "launch/plot.h"
#include "launch/trainer.h"
#include "models/sequential.h"

namespace {

void usage() {
  std::printf(
      "usage: metabench estimators [--checkpoint FILE.h5] [--tasks N] [--draws D]\n"
      "                            [--out FILE.jsonl] [--svg FILE.svg] [key=value ...]\n\n"
      "Scores every estimator of MAML's meta-gradient against the exact one on the same\n"
      "parameters and N training tasks (default 16) of the config (a --config-free metatrain\n"
      "key=value list, or the checkpoint's stored config with these keys on top): FOMAML, UFOM\n"
      "at q = 0.05, 0.1, 0.25, 0.5 (D = 200 coin draws per q), the adjoint truncated to k\n"
      "steps, iMAML at mu = 0.5, 2, 8 with 2, 5, 10 conjugate-gradient steps, and Reptile's\n"
      "direction. Without --checkpoint, the parameters are the config's initialisation.\n"
      "One JSON line per estimator on stdout (and in --out): cosine and relative error of its\n"
      "mean over the tasks to the exact mean; for UFOM the mean error of one draw's mean and\n"
      "the per-task variance relative to |exact mean|^2; gradient evaluations per task, seconds,\n"
      "predicted activation memory per task. --svg draws error against evaluations.\n"
      "Exit codes: 0 ok, 2 bad usage, checkpoint or data, 1 runtime failure.\n");
}

struct Args {
  std::string checkpoint, out, svg;
  int tasks = 16, draws = 200;
  std::vector<std::string> overrides;
};

int positive(const std::string& flag, const std::string& value) {
  int v = 0;
  MT_REQUIRE(std::sscanf(value.c_str(), "%d", &v) == 1 && v >= 1, flag,
             " needs a number >= 1, got '", value, "'");
  return v;
}

Args parse(int argc, char** argv) {
  MT_REQUIRE(argc >= 2 && std::string(argv[1]) == "estimators",
             "the first argument names the benchmark: metabench estimators ...; see --help");
  Args a;
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      MT_REQUIRE(i + 1 < argc, arg, " needs a value; see metabench --help");
      return argv[++i];
    };
    if (arg == "--checkpoint")
      a.checkpoint = value();
    else if (arg == "--out")
      a.out = value();
    else if (arg == "--svg")
      a.svg = value();
    else if (arg == "--tasks")
      a.tasks = positive(arg, value());
    else if (arg == "--draws")
      a.draws = positive(arg, value());
    else {
      MT_REQUIRE(arg.find('=') != std::string::npos && arg[0] != '-', "unknown argument '", arg,
                 "'; see metabench --help");
      a.overrides.push_back(arg);
    }
  }
  return a;
}

using Vec = std::vector<double>;

struct Scores {
  double cosine = 0, rel_err = 0;
};
Scores compare(const Vec& g, const Vec& ref) {
  double dot = 0, gg = 0, rr = 0, diff = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    dot += g[i] * ref[i];
    gg += g[i] * g[i];
    rr += ref[i] * ref[i];
    diff += (g[i] - ref[i]) * (g[i] - ref[i]);
  }
  return {dot / std::sqrt(std::max(gg * rr, 1e-300)), std::sqrt(diff / std::max(rr, 1e-300))};
}

// The engine's per-task first-order and exact gradients of N tasks, in float64 on the host.
struct TaskGrads {
  std::vector<Vec> fo, exact;  // [task][d]
  double seconds = 0;
};

class Bench {
 public:
  Bench(const mt::Config& cfg, const Args& args) : cfg_(cfg), args_(args) {
    source_ = mt::make_episode_source(cfg);
    const mt::EpisodeSpec spec{cfg.data.train_split, cfg.task.ways, cfg.task.shots,
                               cfg.task.queries};
    source_->validate(spec);
    model_ = mt::make_model(cfg, source_->image_shape());
    backend_ = mt::make_backend(cfg, *model_, *source_, 0, mt::worker_threads(cfg));
    MT_REQUIRE(args.tasks <= backend_->max_tasks(), "--tasks ", args.tasks, ": this backend takes ",
               backend_->max_tasks(), " tasks per batch");
    const int64_t d = model_->layout().total();
    theta_.resize(d);
    if (args.checkpoint.empty()) {
      model_->init(theta_.data(), static_cast<uint64_t>(cfg.seed));
    } else {
      theta_ = mt::read_checkpoint(args.checkpoint, model_->layout()).params;
    }
    episodes_.resize(args.tasks);
    for (int t = 0; t < args.tasks; ++t)
      source_->sample(spec, cfg.seed, 0, static_cast<uint64_t>(t), episodes_[t]);
    batch_ = backend_->make_batch();
    std::vector<const mt::Episode<float>*> eps;
    for (const auto& e : episodes_) eps.push_back(&e);
    backend_->load(eps, *batch_);
  }

  const mt::InnerLoop& base() const { return base_; }

  // Runs the engine with `inner` on every task; exact path on all of them when `exact`.
  TaskGrads run(const mt::InnerLoop& inner, bool exact) {
    mt::MetaEngine<float> engine(*backend_, inner);
    const mt::VecOps<float>& ops = backend_->ops();
    const int n = args_.tasks;
    const mt::BatchedLayout l(model_->layout(), n);
    const int64_t d = l.dim();
    mt::Buffer<float> theta = ops.alloc(d), g_fo = ops.alloc(l.total()),
                      g_exact = ops.alloc(l.total()), row = ops.alloc(d);
    ops.upload(d, theta_.data(), theta.data());
    std::vector<int> all(n);
    for (int t = 0; t < n; ++t) all[t] = t;
    std::vector<mt::LossStats> query(n);
    const auto t0 = std::chrono::steady_clock::now();
    engine.run(theta.data(), *batch_, exact ? all : std::vector<int>{}, g_fo.data(),
               exact ? g_exact.data() : nullptr, query.data());
    TaskGrads out;
    std::vector<float> host(d);
    auto take = [&](const mt::Buffer<float>& src, std::vector<Vec>& dst) {
      for (int t = 0; t < n; ++t) {
        ops.gather(l, src.data(), {t}, row.data());
        ops.download(d, row.data(), host.data());
        dst.emplace_back(host.begin(), host.end());
      }
    };
    take(g_fo, out.fo);
    if (exact) take(g_exact, out.exact);
    out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return out;
  }

  // Predicted activation memory of one task (Sequential::activation_bytes), MiB.
  double memory_mib(bool hvp) const {
    const auto* seq = dynamic_cast<const mt::Sequential<float>*>(model_.get());
    if (!seq) return NAN;
    const int n = cfg_.task.ways * std::max(cfg_.task.shots, cfg_.task.queries);
    return seq->activation_bytes(n, cfg_.task.ways * cfg_.task.shots, hvp) / 1048576.0;
  }

 private:
  const mt::Config& cfg_;
  const Args& args_;
  mt::InnerLoop base_ = mt::inner_loop(cfg_);
  std::unique_ptr<mt::EpisodeSource> source_;
  std::unique_ptr<mt::Model<float>> model_;
  std::unique_ptr<mt::BatchedModel<float>> backend_;
  std::vector<float> theta_;
  std::vector<mt::Episode<float>> episodes_;
  std::unique_ptr<mt::TaskBatch> batch_;
};

Vec mean(const std::vector<Vec>& v) {
  Vec m(v.at(0).size(), 0.0);
  for (const Vec& x : v)
    for (size_t i = 0; i < m.size(); ++i) m[i] += x[i] / v.size();
  return m;
}

struct Row {
  std::string estimator, setting;
  Scores s;
  double grad_evals = 0, seconds = 0, memory_mib = 0;
  double draw_rel_err = NAN, variance = NAN;  // UFOM
};

mt::JsonObject json(const Row& r) {
  mt::JsonObject o;
  o.add("estimator", r.estimator).add("setting", r.setting);
  o.add("cosine", r.s.cosine).add("rel_err", r.s.rel_err);
  o.add("rel_err_best_scale", std::sqrt(std::max(0.0, 1 - r.s.cosine * r.s.cosine)));
  if (!std::isnan(r.draw_rel_err))
    o.add("draw_rel_err", r.draw_rel_err).add("variance", r.variance);
  o.add("grad_evals", r.grad_evals).add("seconds", r.seconds).add("memory_mib", r.memory_mib);
  return o;
}

// UFOM at probability q over `draws` coin draws: g_t = g_F + (ξ/q)(g_E − g_F), ξ ~ Bernoulli(q)
// keyed by (seed, draw, task). The mean over draws of each draw's meta-batch mean is scored
// against the exact mean; draw_rel_err is the mean error of one draw's mean, variance the
// per-task variance tr Σ relative to ‖exact mean‖².
Row ufom_row(const TaskGrads& g, const Vec& exact, double q, int draws, uint64_t seed,
             const mt::InnerLoop& inner) {
  const size_t n = g.fo.size(), d = exact.size();
  Vec sum(d, 0.0);
  double err = 0, var = 0, norm2 = 0;
  for (double e : exact) norm2 += e * e;
  for (int k = 0; k < draws; ++k) {
    Vec m(d, 0.0);
    for (size_t t = 0; t < n; ++t) {
      const double w = mt::ufom_takes_exact(seed, static_cast<uint64_t>(k), t, q) / q;
      for (size_t i = 0; i < d; ++i) {
        const double gt = g.fo[t][i] + w * (g.exact[t][i] - g.fo[t][i]);
        m[i] += gt / n;
        var += (gt - g.exact[t][i]) * (gt - g.exact[t][i]);  // around g_E: the coin's spread
      }
    }
    err += compare(m, exact).rel_err / draws;
    for (size_t i = 0; i < d; ++i) sum[i] += m[i] / draws;
  }
  Row r{"ufom", "q=" + std::to_string(q).substr(0, 4), compare(sum, exact)};
  r.draw_rel_err = err;
  r.variance = var / (static_cast<double>(draws) * n * std::max(norm2, 1e-300));
  r.grad_evals = static_cast<double>(mt::first_order_cost(inner)) + q * mt::exact_path_cost(inner);
  return r;
}

// One curve per estimator family (iMAML: per μ), error against gradient evaluations per task.
void write_svg(const std::string& path, const std::vector<Row>& rows) {
  mt::Figure fig;
  fig.title = "Estimators of the MAML meta-gradient: error against cost";
  fig.x_label = "gradient evaluations per task";
  fig.y_label = "relative error of the mean gradient";
  fig.log_y = true;
  for (const Row& r : rows) {
    if (r.estimator == "exact") continue;  // error 0: off a log axis
    std::string family = r.estimator;
    if (r.estimator == "imaml") family += " " + r.setting.substr(0, r.setting.find(' '));
    if (r.estimator == "reptile") family += " (best scale)";
    auto c = std::find_if(fig.curves.begin(), fig.curves.end(),
                          [&](const mt::Curve& k) { return k.label == family; });
    if (c == fig.curves.end()) {
      fig.curves.push_back({});
      c = fig.curves.end() - 1;
      c->label = family;
      c->markers = true;
    }
    c->x.push_back(r.grad_evals);
    c->y.push_back(r.estimator == "reptile" ? std::sqrt(std::max(0.0, 1 - r.s.cosine * r.s.cosine))
                                            : r.s.rel_err);
  }
  std::ofstream out(path);
  MT_REQUIRE(out, "cannot write ", path);
  out << mt::render_svg(fig);
}

void estimators(const Args& args) {
  const mt::Config cfg = args.checkpoint.empty()
                             ? mt::load_config("", args.overrides)
                             : mt::load_config_text(mt::read_checkpoint_config(args.checkpoint),
                                                    args.checkpoint + ":/config", args.overrides);
  const mt::InnerLoop plain = mt::inner_loop(cfg);
  MT_REQUIRE(plain.rates == mt::Rates::kFixed && plain.adapt == mt::Adapt::kAll &&
                 plain.method == mt::Method::kUnrolled && !plain.multi_step_loss,
             "metabench estimators scores estimators of MAML's meta-gradient: the config's algo "
             "must be maml, fomaml or ufom (here ",
             mt::to_string(cfg.algo), ")");
  mt::blas_use_single_thread();
  Bench bench(cfg, args);
  mt::InnerLoop inner = bench.base();
  inner.truncate = -1;
  const TaskGrads ref = bench.run(inner, true);
  const Vec exact = mean(ref.exact);
  std::vector<Row> rows;
  rows.push_back({"exact", "maml", compare(exact, exact),
                  static_cast<double>(mt::first_order_cost(inner) + mt::exact_path_cost(inner)),
                  ref.seconds, bench.memory_mib(true)});
  const TaskGrads fo = bench.run(inner, false);
  rows.push_back({"fomaml", "", compare(mean(fo.fo), exact),
                  static_cast<double>(mt::first_order_cost(inner)), fo.seconds,
                  bench.memory_mib(false)});
  for (double q : {0.05, 0.1, 0.25, 0.5}) {
    Row r = ufom_row(ref, exact, q, args.draws, static_cast<uint64_t>(cfg.seed), inner);
    r.seconds = fo.seconds + q * (ref.seconds - fo.seconds);  // expected: the exact path at rate q
    r.memory_mib = bench.memory_mib(true);
    rows.push_back(r);
  }
  for (int k = 1; k < inner.steps; k *= 2) {
    mt::InnerLoop t = inner;
    t.truncate = k;
    const TaskGrads g = bench.run(t, true);
    rows.push_back({"truncated", "k=" + std::to_string(k), compare(mean(g.exact), exact),
                    static_cast<double>(mt::first_order_cost(t) + mt::exact_path_cost(t)),
                    g.seconds, bench.memory_mib(true)});
  }
  for (double mu : {0.5, 2.0, 8.0})
    for (int cg : {2, 5, 10}) {
      mt::InnerLoop im = inner;
      im.method = mt::Method::kImplicit;
      im.prox = mu;
      im.cg_steps = cg;
      const TaskGrads g = bench.run(im, true);
      rows.push_back({"imaml",
                      "mu=" + std::to_string(mu).substr(0, 3) + " cg=" + std::to_string(cg),
                      compare(mean(g.exact), exact),
                      static_cast<double>(mt::first_order_cost(im) + mt::exact_path_cost(im)),
                      g.seconds, bench.memory_mib(true)});
    }
  mt::InnerLoop rep = inner;
  rep.method = mt::Method::kReptile;
  const TaskGrads g = bench.run(rep, false);
  rows.push_back({"reptile", "", compare(mean(g.fo), exact),
                  static_cast<double>(mt::first_order_cost(rep)), g.seconds,
                  bench.memory_mib(false)});

  std::FILE* out = args.out.empty() ? nullptr : std::fopen(args.out.c_str(), "w");
  MT_REQUIRE(args.out.empty() || out, "cannot write ", args.out);
  for (const Row& r : rows) {
    const std::string line = json(r).str();
    std::printf("%s\n", line.c_str());
    if (out) std::fprintf(out, "%s\n", line.c_str());
  }
  if (out) std::fclose(out);
  if (!args.svg.empty()) write_svg(args.svg, rows);
}

}  // namespace

int main(int argc, char** argv) {
  return mt::guarded_main("metabench", nullptr, [&] {
    if (mt::has_help_flag(argc, argv)) {
      usage();
      return 0;
    }
    mt::print_cpu_kernels_line();
    estimators(parse(argc, argv));
    return 0;
  });
}
