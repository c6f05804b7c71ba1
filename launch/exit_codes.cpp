// Error-to-exit-code mapping of the programs (launch/exit_codes.h).
#include "launch/exit_codes.h"

#include <cstdio>
#include <exception>

#include "core/check.h"
#include "dist/comm.h"

namespace mt {

int guarded_main(const char* program, const char* usage_hint, const std::function<int()>& body) {
  // Progress lines appear as they are printed, also when stdout is a file or a pipe (nohup,
  // Slurm's output file), not at exit.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  try {
    return body();
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s: error: %s\n", program, e.what());
    if (usage_hint != nullptr) std::fprintf(stderr, "%s\n", usage_hint);
    return static_cast<int>(ExitCode::kUsage);
  } catch (const Error& e) {
    std::fprintf(stderr, "%s: fatal: %s\n", program, e.what());
    return static_cast<int>(e.code());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: fatal: %s\n", program, e.what());
    return static_cast<int>(ExitCode::kRuntime);
  }
}

void run_on_ranks(const char* program, dist::Comm& comm, const std::function<void()>& body) {
  auto end_job = [&](ExitCode code, const char* what) {
    std::fprintf(stderr, "%s: rank %d of %d: %s: %s\n", program, comm.rank(), comm.size(),
                 code == ExitCode::kUsage ? "error" : "fatal", what);
    std::fflush(stderr);
    comm.abort(static_cast<int>(code));
  };
  try {
    body();
  } catch (const Error& e) {
    if (comm.size() == 1) throw;
    end_job(e.code(), e.what());
  } catch (const std::exception& e) {
    if (comm.size() == 1) throw;
    end_job(ExitCode::kRuntime, e.what());
  }
}

}  // namespace mt
