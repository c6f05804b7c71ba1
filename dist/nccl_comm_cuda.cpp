// The NCCL backend of dist::Comm (dist/nccl_comm.h): NcclCommImpl runs sum-allreduce and
// broadcast on device buffers over a non-blocking NCCL communicator whose every wait has a
// deadline (dist/deadline.h), and everything else (bootstrap, barrier, max-allreduce of host
// flags) over an MpiComm it owns. NCCL results are checked by fail() rather than a throwing
// macro: every NCCL failure must abort the communicator before it throws (with file:line).
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "core/check.h"
#include "core/cuda_check.h"
#include "core/device.h"
#include "dist/deadline.h"
#include "dist/mpi_comm.h"
#include "dist/nccl_comm.h"

namespace mt::dist {

namespace {

// NCCL's name for r, followed by its last error message when it has one (which may come from
// an earlier asynchronous operation).
std::string nccl_message(ncclResult_t r, ncclComm_t comm = nullptr) {
  const char* last = ncclGetLastError(comm);
  if (last == nullptr || *last == '\0') return ncclGetErrorString(r);
  return detail::concat(ncclGetErrorString(r), ": ", last);
}

class NcclCommImpl : public NcclComm {
 public:
  explicit NcclCommImpl(const NcclOptions& options);
  ~NcclCommImpl() override { release(); }
  NcclCommImpl(const NcclCommImpl&) = delete;
  NcclCommImpl& operator=(const NcclCommImpl&) = delete;

  std::string backend() const override { return "nccl"; }
  int rank() const override { return mpi_->rank(); }
  int size() const override { return mpi_->size(); }
  int local_rank() const override { return mpi_->local_rank(); }
  std::string host(int r) const override { return mpi_->host(r); }
  void allreduce_sum(float* buf, size_t n) override { allreduce(buf, n, ncclFloat, nullptr); }
  void allreduce_sum(double* buf, size_t n) override { allreduce(buf, n, ncclDouble, nullptr); }
  void allreduce_sum(int64_t* buf, size_t n) override { allreduce(buf, n, ncclInt64, nullptr); }
  void allreduce_sum(float* buf, size_t n, CUstream_st* producer) override {
    allreduce(buf, n, ncclFloat, producer);
  }
  void allreduce_sum(double* buf, size_t n, CUstream_st* producer) override {
    allreduce(buf, n, ncclDouble, producer);
  }
  void allreduce_sum(int64_t* buf, size_t n, CUstream_st* producer) override {
    allreduce(buf, n, ncclInt64, producer);
  }
  // Host buffers, over MPI (dist/comm.h).
  void allreduce_max(int64_t* buf, size_t n) override { mpi_->allreduce_max(buf, n); }
  void broadcast(void* buf, size_t bytes, int root) override {
    broadcast(buf, bytes, root, nullptr);
  }
  void broadcast(void* buf, size_t bytes, int root, CUstream_st* producer) override;
  void barrier() override { mpi_->barrier(); }
  [[noreturn]] void abort(int exit_code) override;
  // The deadline policy applies to the MPI side too.
  void set_timeout(double timeout_s) override {
    NcclComm::set_timeout(timeout_s);
    mpi_->set_timeout(timeout_s);
  }
  void set_context(std::string context) override {
    mpi_->set_context(context);
    NcclComm::set_context(std::move(context));
  }
  void end_startup() override {
    NcclComm::end_startup();
    mpi_->end_startup();
  }

 private:
  void allreduce(void* buf, size_t n, ncclDataType_t type, cudaStream_t producer);
  // One collective on buf (bytes long): orders it after producer (device memory) or stages buf
  // through staging_ (host memory), enqueues it with enqueue(device pointer) on stream_, waits
  // for it, and copies a staged result back.
  template <typename Enqueue>
  void collective(const std::string& call, void* buf, size_t bytes, cudaStream_t producer,
                  const Enqueue& enqueue);
  // "rank r of N: NCCL <call>": how messages name an operation.
  std::string what(const std::string& call) const;
  // Polls until the communicator has left ncclInProgress (and, with_stream, until stream_ is
  // idle), for at most `deadline` seconds; on an error or the deadline, fail().
  void wait(const std::string& call, bool with_stream, double deadline, const char* file, int line);
  Poll poll(bool with_stream) const;
  // ncclCommAbort, then throws mt::Error with file:line and message.
  [[noreturn]] void fail(const std::string& message, const char* file, int line);
  // ncclCommAbort of a live communicator; afterwards comm_ is null and aborted_ is set.
  void abort_comm() noexcept;
  // Ends a healthy communicator: ncclCommFinalize polled within the deadline, then
  // ncclCommDestroy; abort when finalize fails or passes the deadline. Logs, never throws.
  void finalize() noexcept;
  void release() noexcept;

  NcclOptions options_;
  std::unique_ptr<MpiComm> mpi_;
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t produced_ = nullptr;  // recorded on the producer stream, waited on by stream_
  ncclComm_t comm_ = nullptr;
  bool aborted_ = false;
  std::string abort_reason_;
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

const char* type_name(ncclDataType_t type) {
  switch (type) {
    case ncclFloat:
      return "float";
    case ncclDouble:
      return "double";
    case ncclInt64:
      return "int64";
    default:
      return "?";
  }
}

size_t type_size(ncclDataType_t type) {
  return type == ncclFloat ? sizeof(float) : sizeof(double);  // double or int64
}

// "2.28.9" from an NCCL_VERSION code (major·1000 + minor·100 + patch before 2.9, then
// major·10000 + minor·100 + patch).
std::string version_name(int code) {
  const int major = code >= 10000 ? code / 10000 : code / 1000;
  const int minor = code >= 10000 ? code / 100 % 100 : code / 100 % 10;
  return detail::concat(major, ".", minor, ".", code % 100);
}

NcclCommImpl::NcclCommImpl(const NcclOptions& options) : options_(options) {
  MT_REQUIRE(options_.timeout_s > 0 && options_.timeout_s < 1e9,
             "the nccl communicator's timeout must be a positive number of seconds, got ",
             options_.timeout_s);
  const int gpus = gpu_count();
  MT_REQUIRE(gpus > 0, "device=cuda needs a GPU for the nccl communicator, but none is usable (",
             describe_devices(), "): run on a node with a GPU, or use the mpi backend");
  mpi_ = std::make_unique<MpiComm>();
  set_timeout(options_.timeout_s);
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
    MT_CUDA_CHECK(cudaEventCreateWithFlags(&produced_, cudaEventDisableTiming));
    // Non-blocking: the call returns ncclInProgress at once and the init goes on in NCCL's
    // threads, so a rank that never joins costs the deadline, not the job.
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    const std::string call = "ncclCommInitRankConfig";
    const ncclResult_t r = ncclCommInitRankConfig(&comm_, size(), id, rank(), &config);
    if (r != ncclSuccess && r != ncclInProgress)
      fail(detail::concat(what(call), " failed: ", nccl_message(r, comm_)), __FILE__, __LINE__);
    wait(call, false, options_.timeout_s, __FILE__, __LINE__);
  } catch (...) {
    release();
    throw;
  }
}

void NcclCommImpl::release() noexcept {
  if (comm_ != nullptr) finalize();
  if (produced_ != nullptr) {
    const cudaError_t e = cudaEventDestroy(produced_);
    if (e != cudaSuccess)
      std::fprintf(stderr, "mt::dist::NcclComm: cudaEventDestroy failed: %s\n",
                   cudaGetErrorString(e));
    produced_ = nullptr;
  }
  if (stream_ != nullptr) {
    const cudaError_t e = cudaStreamDestroy(stream_);
    if (e != cudaSuccess)
      std::fprintf(stderr, "mt::dist::NcclComm: cudaStreamDestroy failed: %s\n",
                   cudaGetErrorString(e));
    stream_ = nullptr;
  }
}

void NcclCommImpl::finalize() noexcept {
  const std::string call = "ncclCommFinalize";
  try {
    cudaSetDevice(device_);
    ncclResult_t async = ncclSuccess;
    ncclResult_t r = ncclCommGetAsyncError(comm_, &async);
    if (r == ncclSuccess && async != ncclSuccess) r = async;  // an error nobody waited for
    if (r == ncclSuccess) r = ncclCommFinalize(comm_);
    if (r != ncclSuccess && r != ncclInProgress) {
      std::fprintf(stderr, "mt::dist::NcclComm: %s: %s; aborting the communicator\n",
                   what(call).c_str(), nccl_message(r, comm_).c_str());
      abort_comm();
      return;
    }
    const WaitResult w =
        wait_until_done([this] { return poll(false); }, options_.timeout_s, what(call));
    if (!w.ok()) {
      std::fprintf(stderr, "mt::dist::NcclComm: %s; aborting the communicator\n",
                   w.message.c_str());
      abort_comm();
      return;
    }
    r = ncclCommDestroy(comm_);
    if (r != ncclSuccess)
      std::fprintf(stderr, "mt::dist::NcclComm: ncclCommDestroy failed: %s\n",
                   ncclGetErrorString(r));
    comm_ = nullptr;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mt::dist::NcclComm: %s: %s; aborting the communicator\n",
                 what(call).c_str(), e.what());
    abort_comm();
  }
}

void NcclCommImpl::abort_comm() noexcept {
  if (comm_ != nullptr) {
    const ncclResult_t r = ncclCommAbort(comm_);
    if (r != ncclSuccess)
      std::fprintf(stderr, "mt::dist::NcclComm: ncclCommAbort failed: %s\n", ncclGetErrorString(r));
  }
  comm_ = nullptr;
  aborted_ = true;
}

std::string NcclCommImpl::what(const std::string& call) const {
  return detail::concat("rank ", rank(), " of ", size(), " (host ", mpi_->host(rank()), "): NCCL ",
                        call, " during ", context());
}

void NcclCommImpl::fail(const std::string& message, const char* file, int line) {
  abort_comm();
  abort_reason_ = message;
  throw Error(ExitCode::kRuntime,
              detail::concat(file, ":", line, ": ", message,
                             "; the NCCL communicator was aborted (a peer rank may have failed, "
                             "stalled, or fallen behind by more than the deadline)"));
}

Poll NcclCommImpl::poll(bool with_stream) const {
  ncclResult_t async = ncclSuccess;
  const ncclResult_t r = ncclCommGetAsyncError(comm_, &async);
  if (r != ncclSuccess) return Poll::failed("ncclCommGetAsyncError: " + nccl_message(r, comm_));
  if (async == ncclInProgress) return Poll::pending();
  if (async != ncclSuccess) return Poll::failed(nccl_message(async, comm_));
  if (!with_stream) return Poll::done();
  const cudaError_t e = cudaStreamQuery(stream_);
  if (e == cudaSuccess) return Poll::done();
  if (e == cudaErrorNotReady) return Poll::pending();
  return Poll::failed("cudaStreamQuery: " + detail::cuda_message(e));
}

void NcclCommImpl::wait(const std::string& call, bool with_stream, double deadline,
                        const char* file, int line) {
  const WaitResult w = wait_until_done([&] { return poll(with_stream); }, deadline, what(call));
  if (!w.ok()) fail(w.message, file, line);
}

template <typename Enqueue>
void NcclCommImpl::collective(const std::string& call, void* buf, size_t bytes,
                              cudaStream_t producer, const Enqueue& enqueue) {
  if (aborted_)
    throw Error(
        ExitCode::kRuntime,
        detail::concat(what(call), ": the communicator was aborted after an earlier error (",
                       abort_reason_, ")"));
  MT_CUDA_CHECK(cudaSetDevice(device_));
  void* dev = buf;
  if (is_device_memory(buf)) {
    MT_CUDA_CHECK(cudaEventRecord(produced_, producer != nullptr ? producer : cudaStreamLegacy));
    MT_CUDA_CHECK(cudaStreamWaitEvent(stream_, produced_, 0));
  } else {
    if (staging_.size() < bytes) staging_ = DeviceBuffer<char>(bytes);
    dev = staging_.data();
    MT_CUDA_CHECK(cudaMemcpyAsync(dev, buf, bytes, cudaMemcpyHostToDevice, stream_));
  }
  // A non-blocking communicator may answer ncclInProgress while it still enqueues: wait()
  // polls the communicator before the stream.
  const ncclResult_t r = enqueue(dev);
  if (r != ncclSuccess && r != ncclInProgress)
    fail(detail::concat(what(call), " failed: ", nccl_message(r, comm_)), __FILE__, __LINE__);
  wait(call, true, deadline_s(), __FILE__, __LINE__);
  if (dev == buf) return;
  MT_CUDA_CHECK(cudaMemcpyAsync(buf, dev, bytes, cudaMemcpyDeviceToHost, stream_));
  wait(call + " (copy of the result to the host)", true, deadline_s(), __FILE__, __LINE__);
}

void NcclCommImpl::allreduce(void* buf, size_t n, ncclDataType_t type, cudaStream_t producer) {
  if (n == 0) return;
  collective(detail::concat("ncclAllReduce (sum of ", n, " ", type_name(type), ")"), buf,
             n * type_size(type), producer,
             [&](void* dev) { return ncclAllReduce(dev, dev, n, type, ncclSum, comm_, stream_); });
}

void NcclCommImpl::broadcast(void* buf, size_t bytes, int root, CUstream_st* producer) {
  MT_CHECK(root >= 0 && root < size(), "broadcast root ", root, " with ", size(), " ranks");
  if (bytes == 0) return;
  collective(detail::concat("ncclBroadcast (", bytes, " bytes from rank ", root, ")"), buf, bytes,
             producer, [&](void* dev) {
               return ncclBroadcast(dev, dev, bytes, ncclUint8, root, comm_, stream_);
             });
}

void NcclCommImpl::abort(int exit_code) {
  abort_comm();
  mpi_->abort(exit_code);
  std::_Exit(exit_code);  // not reached: a virtual call is not known to be [[noreturn]]
}

}  // namespace

std::unique_ptr<NcclComm> make_nccl_comm(const NcclOptions& options) {
  return std::make_unique<NcclCommImpl>(options);
}

std::string nccl_version() {
  int code = 0;
  const ncclResult_t r = ncclGetVersion(&code);
  if (r != ncclSuccess)
    return detail::concat("unknown (ncclGetVersion: ", ncclGetErrorString(r), ")");
  std::string name = version_name(code);
  if (code != NCCL_VERSION_CODE)
    name += detail::concat(" (built against ", version_name(NCCL_VERSION_CODE), ")");
  return name;
}

}  // namespace mt::dist
