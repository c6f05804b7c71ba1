// Backend selection and the single-process backend of dist/comm.h.
#include "dist/comm.h"

#include <cstdlib>

#include "core/check.h"

namespace mt::dist {

void SingleProcessComm::abort(int exit_code) { std::_Exit(exit_code); }

std::unique_ptr<Comm> make_comm(const std::string& backend) {
  MT_REQUIRE(backend == "single", "communicator backend '", backend,
             "' is not available in this build (available: single)");
  return std::make_unique<SingleProcessComm>();
}

}  // namespace mt::dist
