// The communicator API (DESIGN §6): rank, size, local rank, sum-allreduce of a flat buffer,
// broadcast, barrier, abort. Algorithm code talks only to this interface; backends (single
// process now; MPI and NCCL later) are chosen at run time by make_comm.
#pragma once

#include <memory>
#include <string>

namespace mt::dist {

class Comm {
 public:
  virtual ~Comm() = default;
  virtual std::string backend() const = 0;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual int local_rank() const = 0;
  // In place: buf ← Σ over ranks of buf.
  virtual void allreduce_sum(float* buf, size_t n) = 0;
  virtual void allreduce_sum(double* buf, size_t n) = 0;
  // In place: buf ← rank root's buf.
  virtual void broadcast(void* buf, size_t bytes, int root) = 0;
  virtual void barrier() = 0;
  // Ends every rank of the job (never returns).
  [[noreturn]] virtual void abort(int exit_code) = 0;
};

// The backend for one process: collectives are identities.
class SingleProcessComm : public Comm {
 public:
  std::string backend() const override { return "single"; }
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_rank() const override { return 0; }
  void allreduce_sum(float*, size_t) override {}
  void allreduce_sum(double*, size_t) override {}
  void broadcast(void*, size_t, int) override {}
  void barrier() override {}
  [[noreturn]] void abort(int exit_code) override;
};

// The communicator for this process: "single" is the only backend built so far.
std::unique_ptr<Comm> make_comm(const std::string& backend);

}  // namespace mt::dist
