// Graceful stop on SIGTERM / SIGINT / SIGUSR1 (Slurm preemption, Ctrl-C, `kill -USR1` of
// mpirun, which forwards SIGUSR1 to the ranks but kills them on SIGTERM): the first signal raises a
// flag, which the training loop reads after each outer step to write a checkpoint and exit 0;
// a second signal ends the process at once (the last good checkpoint is never being written
// in place: checkpoints are renamed into place, so it stays valid).
#pragma once

namespace mt {

// Installs the handlers (idempotent). The loop polls stop_requested().
void install_stop_handlers();
bool stop_requested();
// The signal number that requested the stop (0 if none).
int stop_signal();

}  // namespace mt
