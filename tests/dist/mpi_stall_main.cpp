// A two-rank job for the MPI deadline test (tests/dist/CMakeLists.txt): after one allreduce,
// rank 1 stops answering while rank 0 waits in the next with a 2 s deadline. Only the deadline
// (Comm::deadline_s, dist/mpi_comm.cpp) ends the job, naming the call, the context and rank 1.
#include <chrono>
#include <cstdio>
#include <thread>

#include "dist/comm.h"
#include "launch/exit_codes.h"

int main() {
  auto comm = mt::dist::make_comm("mpi", 2.0);
  if (comm->size() < 2) {
    std::fprintf(stderr, "mpi_stall_main needs at least 2 ranks, got %d\n", comm->size());
    return 2;
  }
  mt::run_on_ranks("mpi_stall_main", *comm, [&] {
    double x[4] = {1, 2, 3, 4};
    comm->allreduce_sum(x, 4);
    comm->end_startup();  // the 2 s deadline, not start-up's three times that
    comm->set_context("step 3");
    if (comm->rank() == 1) {
      std::fprintf(stderr, "rank 1: hanging instead of joining the next allreduce\n");
      std::this_thread::sleep_for(std::chrono::hours(1));
    }
    comm->allreduce_sum(x, 4);
    std::printf("rank %d got past the allreduce: the hung rank was not noticed\n", comm->rank());
  });
  return 0;
}
