// The NCCL backend of dist::Comm on device buffers (CUDA builds only; run under mpiexec): sums,
// broadcast, staging of host buffers, ordering after the stream that wrote a buffer, and the
// deadline of a collective a peer never joins. Skips with the reason when no GPU is usable or a
// host would need two ranks on one GPU; the no-GPU refusal of make_comm("nccl") is checked by
// comm_test, which runs on every machine.
#include "dist/nccl_comm.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "core/check.h"
#include "core/cuda_check.h"
#include "core/device.h"
#include "dist/comm.h"
#include "dist/mpi_comm.h"

namespace mt::dist {
namespace {

// Why NCCL cannot run in this job, or "" when it can: needs a GPU per rank (one host assumed,
// as under CTest).
std::string reason_to_skip() {
  const int gpus = gpu_count();
  if (gpus == 0) return "no GPU: " + describe_devices();
  MpiComm mpi;
  if (mpi.size() > gpus)
    return detail::concat(mpi.size(), " ranks but ", gpus, " GPUs: NCCL needs a GPU per rank");
  return "";
}

TEST(NcclComm, SumsAndBroadcastsDeviceBuffers) {
  if (const std::string why = reason_to_skip(); !why.empty()) GTEST_SKIP() << why;
  const auto comm = make_comm("nccl");
  EXPECT_EQ(comm->backend(), "nccl");
  const int size = comm->size();
  const int rank = comm->rank();
  EXPECT_EQ(size, std::max(launched_ranks(), 1));

  // Float: 3·2^20 + 1 elements of small integers plus the rank: exact sums.
  const size_t n = 3 * (size_t{1} << 20) + 1;
  std::vector<float> host(n);
  for (size_t i = 0; i < n; ++i) host[i] = static_cast<float>((i % 1024) + rank);
  DeviceBuffer<float> dev(n);
  dev.copy_from_host(host.data(), n);
  comm->allreduce_sum(dev.data(), n);
  dev.copy_to_host(host.data(), n);
  const float rank_sum = 0.5f * size * (size - 1);
  size_t wrong = 0;
  for (size_t i = 0; i < n; ++i) wrong += host[i] != size * static_cast<float>(i % 1024) + rank_sum;
  EXPECT_EQ(wrong, 0u);

  // Double: values with a 2^-30 part, still exact.
  std::vector<double> host_d(4097);
  for (size_t i = 0; i < host_d.size(); ++i) host_d[i] = (rank + 1) * 0x1p-30 - double(i);
  DeviceBuffer<double> dev_d(host_d.size());
  dev_d.copy_from_host(host_d.data(), host_d.size());
  comm->allreduce_sum(dev_d.data(), host_d.size());
  dev_d.copy_to_host(host_d.data(), host_d.size());
  wrong = 0;
  for (size_t i = 0; i < host_d.size(); ++i)
    wrong += host_d[i] != size * (size + 1) / 2 * 0x1p-30 - double(size) * i;
  EXPECT_EQ(wrong, 0u);

  // Broadcast of an odd number of bytes from the last rank.
  const int root = size - 1;
  std::vector<uint8_t> bytes(100003, 0xEE);
  if (rank == root)
    for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i % 253);
  DeviceBuffer<uint8_t> dev_b(bytes.size());
  dev_b.copy_from_host(bytes.data(), bytes.size());
  comm->broadcast(dev_b.data(), bytes.size(), root);
  dev_b.copy_to_host(bytes.data(), bytes.size());
  wrong = 0;
  for (size_t i = 0; i < bytes.size(); ++i) wrong += bytes[i] != static_cast<uint8_t>(i % 253);
  EXPECT_EQ(wrong, 0u);

  // allreduce_max takes host memory in this backend too.
  int64_t flags[2] = {rank, -rank};
  comm->allreduce_max(flags, 2);
  EXPECT_EQ(flags[0], size - 1);
  EXPECT_EQ(flags[1], 0);
  comm->barrier();
}

// Host buffers are staged through device memory: the same sums and broadcast as on the device.
TEST(NcclComm, HostBuffersAreStagedThroughTheDevice) {
  if (const std::string why = reason_to_skip(); !why.empty()) GTEST_SKIP() << why;
  const auto comm = make_comm("nccl");
  const int size = comm->size(), rank = comm->rank();
  std::vector<float> host(100001);
  for (size_t i = 0; i < host.size(); ++i) host[i] = static_cast<float>((i % 512) + rank);
  comm->allreduce_sum(host.data(), host.size());
  const float rank_sum = 0.5f * size * (size - 1);
  size_t wrong = 0;
  for (size_t i = 0; i < host.size(); ++i)
    wrong += host[i] != size * static_cast<float>(i % 512) + rank_sum;
  EXPECT_EQ(wrong, 0u);
  std::vector<int32_t> words(777, rank == 0 ? 42 : -1);
  comm->broadcast(words.data(), words.size() * sizeof(int32_t), 0);
  EXPECT_EQ(std::count(words.begin(), words.end(), 42), 777);
}

// int64 sums (the exact reduction's limbs, ncclInt64), host-staged and on the device, near the
// int64 range: exact.
TEST(NcclComm, Int64SumsAreExact) {
  if (const std::string why = reason_to_skip(); !why.empty()) GTEST_SKIP() << why;
  const auto comm = make_comm("nccl");
  const int size = comm->size(), rank = comm->rank();
  const int64_t big = (int64_t{1} << 60) / size + 12345;
  std::vector<int64_t> host(300001);
  for (size_t i = 0; i < host.size(); ++i)
    host[i] = (i % 2 ? big : -big) + static_cast<int64_t>(i) * (rank + 1);
  std::vector<int64_t> copy = host;
  DeviceBuffer<int64_t> dev(copy.size());
  dev.copy_from_host(copy.data(), copy.size());
  comm->allreduce_sum(host.data(), host.size());
  comm->allreduce_sum(dev.data(), copy.size());
  dev.copy_to_host(copy.data(), copy.size());
  size_t wrong = 0;
  for (size_t i = 0; i < host.size(); ++i) {
    const int64_t want =
        (i % 2 ? big : -big) * size + static_cast<int64_t>(i) * size * (size + 1) / 2;
    wrong += (host[i] != want) + (copy[i] != want);
  }
  EXPECT_EQ(wrong, 0u);
}

// Holds up the stream it is enqueued on, from the host.
void CUDART_CB hold_300ms(void*) { std::this_thread::sleep_for(std::chrono::milliseconds(300)); }

// A buffer written on another stream, still held up when the collective is called: the
// collective must wait for that work (an event, not the caller's synchronisation). After it
// returns, the producer's work is done and the sum has the written values. The plain entry
// point orders after the legacy default stream the same way.
TEST(NcclComm, DeviceBuffersWaitForTheStreamThatWritesThem) {
  if (const std::string why = reason_to_skip(); !why.empty()) GTEST_SKIP() << why;
  const auto comm = make_nccl_comm();
  const int size = comm->size(), rank = comm->rank();
  const size_t n = 1 << 20;
  std::vector<float> host(n);
  for (size_t i = 0; i < n; ++i) host[i] = static_cast<float>(i % 100 + rank);
  DeviceBuffer<float> src(n), buf(n);
  src.copy_from_host(host.data(), n);
  std::vector<float> stale(n, -1.0f);
  cudaStream_t producer = nullptr;
  cudaEvent_t written = nullptr;
  MT_CUDA_CHECK(cudaStreamCreateWithFlags(&producer, cudaStreamNonBlocking));
  MT_CUDA_CHECK(cudaEventCreateWithFlags(&written, cudaEventDisableTiming));
  for (cudaStream_t stream : {producer, cudaStreamLegacy}) {
    buf.copy_from_host(stale.data(), n);
    MT_CUDA_CHECK(cudaLaunchHostFunc(stream, hold_300ms, nullptr));
    MT_CUDA_CHECK(cudaMemcpyAsync(buf.data(), src.data(), n * sizeof(float),
                                  cudaMemcpyDeviceToDevice, stream));
    MT_CUDA_CHECK(cudaEventRecord(written, stream));
    if (stream == producer)
      comm->allreduce_sum(buf.data(), n, producer);
    else
      comm->allreduce_sum(buf.data(), n);
    EXPECT_EQ(cudaEventQuery(written), cudaSuccess)
        << "the collective returned before the work that writes its buffer";
    std::vector<float> out(n);
    buf.copy_to_host(out.data(), n);
    const float rank_sum = 0.5f * size * (size - 1);
    size_t wrong = 0;
    for (size_t i = 0; i < n; ++i) wrong += out[i] != size * static_cast<float>(i % 100) + rank_sum;
    EXPECT_EQ(wrong, 0u) << (stream == producer ? "producer stream" : "legacy default stream");
  }
  MT_CUDA_CHECK(cudaEventDestroy(written));
  MT_CUDA_CHECK(cudaStreamDestroy(producer));
}

// Rank 0 enters an allreduce that rank 1 never joins: it must give up at the deadline, abort the
// communicator and throw an error naming the rank, the call and the wait; later collectives on
// the aborted communicator refuse at once. Rank 1's destructor then finalizes against an aborted
// peer: it must end too (finalize within the deadline, else abort).
TEST(NcclComm, ACollectiveAPeerNeverJoinsEndsAtTheDeadline) {
  if (const std::string why = reason_to_skip(); !why.empty()) GTEST_SKIP() << why;
  const auto comm = make_nccl_comm(NcclOptions{2.0});
  if (comm->size() < 2) GTEST_SKIP() << "needs two ranks";
  DeviceBuffer<float> buf(1024);
  if (comm->rank() == 0) {
    const auto t0 = std::chrono::steady_clock::now();
    try {
      comm->allreduce_sum(buf.data(), 1024);
      ADD_FAILURE() << "an allreduce that rank 1 never joined returned";
    } catch (const Error& e) {
      const double waited =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const std::string what = e.what();
      EXPECT_GE(waited, 2.0);
      EXPECT_LT(waited, 10.0);
      for (const char* part : {"rank 0 of ", "ncclAllReduce", "deadline of 2.0 s", "aborted"})
        EXPECT_NE(what.find(part), std::string::npos) << "no '" << part << "' in: " << what;
    }
    try {
      comm->broadcast(buf.data(), 16, 0);
      ADD_FAILURE() << "a collective on an aborted communicator ran";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("aborted after an earlier error"), std::string::npos)
          << e.what();
    }
  }
  comm->barrier();  // over MPI
}

}  // namespace
}  // namespace mt::dist
