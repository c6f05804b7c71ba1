// Signal handlers for a graceful stop (launch/stop_signal.h). Only async-signal-safe calls are
// made inside the handler: atomics, clock_gettime(2), write(2) and _exit(2).
#include "launch/stop_signal.h"

#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>

namespace mt {

namespace {

static_assert(kStopGraceMs == 5000, "the handler's messages say 5 s");
static_assert(std::atomic<int64_t>::is_always_lock_free, "used inside a signal handler");

std::atomic<int> g_signal{0};
std::atomic<int64_t> g_first_ns{0};  // CLOCK_MONOTONIC time of the first signal; 0 until set

int64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

void say(const char* msg) { (void)!write(STDERR_FILENO, msg, std::strlen(msg)); }

void on_signal(int sig) {
  const int64_t now = monotonic_ns();
  int none = 0;
  if (g_signal.compare_exchange_strong(none, sig)) {
    g_first_ns.store(now);
    say("\nmetatrain: stop requested: finishing this step, then writing a checkpoint "
        "(a signal more than 5 s from now exits at once, without one)\n");
    return;
  }
  // first == 0: the first signal's handler is still running on another thread.
  const int64_t first = g_first_ns.load();
  if (first == 0 || now - first < int64_t{kStopGraceMs} * 1000000) {
    say("\nmetatrain: another signal within 5 s of the stop request: ignored, the checkpoint "
        "goes on\n");
    return;
  }
  say("\nmetatrain: second signal: exiting now, without a checkpoint\n");
  _exit(128 + sig);
}

}  // namespace

void install_stop_handlers() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  // The three signals are blocked while the handler runs, so two of them never nest on a thread.
  sigaddset(&sa.sa_mask, SIGTERM);
  sigaddset(&sa.sa_mask, SIGINT);
  sigaddset(&sa.sa_mask, SIGUSR1);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGUSR1, &sa, nullptr);  // Open MPI's mpirun forwards SIGUSR1 to every rank
}

bool stop_requested() { return g_signal.load() != 0; }

int stop_signal() { return g_signal.load(); }

}  // namespace mt
