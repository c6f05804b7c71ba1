// Signal handlers for a graceful stop (launch/stop_signal.h). Only async-signal-safe calls are
// made inside the handler: an atomic store, write(2) and _exit(2).
#include "launch/stop_signal.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

namespace mt {

namespace {

std::atomic<int> g_signal{0};

void on_signal(int sig) {
  if (g_signal.exchange(sig) != 0) {
    const char msg[] = "\nmetatrain: second signal: exiting now, without a checkpoint\n";
    (void)!write(STDERR_FILENO, msg, sizeof msg - 1);
    _exit(128 + sig);
  }
  const char msg[] =
      "\nmetatrain: stop requested: finishing this step, then writing a checkpoint "
      "(signal again to exit at once)\n";
  (void)!write(STDERR_FILENO, msg, sizeof msg - 1);
}

}  // namespace

void install_stop_handlers() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGUSR1, &sa, nullptr);  // Open MPI's mpirun forwards SIGUSR1 to every rank
}

bool stop_requested() { return g_signal.load() != 0; }

int stop_signal() { return g_signal.load(); }

}  // namespace mt
