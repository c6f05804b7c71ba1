// The MPI backend of dist::Comm under mpiexec with 1, 2 and 4 ranks (every rank runs every test):
// topology, exact sums, max, broadcast from either end, barrier ordering, long and chunked
// buffers, MT_MPI_CHECK, and the make_comm rules ("auto" under a launcher, "nccl" without GPU).
#include "dist/comm.h"

#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/check.h"
#include "core/device.h"
#include "dist/mpi_check.h"
#include "dist/mpi_comm.h"

namespace mt::dist {
namespace {

// Whether every rank runs on rank 0's host (then local ranks equal ranks and clocks agree).
bool one_host(Comm& comm) {
  char name[MPI_MAX_PROCESSOR_NAME] = {};
  int length = 0;
  MPI_Get_processor_name(name, &length);
  char root_name[MPI_MAX_PROCESSOR_NAME] = {};
  std::memcpy(root_name, name, sizeof name);
  comm.broadcast(root_name, sizeof root_name, 0);
  int64_t differs = std::strcmp(name, root_name) != 0 ? 1 : 0;
  comm.allreduce_max(&differs, 1);
  return differs == 0;
}

TEST(MpiComm, RanksAreDistinctAndMatchTheLauncher) {
  MpiComm comm;
  EXPECT_EQ(comm.backend(), "mpi");
  const int size = comm.size();
  ASSERT_GE(size, 1);
  ASSERT_GE(comm.rank(), 0);
  ASSERT_LT(comm.rank(), size);
  // Started without a launcher (singleton MPI), the environment names no size.
  EXPECT_EQ(std::max(launched_ranks(), 1), size) << "OMPI_COMM_WORLD_SIZE / PMI_SIZE disagree";
  ASSERT_GE(comm.local_rank(), 0);
  ASSERT_LT(comm.local_rank(), size);

  // One-hot by rank, summed: each rank appears exactly once.
  std::vector<double> seen(size, 0.0);
  seen[comm.rank()] = 1.0;
  comm.allreduce_sum(seen.data(), seen.size());
  for (int r = 0; r < size; ++r) EXPECT_EQ(seen[r], 1.0) << "rank " << r;

  if (one_host(comm)) {
    EXPECT_EQ(comm.local_rank(), comm.rank());
    int64_t max_local = comm.local_rank();
    comm.allreduce_max(&max_local, 1);
    EXPECT_EQ(max_local, size - 1);
  }
}

TEST(MpiComm, AllreduceSumFloatIsExact) {
  MpiComm comm;
  const int size = comm.size();
  const size_t n = 1001;
  // Multiples of 1/4 below 2^10: every partial sum is exact in float, whatever the order.
  std::vector<float> buf(n);
  for (size_t i = 0; i < n; ++i) buf[i] = 0.5f * (comm.rank() + 1) + 0.25f * (i % 64);
  comm.allreduce_sum(buf.data(), n);
  const float rank_sum = 0.25f * size * (size + 1);  // Σ_r 0.5 (r + 1)
  for (size_t i = 0; i < n; ++i) {
    ASSERT_EQ(buf[i], rank_sum + 0.25f * size * (i % 64)) << "element " << i;
  }
}

TEST(MpiComm, AllreduceSumDoubleIsExact) {
  MpiComm comm;
  const int size = comm.size();
  const size_t n = 777;
  std::vector<double> buf(n);
  const double tiny = std::ldexp(1.0, -30);
  for (size_t i = 0; i < n; ++i) buf[i] = tiny * (comm.rank() + 1) - static_cast<double>(i);
  comm.allreduce_sum(buf.data(), n);
  for (size_t i = 0; i < n; ++i) {
    ASSERT_EQ(buf[i], tiny * size * (size + 1) / 2 - static_cast<double>(size) * i)
        << "element " << i;
  }
  comm.allreduce_sum(buf.data(), 0);  // empty: a no-op on every rank
  EXPECT_EQ(buf[1], tiny * size * (size + 1) / 2 - size);
}

TEST(MpiComm, AllreduceMaxAgreesOnFlagsAndChecksums) {
  MpiComm comm;
  const int size = comm.size();
  const int rank = comm.rank();
  const int64_t big = int64_t{1} << 62;
  // {per-rank value, negative values, a flag raised by the last rank only, a shared checksum}
  std::vector<int64_t> buf = {1000 * rank, -5 - rank, rank == size - 1 ? 1 : 0, big + 12345,
                              big + rank};
  comm.allreduce_max(buf.data(), buf.size());
  EXPECT_EQ(buf[0], 1000 * (size - 1));
  EXPECT_EQ(buf[1], -5);
  EXPECT_EQ(buf[2], 1);
  EXPECT_EQ(buf[3], big + 12345);  // equal everywhere ⇔ max equals the own value
  EXPECT_EQ(buf[4], big + size - 1);
}

TEST(MpiComm, BroadcastFromFirstAndLastRank) {
  MpiComm comm;
  const int size = comm.size();
  for (const int root : {0, size - 1}) {
    std::vector<uint8_t> buf(1001, 0xAB);
    if (comm.rank() == root)
      for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<uint8_t>(i * 7 + root);
    comm.broadcast(buf.data(), buf.size(), root);
    for (size_t i = 0; i < buf.size(); ++i)
      ASSERT_EQ(buf[i], static_cast<uint8_t>(i * 7 + root)) << "root " << root << " byte " << i;
  }
  uint8_t byte = 0;
  EXPECT_THROW(comm.broadcast(&byte, 1, size), Error);  // checked before any MPI call
  EXPECT_THROW(comm.broadcast(&byte, 1, -1), Error);
}

TEST(MpiComm, BarrierHoldsEveryRankUntilTheLastArrives) {
  MpiComm comm;
  if (!one_host(comm)) GTEST_SKIP() << "ranks on several hosts: clocks are not comparable";
  using Clock = std::chrono::steady_clock;  // CLOCK_MONOTONIC: one clock per host
  const auto now_ns = [] {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
        .count();
  };
  comm.barrier();
  // The last rank arrives 100 ms late; nobody may leave before it arrived.
  if (comm.rank() == comm.size() - 1) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  int64_t latest_arrival = now_ns();
  comm.barrier();
  const int64_t left = now_ns();
  comm.allreduce_max(&latest_arrival, 1);
  EXPECT_GE(left, latest_arrival);
}

TEST(MpiComm, LongBuffersAndChunkedCalls) {
  const size_t n = 3 * (size_t{1} << 20);
  // The default chunk (2^30 elements) and a tiny one that splits n into 3146 calls with a
  // partial last chunk: both must give the same exact sums.
  for (const size_t chunk : {MpiComm::kMaxCountPerCall, size_t{1000}}) {
    MpiComm comm(chunk);
    const int size = comm.size();
    std::vector<float> buf(n);
    for (size_t i = 0; i < n; ++i) buf[i] = static_cast<float>((i % 1024) + comm.rank());
    comm.allreduce_sum(buf.data(), n);
    const float rank_sum = 0.5f * size * (size - 1);
    size_t wrong = 0;
    for (size_t i = 0; i < n; ++i)
      wrong += buf[i] != size * static_cast<float>(i % 1024) + rank_sum;
    EXPECT_EQ(wrong, 0u) << "chunk " << chunk;

    std::vector<uint8_t> bytes(n + 3, comm.rank() == 0 ? 0 : 0xEE);
    if (comm.rank() == 0)
      for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i % 251);
    comm.broadcast(bytes.data(), bytes.size(), 0);
    wrong = 0;
    for (size_t i = 0; i < bytes.size(); ++i) wrong += bytes[i] != static_cast<uint8_t>(i % 251);
    EXPECT_EQ(wrong, 0u) << "chunk " << chunk;
  }
}

TEST(MpiCheck, FailingCallThrowsWithLocationAndMpiMessage) {
  MpiComm comm;  // sets MPI_ERRORS_RETURN on MPI_COMM_WORLD
  char byte = 0;
  try {
    MT_MPI_CHECK(MPI_Bcast(&byte, -1, MPI_BYTE, 0, MPI_COMM_WORLD));  // negative count
    ADD_FAILURE() << "MPI_Bcast with count -1 did not fail";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_EQ(e.code(), ExitCode::kRuntime);
    EXPECT_NE(message.find("comm_test.cpp:"), std::string::npos) << message;
    EXPECT_NE(message.find("MPI call `MPI_Bcast(&byte, -1"), std::string::npos) << message;
    EXPECT_NE(message.find("count"), std::string::npos) << message;  // MPI_ERR_COUNT's text
  }
  comm.barrier();  // the failure left MPI usable
}

// The launchers' environments as each sets it (Open MPI's mpirun, Hydra / srun --mpi=pmi2,
// srun --mpi=pmix); SLURM_NTASKS alone (a program in an allocation, started without srun) is no
// launch. The variables are restored afterwards.
TEST(LaunchedRanks, ReadsEachLaunchersEnvironment) {
  const char* names[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "SLURM_STEP_NUM_TASKS",
                         "SLURM_NTASKS"};
  std::vector<std::optional<std::string>> saved;
  for (const char* n : names) {
    const char* v = std::getenv(n);
    saved.push_back(v ? std::optional<std::string>(v) : std::nullopt);
    unsetenv(n);
  }
  EXPECT_EQ(launched_ranks(), 0);
  setenv("SLURM_NTASKS", "4", 1);
  EXPECT_EQ(launched_ranks(), 0) << "an allocation without srun";
  setenv("SLURM_STEP_NUM_TASKS", "3", 1);
  EXPECT_EQ(launched_ranks(), 0) << "a step without PMIx or PMI";
  setenv("PMIX_RANK", "0", 1);
  EXPECT_EQ(launched_ranks(), 3) << "srun --mpi=pmix";
  setenv("PMI_SIZE", "5", 1);
  EXPECT_EQ(launched_ranks(), 5) << "PMI_SIZE first";
  setenv("OMPI_COMM_WORLD_SIZE", "6", 1);
  EXPECT_EQ(launched_ranks(), 6) << "OMPI_COMM_WORLD_SIZE first";
  for (size_t i = 0; i < saved.size(); ++i) {
    if (saved[i])
      setenv(names[i], saved[i]->c_str(), 1);
    else
      unsetenv(names[i]);
  }
}

// The start-up line's placement: hosts in the order of their first rank, runs of consecutive
// ranks as ranges.
class PlacedComm final : public SingleProcessComm {
 public:
  explicit PlacedComm(std::vector<std::string> hosts) : hosts_(std::move(hosts)) {}
  int size() const override { return static_cast<int>(hosts_.size()); }
  std::string host(int r) const override { return hosts_.at(static_cast<size_t>(r)); }

 private:
  std::vector<std::string> hosts_;
};

TEST(Placement, GroupsRanksByHostInOrder) {
  EXPECT_EQ(describe_placement(PlacedComm({"a"})), "a (rank 0)");
  EXPECT_EQ(describe_placement(PlacedComm({"a", "a", "b", "b"})), "a (ranks 0-1), b (ranks 2-3)");
  EXPECT_EQ(describe_placement(PlacedComm({"b", "a", "b", "b", "c", "a"})),
            "b (ranks 0,2-3), a (ranks 1,5), c (rank 4)");
}

TEST(MakeComm, AutoPicksMpiUnderALauncherWithSeveralRanks) {
  const int launched = std::max(launched_ranks(), 1);  // 0 without a launcher: one process
  const auto comm = make_comm("auto");
  if (launched > 1) {
    EXPECT_EQ(comm->backend(), "mpi");
  } else {
    EXPECT_EQ(comm->backend(), "single");
  }
  EXPECT_EQ(comm->size(), launched);
  double one = 1.0;
  comm->allreduce_sum(&one, 1);
  EXPECT_EQ(one, static_cast<double>(launched));
}

TEST(MakeComm, SingleAndUnknownNames) {
  const auto single = make_comm("single");
  EXPECT_EQ(single->backend(), "single");
  EXPECT_EQ(single->size(), 1);
  int64_t flag = -7;
  single->allreduce_max(&flag, 1);
  EXPECT_EQ(flag, -7);
  try {
    make_comm("gloo");
    ADD_FAILURE() << "make_comm(\"gloo\") did not throw";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("'gloo'"), std::string::npos) << e.what();
  }
}

TEST(MakeComm, NcclWithoutGpuIsAUsageErrorNamingTheGpu) {
  if (gpu_count() > 0) GTEST_SKIP() << "a GPU is visible: nccl_comm_test covers this machine";
  try {
    make_comm("nccl");
    ADD_FAILURE() << "make_comm(\"nccl\") without a GPU did not throw";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("GPU"), std::string::npos) << e.what();
    if (!cuda_built())
      EXPECT_NE(std::string(e.what()).find("no CUDA/NCCL"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace mt::dist
