// Graceful stop on SIGTERM / SIGINT / SIGUSR1 (Slurm time limit or preemption, Ctrl-C, `kill
// -USR1` of mpirun, which forwards SIGUSR1 to the ranks): the first signal raises a flag, which
// the training loop reads after each outer step to write a checkpoint and exit 0.
//
// A further signal within kStopGraceMs of the first is absorbed (a message says so): one stop
// often arrives twice a few milliseconds apart (Slurm signals the batch shell and the job steps,
// srun forwards what it got, a launcher passes a Ctrl-C on to ranks that had it already), and the
// duplicate must not cancel the checkpoint. A signal later than that ends the process at once
// with 128 + signal, without a checkpoint; the last good checkpoint stays valid (checkpoints are
// renamed into place, never written in place).
#pragma once

namespace mt {

// How long after the first stop signal further signals are ignored, in milliseconds.
inline constexpr int kStopGraceMs = 5000;

// Installs the handlers (idempotent). The loop polls stop_requested().
void install_stop_handlers();
bool stop_requested();
// The signal number that requested the stop (0 if none).
int stop_signal();

}  // namespace mt
