// MpiComm: the MPI backend of dist::Comm over MPI_COMM_WORLD; every buffer is host memory.
// It initialises MPI when nobody has (and then finalises it in its destructor), so keep one
// MpiComm alive for the life of the job: MPI cannot be initialised twice in a process.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "dist/comm.h"

namespace mt::dist {

class MpiComm : public Comm {
 public:
  // Elements (bytes for broadcast) per MPI call: MPI counts are int, longer buffers go in chunks.
  static constexpr size_t kMaxCountPerCall = size_t{1} << 30;

  // Initialises MPI (MPI_Init_thread, MPI_THREAD_FUNNELED) unless it is already initialised, and
  // sets MPI_ERRORS_RETURN on MPI_COMM_WORLD so that failures throw (MT_MPI_CHECK) instead of
  // ending the process. max_count_per_call below kMaxCountPerCall is for tests of the chunking.
  explicit MpiComm(size_t max_count_per_call = kMaxCountPerCall);
  ~MpiComm() override;
  MpiComm(const MpiComm&) = delete;
  MpiComm& operator=(const MpiComm&) = delete;

  std::string backend() const override { return "mpi"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  // Rank within MPI_Comm_split_type(MPI_COMM_TYPE_SHARED): the ranks sharing this node.
  int local_rank() const override { return local_rank_; }
  void allreduce_sum(float* buf, size_t n) override;
  void allreduce_sum(double* buf, size_t n) override;
  void allreduce_sum(int64_t* buf, size_t n) override;
  void allreduce_max(int64_t* buf, size_t n) override;
  void broadcast(void* buf, size_t bytes, int root) override;
  void barrier() override;
  // MPI_Abort(MPI_COMM_WORLD, exit_code): the launcher ends every rank.
  [[noreturn]] void abort(int exit_code) override;

 private:
  size_t max_count_per_call_;
  bool owns_mpi_ = false;  // this object initialised MPI and finalises it
  int rank_ = 0;
  int size_ = 1;
  int local_rank_ = 0;
};

}  // namespace mt::dist
