// MpiComm: the MPI backend of dist::Comm over MPI_COMM_WORLD; every buffer is host memory.
// It initialises MPI when nobody has (and then finalises it in its destructor), so keep one
// MpiComm alive for the life of the job: MPI cannot be initialised twice in a process.
// Collectives are non-blocking MPI calls polled against the deadline (Comm::deadline_s).
#pragma once

#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

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
  std::string host(int r) const override { return hosts_.at(static_cast<size_t>(r)); }

  // Arrival notices go to every rank up to this many ranks; beyond, a rank that times out cannot
  // name the ranks that have not arrived (P − 1 tiny messages per collective and rank).
  static constexpr int kMaxNoticeRanks = 256;

 private:
  // A notice in flight: the collective's number, sent to every other rank.
  struct Notice {
    int64_t seq = 0;
    std::vector<MPI_Request> sends;
  };
  // One collective: announce it, start it (start fills the request), wait for it within the
  // deadline; past it, or on an MPI error, throws mt::Error naming `call`, the context and the
  // ranks that have not announced this collective.
  void collective(const std::string& call, const std::function<int(MPI_Request*)>& start);
  template <typename T>
  void allreduce(T* buf, size_t n, MPI_Datatype type, MPI_Op op, const char* name);
  void announce();              // sends seq_ to every other rank; retires sent notices
  void read_notices();          // records every notice that has arrived
  std::string missing_ranks();  // "ranks 2 (host b), 3 (host b) have not reached it" or the like
  void release_notices() noexcept;

  size_t max_count_per_call_;
  bool owns_mpi_ = false;  // this object initialised MPI and finalises it
  int rank_ = 0;
  int size_ = 1;
  int local_rank_ = 0;
  std::vector<std::string> hosts_;
  MPI_Comm notices_ = MPI_COMM_NULL;  // a private duplicate of MPI_COMM_WORLD for the notices
  int64_t seq_ = 0;                   // collectives started by this rank
  std::vector<int64_t> seen_;         // the latest collective each rank announced
  std::deque<std::unique_ptr<Notice>> sending_;
};

}  // namespace mt::dist
