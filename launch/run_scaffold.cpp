// The shared plumbing of training runs (launch/run_scaffold.h).
#include "launch/run_scaffold.h"

#include <cstdio>
#include <filesystem>
#include <sstream>
#include <vector>

#include "core/bilevel_checkpoint.h"
#include "core/blas.h"
#include "core/check.h"
#include "core/hdf5.h"
#include "launch/exit_codes.h"
#include "launch/stop_signal.h"

namespace mt {

namespace {

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
  if (now.algo != then.algo) throw refuse("algo", to_string(then.algo), to_string(now.algo));
  if (now.seed != then.seed)
    throw refuse("seed", std::to_string(then.seed), std::to_string(now.seed));
  if (now.algo == Algo::kSlbamm) {
    // The problem solved (its data set included) and the method; step sizes may change.
    const Config::Slbamm &a = then.slbamm, &b = now.slbamm;
    auto same = [&](const char* key, const auto& x, const auto& y) {
      if (x == y) return;
      std::ostringstream sx, sy;
      sx << x;
      sy << y;
      throw refuse(key, sx.str(), sy.str());
    };
    same("slbamm.problem", a.problem, b.problem);
    same("slbamm.variant", a.variant, b.variant);
    if (b.problem == "toy") {
      same("slbamm.toy_dim", a.toy_dim, b.toy_dim);
    } else {
      same("data.train_split", then.data.train_split, now.data.train_split);
      same("slbamm.classes", a.classes, b.classes);
      same("slbamm.train_per_class", a.train_per_class, b.train_per_class);
      same("slbamm.val_per_class", a.val_per_class, b.val_per_class);
      same("slbamm.test_per_class", a.test_per_class, b.test_per_class);
      same("slbamm.noise", a.noise, b.noise);
      same("slbamm.model", a.model, b.model);
      if (b.model == "conv4") same("slbamm.filters", a.filters, b.filters);
    }
    return;
  }
  auto optimizer = [](const Config& c) {
    return c.outer.optimizer == Config::Outer::Optimizer::kAdam ? "adam" : "sgd";
  };
  if (now.outer.optimizer != then.outer.optimizer)
    throw refuse("outer.optimizer", optimizer(then), optimizer(now));
  // data.path may change (the same store moved, or another cluster's copy); it is logged.
}

}  // namespace

EvalResult train_on_ranks(const Config& cfg, const std::function<EvalResult(dist::Comm&)>& body) {
  blas_use_single_thread();
  const bool gpu_ranks = cfg.device == Config::Device::kCuda && dist::launched_ranks() > 1;
  auto comm = dist::make_comm(cfg.dist.backend == "auto" && gpu_ranks ? "nccl" : cfg.dist.backend,
                              cfg.dist.timeout);
  EvalResult result;
  run_on_ranks("metatrain", *comm, [&] { result = body(*comm); });
  return result;
}

void print_run_header(const Config& cfg, const dist::Comm& comm, const std::string& description) {
  if (comm.rank() != 0) return;
  std::printf("effective config:\n%s\n%s\n", printed_config(cfg).c_str(), description.c_str());
  std::fflush(stdout);
}

std::string checkpoint_kind(const std::string& path) {
  try {
    const h5::File f = h5::File::open_read(path);
    return f.has_attr("/", "kind") ? f.get_attr_string("/", "kind") : "meta";
  } catch (const UsageError&) {
    throw;  // "<path>: cannot open: ..."
  } catch (const Error& e) {
    throw UsageError(detail::concat("checkpoint ", path, ": ", e.what(),
                                    "; resume from another checkpoint, or set resume: none"));
  }
}

std::string resume_checkpoint(const Config& cfg, const CheckpointManager& checkpoints) {
  std::string path = cfg.resume;
  if (path == "latest") {
    path = checkpoints.latest_path();
    MT_REQUIRE(std::filesystem::exists(path), "resume = latest: no checkpoint ", path, " in ",
               "checkpoint.dir = ", cfg.checkpoint.dir, "; start without resume or point ",
               "checkpoint.dir at the run to continue");
  }
  const bool bilevel_file = checkpoint_kind(path) == kSlbammCheckpointKind;
  if (bilevel_file != (cfg.algo == Algo::kSlbamm)) {
    const char* written_by =
        bilevel_file ? "an algo=slbamm run" : "a meta-learning run (maml, fomaml or ufom)";
    throw UsageError(detail::concat("resume from ", path, ": it is the checkpoint of ", written_by,
                                    ", and this run is algo=", to_string(cfg.algo),
                                    "; resume it with the algo it was written by, or start a new ",
                                    "run (resume=none, another checkpoint.dir)"));
  }
  return path;
}

void accept_resume(const Config& cfg, const std::string& path, const std::string& stored_yaml,
                   int64_t step, int saved_world_size, int world_size) {
  const Config then = load_config_text(stored_yaml, path + ":/config", {});
  check_resume_compatible(cfg, then, path);
  MT_REQUIRE(step <= cfg.steps, "resume from ", path, ": it is at step ", step,
             ", beyond steps = ", cfg.steps, "; raise steps to continue");
  std::printf("resuming from %s at step %lld (saved by %d rank%s, now %d)\n", path.c_str(),
              static_cast<long long>(step), saved_world_size, saved_world_size == 1 ? "" : "s",
              world_size);
  for (const std::string& c : config_changes(stored_yaml, cfg.effective_yaml))
    std::printf("  config changed on resume: %s\n", c.c_str());
}

void on_lead_checked(dist::Comm& comm, const char* what, const std::function<void()>& work) {
  const bool lead = comm.rank() == 0;
  std::string problem;
  if (lead) {
    try {
      work();
    } catch (const UsageError& e) {
      problem = e.what();
    }
  }
  int64_t failed = problem.empty() ? 0 : 1;
  comm.allreduce_max(&failed, 1);
  if (failed)
    throw UsageError(lead ? problem : detail::concat(what, " failed on rank 0 (see its message)"));
}

bool periodic_checkpoint_due(const Config& cfg, int64_t done, bool last) {
  return cfg.checkpoint.every > 0 && done % cfg.checkpoint.every == 0 && !last;
}

bool stop_everywhere(dist::Comm& comm) {
  int64_t stop = stop_requested() ? 1 : 0;
  comm.allreduce_max(&stop, 1);
  return stop != 0;
}

void announce_stop(const Config& cfg, dist::Comm& comm, int64_t done, const std::string& ckpt) {
  if (comm.rank() == 0) {
    std::printf(
        "stopped by signal after step %lld of %lld; checkpoint %s\n"
        "resume with the same command plus: resume=latest (checkpoint.dir=%s)\n",
        static_cast<long long>(done), static_cast<long long>(cfg.steps), ckpt.c_str(),
        cfg.checkpoint.dir.c_str());
    std::fflush(stdout);
  }
  comm.barrier();
}

}  // namespace mt
