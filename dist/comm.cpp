// Backend selection (make_comm, including the "auto" rule) and the single-process backend of
// dist/comm.h.
#include "dist/comm.h"

#include <cerrno>
#include <cstdlib>

#include "core/check.h"
#include "dist/mpi_comm.h"
#include "dist/nccl_comm.h"

namespace mt::dist {

namespace {
// The value of an environment variable that holds a positive integer, or 0.
int positive_env(const char* name) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return 0;
  char* end = nullptr;
  errno = 0;
  const long value = std::strtol(text, &end, 10);
  if (errno != 0 || *end != '\0' || value <= 0 || value > (1L << 30)) return 0;
  return static_cast<int>(value);
}
}  // namespace

void SingleProcessComm::abort(int exit_code) { std::_Exit(exit_code); }

int launched_ranks() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}) {
    if (const int n = positive_env(name); n > 0) return n;
  }
  return 0;
}

std::unique_ptr<Comm> make_comm(const std::string& backend, double nccl_timeout_s) {
  if (backend == "single") return std::make_unique<SingleProcessComm>();
  if (backend == "mpi") return std::make_unique<MpiComm>();
  if (backend == "nccl") return make_nccl_comm(NcclOptions{nccl_timeout_s});
  if (backend == "auto") {
    if (launched_ranks() > 1) return std::make_unique<MpiComm>();
    return std::make_unique<SingleProcessComm>();
  }
  throw UsageError(detail::concat("unknown communicator backend '", backend,
                                  "' (choose single, mpi, nccl or auto)"));
}

}  // namespace mt::dist
