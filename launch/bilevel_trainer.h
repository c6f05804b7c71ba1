// `metatrain algo=slbamm`: runs the sl-BAMM bilevel solver (core/slbamm.h) on the problem of the
// slbamm: block (the merely-convex toy, or data hyper-cleaning on an episode store) over the
// ranks of dist.backend, with progress and the JSONL metrics log (step, F, f, x_err, z_res, sec).
#pragma once

#include <cstdint>

#include "dist/comm.h"
#include "launch/config.h"
#include "launch/evaluation.h"
#include "launch/hyperclean.h"

namespace mt {

struct BilevelOutcome {
  int64_t steps = 0;
  double F = 0, f = 0;
  double x_err = -1;  // toy: ‖x − e‖/‖e‖; −1 when x* is unknown
  // Hyper-cleaning only (rank 0): test accuracy of sl-BAMM's classifier and of the baselines
  // trained with the same steps on the noisy labels and on the uncorrupted subset.
  bool hyperclean = false;
  double test_acc = 0, noisy_acc = 0, clean_acc = 0;
  Detection detection;
};

// Runs algo=slbamm on `comm`; rank 0 logs and prints. Throws UsageError for bad settings.
BilevelOutcome run_bilevel(const Config& cfg, dist::Comm& comm);

// The entry point used by train() for algo=slbamm: makes the communicator of dist.backend, runs,
// and ends the whole job if a rank fails. The result's acc_mean is the hyper-cleaning test
// accuracy (0 for the toy), loss_mean the final F.
EvalResult train_bilevel(const Config& cfg);

}  // namespace mt
