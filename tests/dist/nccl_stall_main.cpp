// A two-rank NCCL job for the stall test (tests/dist/CMakeLists.txt): after one allreduce both
// join, rank 1 hangs in host code while rank 0 enters a second allreduce with a 5 s deadline.
// Only the deadline (ncclCommAbort, an error) and run_on_ranks' MPI_Abort end the job. Exits 77
// (skipped) on a node with fewer than two GPUs.
#include <chrono>
#include <cstdio>
#include <thread>

#include "core/cuda_check.h"
#include "core/device.h"
#include "dist/nccl_comm.h"
#include "launch/exit_codes.h"

int main() {
  if (mt::gpu_count() < 2) {
    std::fprintf(stderr, "nccl_stall_main needs two GPUs: %s\n", mt::describe_devices().c_str());
    return 77;
  }
  const auto comm = mt::dist::make_nccl_comm(mt::dist::NcclOptions{5.0});
  mt::run_on_ranks("nccl_stall_main", *comm, [&] {
    const size_t n = size_t{1} << 20;
    mt::DeviceBuffer<float> buf(n);
    MT_CUDA_CHECK(cudaMemset(buf.data(), 0, n * sizeof(float)));
    comm->allreduce_sum(buf.data(), n);
    comm->end_startup();  // the 5 s deadline, not start-up's three times that
    if (comm->rank() == 1) {
      std::fprintf(stderr, "rank 1: hanging instead of joining the next allreduce\n");
      std::this_thread::sleep_for(std::chrono::hours(1));
    }
    comm->allreduce_sum(buf.data(), n);
    std::printf("rank %d got past the allreduce: the hung rank was not noticed\n", comm->rank());
  });
  return 0;
}
