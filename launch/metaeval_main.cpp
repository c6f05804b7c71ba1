// metaeval: accuracy of a metatrain checkpoint on held-out classes, mean ± 95% CI over E
// episodes (the standard protocol, 600 by default), or over Lake's 20 one-shot runs when the
// store holds fixed episodes. A table for people, or one JSON object with --json. Under mpirun /
// srun the episodes are divided among the ranks (same result for any number of ranks).
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "core/bilevel_checkpoint.h"
#include "core/blas.h"
#include "core/check.h"
#include "core/checkpoint.h"
#include "core/cpu_kernels.h"
#include "core/hdf5.h"
#include "data/episode_store.h"
#include "dist/comm.h"
#include "launch/backend.h"
#include "launch/config.h"
#include "launch/evaluation.h"
#include "launch/exit_codes.h"
#include "launch/metrics_log.h"
#include "launch/run_scaffold.h"
#include "launch/trainer.h"

namespace {

void usage() {
  std::printf(
      "usage: metaeval CHECKPOINT.h5 [--json] [key=value ...]\n\n"
      "Evaluates a metatrain checkpoint: every episode adapts the checkpoint's parameters with\n"
      "inner.eval_steps steps on its support set and scores its query set. The model and the\n"
      "defaults come from the config stored in the checkpoint; these keys may be overridden:\n"
      "  data.path=FILE.h5|glyphs  data.eval_split=test|val|train  eval.episodes=E\n"
      "  inner.eval_steps=N  inner.lr=A  task.shots=K  task.queries=Q  seed=S  threads=T\n"
      "  data.resident=auto|host|device|off  device=cpu|cuda  cuda.graphs=B  cuda.conv=F\n"
      "  cuda.tune=B\n"
      "E is 600 (the standard protocol) unless given, whatever the training run's periodic\n"
      "evaluations used.\n"
      "A store packed with `metapack omniglot-lake` is evaluated on its 20 fixed runs\n"
      "(20-way 1-shot; the checkpoint must be 20-way).\n"
      "Under mpirun/srun the ranks share the episodes; rank 0 prints the same result as one\n"
      "process would.\n"
      "Exit codes: 0 ok, 2 bad usage, checkpoint or data, 1 runtime failure.\n");
}

const char* const kOverridable[] = {
    "data.path=",  "data.eval_split=", "eval.episodes=", "inner.eval_steps=", "inner.lr=",
    "task.shots=", "task.queries=",    "seed=",          "threads=",          "data.resident=",
    "device=",     "cuda.graphs=",     "cuda.conv=",     "cuda.tune="};
// The standard protocol's episode count, used unless eval.episodes= is given (the checkpoint's
// eval.episodes is the training run's periodic evaluation, often smaller).
constexpr const char* kStandardEpisodes = "eval.episodes=600";

struct Args {
  std::string checkpoint;
  bool json = false;
  std::vector<std::string> overrides{kStandardEpisodes};  // the user's come after, and win
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--json") {
      a.json = true;
    } else if (arg.find('=') != std::string::npos) {
      bool allowed = false;
      for (const char* k : kOverridable) allowed = allowed || arg.rfind(k, 0) == 0;
      MT_REQUIRE(allowed, "'", arg,
                 "': metaeval cannot change this key (the model and its "
                 "training set-up come from the checkpoint); see metaeval --help");
      a.overrides.push_back(arg);
    } else {
      MT_REQUIRE(arg.empty() || arg[0] != '-', "unknown option '", arg, "'; see metaeval --help");
      MT_REQUIRE(a.checkpoint.empty(), "two checkpoints given ('", a.checkpoint, "', '", arg,
                 "'); metaeval takes one");
      a.checkpoint = arg;
    }
  }
  MT_REQUIRE(!a.checkpoint.empty(), "no checkpoint given; usage: metaeval CHECKPOINT.h5 ...");
  return a;
}

// Evaluates args.checkpoint on the ranks of comm; rank 0 prints.
void evaluate_checkpoint(const Args& args, mt::dist::Comm& comm) {
  MT_REQUIRE(mt::checkpoint_kind(args.checkpoint) != mt::kSlbammCheckpointKind, "checkpoint ",
             args.checkpoint,
             " was written by an algo=slbamm run; metaeval evaluates the "
             "few-shot checkpoints of the meta-learning algorithms (an sl-BAMM run reports its "
             "test accuracy when it ends)");
  const std::string trained_yaml = mt::read_checkpoint_config(args.checkpoint);
  const std::string where = args.checkpoint + ":/config";
  const mt::Config cfg = mt::load_config_text(trained_yaml, where, args.overrides);
  mt::blas_use_single_thread();
  const auto source = mt::make_episode_source(cfg);
  const auto model = mt::make_model(cfg, source->image_shape());
  const mt::CheckpointState state =
      mt::read_checkpoint(args.checkpoint, mt::meta_parameters(cfg, *model));
  // The stored seed is the trained config's (metaeval's seed= override aside).
  const mt::Config trained = mt::load_config_text(trained_yaml, where, {});
  MT_REQUIRE(state.seed == static_cast<uint64_t>(trained.seed), "checkpoint ", args.checkpoint,
             ": /state/seed is ", state.seed, " but its /config has seed: ", trained.seed,
             "; the file is damaged; evaluate an earlier checkpoint");
  const int threads = mt::worker_threads(cfg);

  const auto* store = dynamic_cast<const mt::EpisodeStore*>(source.get());
  const bool lake = store != nullptr && store->num_fixed_episodes() > 0;
  int shots = cfg.task.shots, queries = cfg.task.queries;
  mt::EvalResult r;
  if (lake) {
    const mt::FixedEpisodes& fixed = store->fixed_episodes();
    MT_REQUIRE(fixed.ways == cfg.task.ways, store->path(), " holds ", fixed.ways,
               "-way fixed episodes but checkpoint ", args.checkpoint, " is ", cfg.task.ways,
               "-way; evaluate a checkpoint trained with task.ways=", fixed.ways);
    shots = fixed.shots;
    queries = fixed.queries;
  }
  // The backend sized for the episodes evaluated (Lake's runs bring their own shots/queries).
  mt::Config sized = cfg;
  sized.task.shots = shots;
  sized.task.queries = queries;
  const auto backend = mt::make_backend(sized, *model, *source, comm.local_rank(), threads);
  mt::MetaEngine<float> engine(*backend, mt::inner_loop(cfg));
  if (lake) {
    r = mt::evaluate(
        engine, state.params, static_cast<int>(store->num_fixed_episodes()), cfg.inner.eval_steps,
        threads, [&](int64_t e, mt::Episode<float>& ep) { store->fixed_episode(e, ep); }, &comm);
    r.split = "lake-runs";
  } else {
    const mt::EpisodeSpec spec{cfg.data.eval_split, cfg.task.ways, shots, queries};
    source->validate(spec);
    r = mt::evaluate_split(engine, state.params, *source, spec, static_cast<uint64_t>(cfg.seed),
                           cfg.eval.episodes, cfg.inner.eval_steps, threads, &comm);
  }
  if (comm.rank() != 0) return;

  if (args.json) {
    mt::JsonObject o;
    o.add("checkpoint", args.checkpoint).add("step", static_cast<double>(state.step));
    o.add("data", cfg.data.path).add("split", r.split).add("ways", cfg.task.ways);
    o.add("shots", shots).add("queries", queries).add("eval_steps", cfg.inner.eval_steps);
    o.add("episodes", r.episodes).add("acc_mean", r.acc_mean).add("acc_ci95", r.acc_ci95);
    o.add("loss_mean", r.loss_mean).add("ranks", comm.size());
    std::printf("%s\n", o.str().c_str());
  } else {
    std::printf("checkpoint  %s (step %lld)\n", args.checkpoint.c_str(),
                static_cast<long long>(state.step));
    std::printf("data        %s, %s\n", source->name().c_str(),
                lake ? "Lake's one-shot runs" : ("split " + r.split).c_str());
    std::printf(
        "protocol    %d-way %d-shot, %d queries per class, %d inner steps (lr %g), "
        "%d episodes\n",
        cfg.task.ways, shots, queries, cfg.inner.eval_steps, cfg.inner.lr, r.episodes);
    if (comm.size() > 1) std::printf("ranks       %d (%s)\n", comm.size(), comm.backend().c_str());
    std::printf("accuracy    %.2f%% ± %.2f%% (95%% CI)\nloss        %.4f\n", 100 * r.acc_mean,
                100 * r.acc_ci95, r.loss_mean);
  }
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  return mt::guarded_main("metaeval", nullptr, [&] {
    if (mt::has_help_flag(argc, argv)) {
      usage();
      return 0;
    }
    mt::print_cpu_kernels_line();
    const Args args = parse(argc, argv);
    // "mpi" when started by mpirun / srun as one of several ranks, else one process.
    const auto comm = mt::dist::make_comm("auto");
    mt::run_on_ranks("metaeval", *comm, [&] { evaluate_checkpoint(args, *comm); });
    return 0;
  });
}
