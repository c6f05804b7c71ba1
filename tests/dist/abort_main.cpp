// A two-rank job for the abort test (tests/dist/CMakeLists.txt): rank 1 calls Comm::abort(3)
// while rank 0 waits in a barrier that rank 1 never reaches. Only a working abort ends the job.
#include <chrono>
#include <cstdio>
#include <thread>

#include "dist/comm.h"

int main() {
  auto comm = mt::dist::make_comm("mpi");
  if (comm->size() < 2) {
    std::fprintf(stderr, "abort_main needs at least 2 ranks, got %d\n", comm->size());
    return 2;
  }
  if (comm->rank() == 1) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // rank 0 is in the barrier
    std::fprintf(stderr, "rank 1: calling abort(3)\n");
    comm->abort(3);
  }
  comm->barrier();
  double x = 1.0;
  comm->allreduce_sum(&x, 1);
  std::printf("rank %d got past the barrier: abort did not end the job\n", comm->rank());
  return 0;
}
