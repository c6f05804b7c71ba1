// The NCCL factory of a build without CUDA: the backend exists only in CUDA builds, so asking
// for it is a usage error that says what to do instead.
#include "core/check.h"
#include "dist/nccl_comm.h"

namespace mt::dist {

std::unique_ptr<NcclComm> make_nccl_comm(const NcclOptions&) {
  throw UsageError(
      "communicator backend 'nccl': this build has no CUDA/NCCL (the nccl backend needs a CUDA "
      "build and a GPU); use the mpi backend, or rebuild with CUDA");
}

std::string nccl_version() { return "not built"; }

}  // namespace mt::dist
