// Progress reporting of rank 0: a redrawn one-line bar on a terminal, plain lines otherwise
// (logs, CI, Slurm output files).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace mt {

// Wall-clock seconds since t0.
inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

class Progress {
 public:
  // `total` steps; a plain line is printed every `every` steps when not on a terminal. `unit`
  // names what is counted in plain lines ("step 40/300 ...").
  Progress(int64_t total, int64_t every, bool enabled, std::string unit = "step");
  ~Progress() { finish_line(); }  // also when an error unwinds past the bar
  Progress(const Progress&) = default;
  Progress& operator=(const Progress&) = default;
  // Reports that `done` steps are finished, with a short status text. `fraction`, when given
  // (in (0, 1]), is the share of this process's work done, for jobs that something other than
  // `total` ends (a gradient-evaluation budget): the remaining time is estimated from it.
  void update(int64_t done, const std::string& status, double fraction = -1);
  // Ends the bar's line (before other output, and at the end).
  void finish_line();

 private:
  int64_t total_, every_;
  std::string unit_;
  bool enabled_, tty_;
  bool dirty_ = false;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace mt
