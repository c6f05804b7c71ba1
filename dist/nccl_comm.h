// The NCCL backend of dist::Comm, reached through one factory so that callers need no #ifdef:
// nccl_comm_cuda.cpp builds it in CUDA builds, nccl_comm_nocuda.cpp is the stub that refuses.
// No NCCL call can hang the job: every wait has a deadline, and a failure aborts the comm.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "dist/comm.h"

struct CUstream_st;  // cudaStream_t is CUstream_st*

namespace mt::dist {

struct NcclOptions {
  // Seconds this rank waits for any one NCCL operation (communicator init, each collective
  // including the wait for the slowest rank to reach it, finalize at destruction) before it
  // aborts the communicator and throws; DESIGN §6's dist.timeout. Positive and finite.
  double timeout_s = 60;
};

// A communicator whose allreduce_sum and broadcast run NCCL on device buffers (host buffers are
// staged through device memory), bootstrapped by MPI over MPI_COMM_WORLD: rank, size and local
// rank as in MpiComm, the NCCL unique id sent by MPI_Bcast from rank 0, and this thread's current
// device set to local_rank % device_count. allreduce_max and barrier go over MPI on host memory.
// Needs one GPU per rank of a node (two ranks on one GPU are refused).
//
// Faults: the NCCL communicator is non-blocking; init and every collective are polled (NCCL's
// asynchronous error and the stream) for at most NcclOptions::timeout_s. On an error or the
// deadline the rank calls ncclCommAbort and throws mt::Error naming the rank, the call, NCCL's
// message and the seconds waited; run_on_ranks (launch/exit_codes.h) then ends the job through
// abort(). Later collectives on an aborted communicator throw. abort: ncclCommAbort, then
// MPI_Abort. The destructor finalizes a healthy communicator within the deadline (else aborts
// it) and never throws.
//
// Ordering of device buffers: NCCL runs on a stream of its own. The overloads with `producer`
// take the stream (a cudaStream_t) whose work writes buf: the collective waits on the GPU for
// the work enqueued there so far (an event recorded on producer and waited on by the NCCL
// stream), so the caller need not synchronise it. nullptr, and the plain Comm entry points,
// mean the legacy default stream: a buffer written on any other non-blocking stream must go
// through the overload or be synchronised first. Every collective returns with its result in buf.
class NcclComm : public Comm {
 public:
  using Comm::allreduce_sum;
  using Comm::broadcast;
  virtual void allreduce_sum(float* buf, size_t n, CUstream_st* producer) = 0;
  virtual void allreduce_sum(double* buf, size_t n, CUstream_st* producer) = 0;
  virtual void allreduce_sum(int64_t* buf, size_t n, CUstream_st* producer) = 0;
  virtual void broadcast(void* buf, size_t bytes, int root, CUstream_st* producer) = 0;
};

// Throws mt::UsageError without a usable GPU or in a build without CUDA, mt::Error when NCCL
// init fails or passes options.timeout_s.
std::unique_ptr<NcclComm> make_nccl_comm(const NcclOptions& options = {});

// The linked NCCL library's version, "2.28.9" (followed by " (built against 2.27.3)" when the
// header differed), for the start-up line; "not built" in a build without CUDA. Needs no GPU.
std::string nccl_version();

}  // namespace mt::dist
