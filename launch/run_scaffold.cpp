// The shared plumbing of training runs (launch/run_scaffold.h).
#include "launch/run_scaffold.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <thread>
#include <vector>

#include "core/bilevel_checkpoint.h"
#include "core/blas.h"
#include "core/check.h"
#include "core/hdf5.h"
#include "launch/exit_codes.h"
#include "launch/stop_signal.h"

namespace mt {

namespace {

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

// The architecture a resumed meta-learning run continues: the checkpoint's parameters are its.
void check_model_kept(const Config& now, const Config& then, const std::string& path) {
  if (now.algo == Algo::kSlbamm || then.algo == Algo::kSlbamm) return;  // no model.* keys
  const std::string a = describe_model(then), b = describe_model(now);
  MT_REQUIRE(a == b, "checkpoint ", path, " holds the parameters of model ", a,
             ", and this run asks for ", b,
             "; a resumed run keeps its model (drop the model.* settings, or start a new run)");
}

// The files of checkpoint.dir that a run of this program writes: ckpt_<step>.h5, latest.h5 and
// metrics.jsonl (with `leftovers`, also their unfinished "<name>.tmp.<pid>" of a killed run).
std::vector<std::filesystem::path> run_files(const std::string& dir, bool leftovers) {
  namespace fs = std::filesystem;
  std::vector<fs::path> files;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return files;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (!entry.is_regular_file(ec)) continue;
    std::string name = entry.path().filename().string();
    const size_t tmp = name.find(".tmp.");
    if (tmp != std::string::npos) {
      if (!leftovers || name.find_first_not_of("0123456789", tmp + 5) != std::string::npos)
        continue;
      name.resize(tmp);
    }
    const bool ckpt = name.size() > 8 && name.rfind("ckpt_", 0) == 0 &&
                      name.compare(name.size() - 3, 3, ".h5") == 0 &&
                      name.find_first_not_of("0123456789", 5) == name.size() - 3;
    if (ckpt || name == "latest.h5" || name == "metrics.jsonl") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

// The /config text of a checkpoint of either kind.
std::string stored_config(const std::string& path) {
  try {
    const h5::File f = h5::File::open_read(path);
    if (f.exists("/config")) return f.read_string("/config");
  } catch (const UsageError&) {
    throw;  // "<path>: cannot open: ..."
  } catch (const Error& e) {
    throw UsageError(detail::concat("checkpoint ", path, ": ", e.what(),
                                    "; resume from another checkpoint, or set resume: none"));
  }
  throw UsageError(detail::concat("checkpoint ", path, ": not a metatrain checkpoint (no ",
                                  "/config); resume from a checkpoint written by metatrain"));
}

// The file cfg.resume names ("latest": <checkpoint.dir>/latest.h5, which must exist).
std::string resume_path(const Config& cfg) {
  if (cfg.resume != "latest") return cfg.resume;
  const std::string path = CheckpointManager(cfg.checkpoint.dir, cfg.checkpoint.keep).latest_path();
  MT_REQUIRE(std::filesystem::exists(path), "resume = latest: no checkpoint ", path, " in ",
             "checkpoint.dir = ", cfg.checkpoint.dir, "; start without resume or point ",
             "checkpoint.dir at the run to continue");
  return path;
}

}  // namespace

Config launch_config(const Config& launch) {
  if (launch.resume == "none") return launch;
  const std::string path = resume_path(launch);
  // latest.h5 was found in this launch's checkpoint.dir (given, or the default): the run goes on
  // there, whatever folder name the checkpoint stored.
  std::vector<std::string> this_launch;
  if (launch.resume == "latest") this_launch.push_back(setting_of(launch, "checkpoint.dir"));
  const std::string stored = stored_config(path), source = path + ":/config";
  Config cfg = merge_config(stored, source, launch, this_launch);
  // Before anything builds the model: merge_config leaves a changed architecture to this check.
  check_model_kept(cfg, load_config_text(stored, source, {}), path);
  return cfg;
}

void claim_checkpoint_dir(const Config& cfg, dist::Comm& comm) {
  if (cfg.resume != "none") return;
  on_lead_checked(comm, "checking checkpoint.dir", [&] {
    const std::string& dir = cfg.checkpoint.dir;
    if (run_files(dir, false).empty()) return;
    MT_REQUIRE(cfg.checkpoint.overwrite, "checkpoint.dir = ", dir,
               " holds the checkpoints or metrics.jsonl of an earlier run, and this run starts ",
               "afresh (resume=none); continue that run with resume=latest, choose another ",
               "checkpoint.dir, or set checkpoint.overwrite=true to delete its files");
    for (const auto& f : run_files(dir, true)) {
      std::error_code ec;
      std::filesystem::remove(f, ec);
      MT_REQUIRE(!ec, "checkpoint.overwrite: cannot remove ", f.string(), ": ", ec.message());
    }
    std::printf("checkpoint.overwrite: removed the earlier run's files from %s\n", dir.c_str());
    std::fflush(stdout);
  });
}

EvalResult train_on_ranks(const Config& cfg, const std::function<EvalResult(dist::Comm&)>& body) {
  blas_use_single_thread();
  const bool gpu_ranks = cfg.device == Config::Device::kCuda && dist::launched_ranks() > 1;
  auto comm = dist::make_comm(cfg.dist.backend == "auto" && gpu_ranks ? "nccl" : cfg.dist.backend,
                              cfg.dist.timeout);
  EvalResult result;
  run_on_ranks("metatrain", *comm, [&] {
    claim_checkpoint_dir(cfg, *comm);
    result = body(*comm);
  });
  return result;
}

void print_run_header(const Config& cfg, const dist::Comm& comm, const std::string& description) {
  if (comm.rank() != 0) return;
  std::printf("effective config:\n%s\n%s\n", printed_config(cfg).c_str(), description.c_str());
  // A lost host is named by the launcher; this says which ranks it held.
  if (comm.size() > 1) std::printf("hosts: %s\n", dist::describe_placement(comm).c_str());
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

std::string resume_checkpoint(const Config& cfg) {
  const std::string path = resume_path(cfg);
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
  std::string changes;
  for (const ConfigChange& c : config_changes(then, cfg)) {
    if (c.key == "resume") continue;  // the one key every resumed launch changes
    changes += detail::concat(changes.empty() ? "" : ", ", c.key, " ", c.before, " -> ", c.after);
  }
  if (!changes.empty()) std::printf("resume: overrides change %s\n", changes.c_str());
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

void enter_step(const Config& cfg, dist::Comm& comm, int64_t number) {
  comm.set_context(detail::concat("step ", number));
  const Config::Debug::Stall& stall = cfg.debug.stall;
  if (stall.rank != comm.rank() || stall.step != number) return;
  std::fprintf(stderr, "rank %d: debug.stall: sleeping %.1f s before step %lld\n", comm.rank(),
               stall.seconds, static_cast<long long>(number));
  std::this_thread::sleep_for(std::chrono::duration<double>(stall.seconds));
}

void leave_step(dist::Comm& comm, int64_t number) {
  comm.end_startup();
  comm.set_context(detail::concat("the checks, evaluation and checkpoint after step ", number));
}

}  // namespace mt
