// The NCCL backend of dist::Comm (dist/nccl_comm.h): NcclComm runs sum-allreduce and broadcast
// on device buffers with NCCL, and everything else (bootstrap, barrier, max-allreduce of host
// flags) over an MpiComm it owns. MT_NCCL_CHECK is the check macro for NCCL calls.
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

#include "core/check.h"
#include "core/cuda_check.h"
#include "core/device.h"
#include "dist/mpi_comm.h"
#include "dist/nccl_comm.h"

namespace mt::detail {
inline std::string nccl_message(ncclResult_t r) {
  const char* last = ncclGetLastError(nullptr);
  if (last == nullptr || *last == '\0') return ncclGetErrorString(r);
  return concat(ncclGetErrorString(r), ": ", last);
}
}  // namespace mt::detail

#define MT_NCCL_CHECK(expr)                                                  \
  do {                                                                       \
    const ncclResult_t mt_status_ = (expr);                                  \
    if (mt_status_ != ncclSuccess)                                           \
      ::mt::detail::throw_gpu_error("NCCL", #expr, __FILE__, __LINE__,       \
                                    ::mt::detail::nccl_message(mt_status_)); \
  } while (0)

namespace mt::dist {

namespace {

class NcclComm : public Comm {
 public:
  NcclComm();
  ~NcclComm() override;
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  std::string backend() const override { return "nccl"; }
  int rank() const override { return mpi_->rank(); }
  int size() const override { return mpi_->size(); }
  int local_rank() const override { return mpi_->local_rank(); }
  void allreduce_sum(float* buf, size_t n) override { allreduce(buf, n, ncclFloat); }
  void allreduce_sum(double* buf, size_t n) override { allreduce(buf, n, ncclDouble); }
  void allreduce_sum(int64_t* buf, size_t n) override { allreduce(buf, n, ncclInt64); }
  // Host buffers, over MPI (dist/comm.h).
  void allreduce_max(int64_t* buf, size_t n) override { mpi_->allreduce_max(buf, n); }
  void broadcast(void* buf, size_t bytes, int root) override;
  void barrier() override { mpi_->barrier(); }
  [[noreturn]] void abort(int exit_code) override;

 private:
  void allreduce(void* buf, size_t n, ncclDataType_t type);
  // Waits for the stream, throwing if NCCL reports an asynchronous error (a peer failed) instead
  // of waiting forever.
  void wait();
  void release() noexcept;
  // Host buffers go through staging_ (device memory): staged() returns the pointer NCCL uses,
  // unstage() copies the result back to the host buffer and waits.
  void* staged(void* buf, size_t bytes);
  void unstage(void* buf, const void* dev, size_t bytes);

  std::unique_ptr<MpiComm> mpi_;
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  ncclComm_t comm_ = nullptr;
  DeviceBuffer<char> staging_;
};

// Whether NCCL can read p directly (device or managed memory), or it must be staged.
bool is_device_memory(const void* p) {
  cudaPointerAttributes attributes{};
  const cudaError_t e = cudaPointerGetAttributes(&attributes, p);
  if (e != cudaSuccess) cudaGetLastError();
  return e == cudaSuccess &&
         (attributes.type == cudaMemoryTypeDevice || attributes.type == cudaMemoryTypeManaged);
}

NcclComm::NcclComm() {
  const int gpus = gpu_count();
  MT_REQUIRE(gpus > 0, "device=cuda needs a GPU for the nccl communicator, but none is usable (",
             describe_devices(), "): run on a node with a GPU, or use the mpi backend");
  mpi_ = std::make_unique<MpiComm>();
  // Every rank learns whether some node runs more ranks than it has GPUs, so all refuse together.
  int64_t crowded = mpi_->local_rank() >= gpus ? 1 : 0;
  mpi_->allreduce_max(&crowded, 1);
  MT_REQUIRE(crowded == 0,
             "the nccl communicator needs one GPU per rank, but a node runs more "
             "ranks than it has GPUs (this node: ",
             gpus, " GPUs visible)");
  device_ = mpi_->local_rank() % gpus;
  MT_CUDA_CHECK(cudaSetDevice(device_));

  ncclUniqueId id{};
  int status = ncclSuccess;
  if (mpi_->rank() == 0) status = ncclGetUniqueId(&id);
  mpi_->broadcast(&status, sizeof status, 0);
  if (status != ncclSuccess)
    detail::throw_gpu_error("NCCL", "ncclGetUniqueId (on rank 0)", __FILE__, __LINE__,
                            ncclGetErrorString(static_cast<ncclResult_t>(status)));
  mpi_->broadcast(&id, sizeof id, 0);
  try {
    MT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    MT_NCCL_CHECK(ncclCommInitRank(&comm_, mpi_->size(), id, mpi_->rank()));
  } catch (...) {
    release();
    throw;
  }
}

NcclComm::~NcclComm() { release(); }

void NcclComm::release() noexcept {
  if (comm_ != nullptr) {
    const ncclResult_t r = ncclCommDestroy(comm_);
    if (r != ncclSuccess)
      std::fprintf(stderr, "mt::dist::NcclComm: ncclCommDestroy failed: %s\n",
                   ncclGetErrorString(r));
    comm_ = nullptr;
  }
  if (stream_ != nullptr) {
    const cudaError_t e = cudaStreamDestroy(stream_);
    if (e != cudaSuccess)
      std::fprintf(stderr, "mt::dist::NcclComm: cudaStreamDestroy failed: %s\n",
                   cudaGetErrorString(e));
    stream_ = nullptr;
  }
}

void* NcclComm::staged(void* buf, size_t bytes) {
  if (is_device_memory(buf)) return buf;
  if (staging_.size() < bytes) staging_ = DeviceBuffer<char>(bytes);
  MT_CUDA_CHECK(cudaMemcpyAsync(staging_.data(), buf, bytes, cudaMemcpyHostToDevice, stream_));
  return staging_.data();
}

void NcclComm::unstage(void* buf, const void* dev, size_t bytes) {
  if (dev == buf) return;
  MT_CUDA_CHECK(cudaMemcpyAsync(buf, dev, bytes, cudaMemcpyDeviceToHost, stream_));
  MT_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void NcclComm::allreduce(void* buf, size_t n, ncclDataType_t type) {
  if (n == 0) return;
  MT_CUDA_CHECK(cudaSetDevice(device_));
  const size_t bytes = n * (type == ncclFloat ? sizeof(float) : sizeof(double));  // or int64
  void* dev = staged(buf, bytes);
  MT_NCCL_CHECK(ncclAllReduce(dev, dev, n, type, ncclSum, comm_, stream_));
  wait();
  unstage(buf, dev, bytes);
}

void NcclComm::broadcast(void* buf, size_t bytes, int root) {
  MT_CHECK(root >= 0 && root < size(), "broadcast root ", root, " with ", size(), " ranks");
  if (bytes == 0) return;
  MT_CUDA_CHECK(cudaSetDevice(device_));
  void* dev = staged(buf, bytes);
  MT_NCCL_CHECK(ncclBroadcast(dev, dev, bytes, ncclUint8, root, comm_, stream_));
  wait();
  unstage(buf, dev, bytes);
}

void NcclComm::wait() {
  for (;;) {
    const cudaError_t e = cudaStreamQuery(stream_);
    if (e == cudaSuccess) return;
    if (e != cudaErrorNotReady) MT_CUDA_CHECK(e);
    ncclResult_t async = ncclSuccess;
    MT_NCCL_CHECK(ncclCommGetAsyncError(comm_, &async));
    if (async != ncclSuccess)
      detail::throw_gpu_error("NCCL", "collective on the stream (asynchronous error)", __FILE__,
                              __LINE__, detail::nccl_message(async));
    std::this_thread::yield();
  }
}

void NcclComm::abort(int exit_code) {
  if (comm_ != nullptr) ncclCommAbort(comm_);
  comm_ = nullptr;
  mpi_->abort(exit_code);
  std::_Exit(exit_code);  // not reached: a virtual call is not known to be [[noreturn]]
}

}  // namespace

std::unique_ptr<Comm> make_nccl_comm() { return std::make_unique<NcclComm>(); }

}  // namespace mt::dist
