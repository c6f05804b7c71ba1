// `metatrain algo=slbamm`: runs the sl-BAMM bilevel solver (core/slbamm.h) on the problem of the
// slbamm: block (the merely-convex toy, or data hyper-cleaning on an episode store) over the
// ranks of dist.backend, on the scaffolding of every training run (launch/run_scaffold.h):
// progress, the JSONL metrics log (step, F, f, x_err, z_res, ...), checkpoints
// (core/bilevel_checkpoint.h) every checkpoint.every iterations and at the end, resume, and the
// graceful stop on a signal.
#pragma once

#include "launch/config.h"
#include "launch/evaluation.h"

namespace mt {

// Runs algo=slbamm; rank 0 logs and prints. Throws UsageError for bad settings. The result's
// split is "test" for hyper-cleaning (acc_mean: the test accuracy of sl-BAMM's classifier),
// "bilevel" for the toy, "stopped" after a stop by signal; loss_mean is the last logged F.
EvalResult train_bilevel(const Config& cfg);

}  // namespace mt
