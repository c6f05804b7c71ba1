// The plumbing every training run of metatrain shares, whatever it trains (the meta-learning
// Trainer of launch/trainer.cpp, sl-BAMM in launch/bilevel_trainer.cpp): the communicator and
// the abort of the whole job when one rank fails, the effective-config header, resume (which
// checkpoint, the config it continues with, whether this run may continue it), the claim on
// checkpoint.dir of a fresh run, the checkpoint cadence and the graceful stop on a signal. One
// way to do each; the trainers own only their state and their step.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "core/checkpoint.h"
#include "dist/comm.h"
#include "launch/config.h"
#include "launch/evaluation.h"

namespace mt {

// Runs one training job: single-threaded BLAS (ranks and OpenMP threads share the cores), the
// communicator of dist.backend (auto: NCCL for GPU ranks started by a launcher, else MPI or
// single), claim_checkpoint_dir, and body on it under run_on_ranks (launch/exit_codes.h): a rank
// that fails ends every rank of a multi-rank job with its exit code; with one rank the exception
// passes on. cfg is the config launch_config made.
EvalResult train_on_ranks(const Config& cfg, const std::function<EvalResult(dist::Comm&)>& body);

// Rank 0 prints the effective config (printed_config) and then `description`, the run's lines
// about what is trained on which data and backend.
void print_run_header(const Config& cfg, const dist::Comm& comm, const std::string& description);

// ---- resume ---------------------------------------------------------------------------------

// What a checkpoint file continues: kSlbammCheckpointKind for sl-BAMM runs
// (core/bilevel_checkpoint.h), "meta" for the meta-learning checkpoints of core/checkpoint.h
// (which carry no kind attribute). UsageError naming the file when it cannot be read.
std::string checkpoint_kind(const std::string& path);

// The config a launch runs with: `launch` itself for a fresh run (resume=none); when resuming,
// the config stored in the checkpoint that launch.resume names, with the user's --config file and
// overrides on top (merge_config); with resume=latest, checkpoint.dir is the launch's (where
// latest.h5 was found) even when the default. A model other than the checkpoint's is refused
// (UsageError naming both). Every rank calls it before the communicator exists; it reads only
// the file's /config.
Config launch_config(const Config& launch);

// A fresh run (resume=none) needs a checkpoint.dir without an earlier run's files (ckpt_*.h5,
// latest.h5, metrics.jsonl): rank 0 refuses a used one (UsageError naming the folder and the
// ways out), or with checkpoint.overwrite=true removes exactly those files; every rank learns the
// outcome (on_lead_checked). Runs before anything is written. Nothing to do when resuming.
void claim_checkpoint_dir(const Config& cfg, dist::Comm& comm);

// The checkpoint that cfg.resume names ("latest": <checkpoint.dir>/latest.h5, which must exist),
// checked to be of the kind this run writes: a MAML/FOMAML/UFOM checkpoint cannot resume
// algo=slbamm, nor the reverse (UsageError saying so).
std::string resume_checkpoint(const Config& cfg);

// After rank 0 has read the state of `path`: the stored config must keep what a continuation
// keeps (seed, algo, outer.optimizer; for sl-BAMM the problem it solves), and the stored step
// may not pass cfg.steps (UsageError otherwise). Prints "resuming from <path> at step s (saved
// by n ranks, now m)" and the keys the launch changes ("resume: overrides change steps 100 ->
// 300, eval.every 50 -> 25").
void accept_resume(const Config& cfg, const std::string& path, const std::string& stored_yaml,
                   int64_t step, int saved_world_size, int world_size);

// Runs `work` on rank 0 only; every rank then learns whether it threw a UsageError, which is
// rethrown on every rank (rank 0 with its message, the others with "<what> failed on rank 0"),
// so that no rank waits in a later collective for a rank 0 that failed. One collective.
void on_lead_checked(dist::Comm& comm, const char* what, const std::function<void()>& work);

// ---- the loop -------------------------------------------------------------------------------

// Whether step `done` saves a checkpoint of checkpoint.every (the last step saves anyway).
bool periodic_checkpoint_due(const Config& cfg, int64_t done, bool last);

// Whether any rank has been asked to stop (launch/stop_signal.h): the same answer on every
// rank, so all stop after the same step. One collective; every rank calls it after every step.
bool stop_everywhere(dist::Comm& comm);

// After a stop at step `done` whose checkpoint rank 0 wrote to `ckpt`: rank 0 prints it with the
// resume hint, then every rank waits for the others.
void announce_stop(const Config& cfg, dist::Comm& comm, int64_t done, const std::string& ckpt);

// Around outer step `number` (1-based): names it in the collectives' deadline messages, and
// sleeps here when debug.stall names this rank and step. leave_step ends the longer start-up
// deadline once the run's first step is done, and names the work between steps.
void enter_step(const Config& cfg, dist::Comm& comm, int64_t number);
void leave_step(dist::Comm& comm, int64_t number);

}  // namespace mt
