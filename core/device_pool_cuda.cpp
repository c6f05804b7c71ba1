// DevicePool of the CUDA build (core/device_pool.h): one cudaMalloc at construction, slices by
// PoolArithmetic, one cudaFree at destruction. Out-of-memory errors carry the device's
// free/total bytes and the configuration change that helps.
#include <cuda_runtime.h>

#include <cstdio>

#include "core/cuda_check.h"
#include "core/device_pool.h"

namespace mt {

namespace {
[[noreturn]] void throw_exhausted(const std::string& what, size_t asked, size_t used,
                                  size_t capacity) {
  size_t device_free = 0, device_total = 0;
  MT_CUDA_CHECK(cudaMemGetInfo(&device_free, &device_total));
  throw Error(ExitCode::kRuntime,
              pool_exhausted_message(what, asked, used, capacity, device_free, device_total));
}
}  // namespace

void throw_device_out_of_memory(const std::string& what, size_t asked) {
  cudaGetLastError();  // the failed allocation is not sticky: clear it
  size_t device_free = 0, device_total = 0;
  MT_CUDA_CHECK(cudaMemGetInfo(&device_free, &device_total));
  throw Error(ExitCode::kRuntime,
              detail::concat("device memory: ", what, " of ", asked, " bytes does not fit (",
                             device_free, " bytes free of ", device_total,
                             "): lower meta_batch per rank (or inner.trajectory=recompute)"));
}

DevicePool::DevicePool(size_t capacity_bytes) : arithmetic_(capacity_bytes) {
  if (capacity_bytes == 0) return;
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, capacity_bytes);
  if (e == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // not sticky: clear it so the next checked call does not report it
    throw_exhausted("the start-up allocation", capacity_bytes, 0, capacity_bytes);
  }
  MT_CUDA_CHECK(e);
  base_ = static_cast<char*>(p);
}

DevicePool::~DevicePool() {
  if (!base_) return;
  const cudaError_t e = cudaFree(base_);
  if (e != cudaSuccess)
    std::fprintf(stderr, "mt::DevicePool: cudaFree failed: %s (%s)\n", cudaGetErrorName(e),
                 cudaGetErrorString(e));
}

void* DevicePool::allocate(size_t bytes) {
  const std::optional<size_t> offset = arithmetic_.take(bytes);
  if (!offset) throw_exhausted("a slice", bytes, used(), capacity());
  return base_ + *offset;
}

}  // namespace mt
