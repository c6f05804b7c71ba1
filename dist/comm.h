// The communicator API (DESIGN §6): rank, size, local rank, sum- (float, double, int64) and
// max-allreduce of a flat buffer, broadcast, barrier, abort. Algorithm code talks only to this
// interface; the backend (single process, MPI, NCCL) is chosen at run time by make_comm.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

namespace mt::dist {

// Where the buffers live, per backend:
//   single, mpi: every buffer is host memory.
//   nccl:        allreduce_sum and broadcast run NCCL on DEVICE memory of the GPU this rank
//                selected (see local_rank); given host memory they stage it through a device
//                buffer (two extra copies). allreduce_max takes HOST pointers (it runs over MPI:
//                it is meant for a few flags and checksums, not for tensors).
// Every collective returns once the result is in buf: nothing is left in flight.
//
// Deadlines (DESIGN §6, dist.timeout): the MPI and NCCL backends poll every wait of a
// collective against deadline_s(); a rank whose wait passes it throws mt::Error naming the
// collective, context() and, where it can know them, the ranks that have not reached the
// collective, and run_on_ranks (launch/exit_codes.h) then ends the job. Until end_startup() the
// deadline is kStartupFactor times longer: start-up loads data and the first step allocates.
class Comm {
 public:
  static constexpr double kDefaultTimeoutS = 300;
  static constexpr double kStartupFactor = 3;

  virtual ~Comm() = default;
  // timeout_s: positive and finite (mt::UsageError otherwise).
  virtual void set_timeout(double timeout_s);
  // What the job is doing, named when a wait passes its deadline ("step 12").
  virtual void set_context(std::string context) { context_ = std::move(context); }
  virtual void end_startup() { startup_ = false; }
  double timeout_s() const { return timeout_s_; }
  double deadline_s() const { return startup_ ? kStartupFactor * timeout_s_ : timeout_s_; }
  const std::string& context() const { return context_; }

  virtual std::string backend() const = 0;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Rank among the ranks of this node (0 .. ranks on the node − 1); picks the GPU.
  virtual int local_rank() const = 0;
  // The host that rank r runs on (MPI_Get_processor_name; this machine's name for one process).
  virtual std::string host(int r) const = 0;
  // In place: buf ← Σ over ranks of buf.
  virtual void allreduce_sum(float* buf, size_t n) = 0;
  virtual void allreduce_sum(double* buf, size_t n) = 0;
  // Integer sums are exact and associative: the result has the same bits for any rank count
  // and reduction order (the exact reduction, core/exact_sum.h). Callers keep every partial sum
  // in int64 range (no backend checks for overflow).
  virtual void allreduce_sum(int64_t* buf, size_t n) = 0;
  // In place, host memory in every backend: buf ← max over ranks of buf. For agreeing on flags
  // (stop requested, error seen) and on checksums (equal everywhere iff max == own value).
  virtual void allreduce_max(int64_t* buf, size_t n) = 0;
  // In place: buf ← rank root's buf.
  virtual void broadcast(void* buf, size_t bytes, int root) = 0;
  virtual void barrier() = 0;
  // Ends every rank of the job with exit_code (never returns).
  [[noreturn]] virtual void abort(int exit_code) = 0;

 private:
  double timeout_s_ = kDefaultTimeoutS;
  bool startup_ = true;
  std::string context_ = "start-up";
};

// The backend for one process: collectives are identities.
class SingleProcessComm : public Comm {
 public:
  std::string backend() const override { return "single"; }
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_rank() const override { return 0; }
  std::string host(int) const override;
  void allreduce_sum(float*, size_t) override {}
  void allreduce_sum(double*, size_t) override {}
  void allreduce_sum(int64_t*, size_t) override {}
  void allreduce_max(int64_t*, size_t) override {}
  void broadcast(void*, size_t, int) override {}
  void barrier() override {}
  [[noreturn]] void abort(int exit_code) override;
};

// The communicator for this process. backend:
//   "single"  one process, no MPI.
//   "mpi"     MpiComm over MPI_COMM_WORLD (dist/mpi_comm.h); host buffers.
//   "nccl"    NCCL over the GPUs, bootstrapped by MPI (dist/nccl_comm.h); device buffers. A
//             UsageError in a build without CUDA or on a machine without a usable GPU.
//   "auto"    "mpi" when a launcher started this process as one of several ranks, else "single"
//             (see launched_ranks).
// Any other name is a UsageError. timeout_s is the collectives' deadline (Comm::set_timeout;
// also the NCCL communicator's init deadline, NcclOptions::timeout_s).
std::unique_ptr<Comm> make_comm(const std::string& backend,
                                double timeout_s = Comm::kDefaultTimeoutS);

// Where the ranks run, for the start-up line of a job: "mt-h1 (ranks 0-1), mt-h2 (rank 2)",
// hosts in the order of their first rank, consecutive ranks as ranges.
std::string describe_placement(const Comm& comm);

// Number of ranks the launcher says this job has, from the environment, or 0 when no MPI
// launcher is recognised. Read, in order: OMPI_COMM_WORLD_SIZE (Open MPI's mpirun/mpiexec),
// PMI_SIZE (MPICH/Intel MPI Hydra, srun --mpi=pmi2), and SLURM_STEP_NUM_TASKS when PMIX_RANK
// is set (srun --mpi=pmix, which sets neither of the others; checked on Slurm 22.05 with Open
// MPI 4.1.4). SLURM_NTASKS is deliberately not used: inside an allocation it is set for a
// program started without srun too.
int launched_ranks();

}  // namespace mt::dist
