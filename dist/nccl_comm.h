// The NCCL backend of dist::Comm, reached through one factory so that callers need no #ifdef:
// nccl_comm_cuda.cpp builds it in CUDA builds, nccl_comm_nocuda.cpp is the stub that refuses.
#pragma once

#include <memory>

#include "dist/comm.h"

namespace mt::dist {

// A communicator whose allreduce_sum and broadcast run NCCL on device buffers (host buffers are
// staged through device memory; on a stream it owns, synchronised before returning), bootstrapped by MPI over MPI_COMM_WORLD: rank, size and
// local rank as in MpiComm, the NCCL unique id sent by MPI_Bcast from rank 0, and this thread's
// current device set to local_rank % device_count. allreduce_max and barrier go over MPI on host
// memory. abort: ncclCommAbort, then MPI_Abort. Needs one GPU per rank of a node (two ranks on
// one GPU are refused). Throws mt::UsageError without a usable GPU or in a build without CUDA.
std::unique_ptr<Comm> make_nccl_comm();

}  // namespace mt::dist
