// The CUDA implementation of core/exact_sum.h: one thread per θ index runs the MT_HD element
// body over the tasks in order; a refused element records min(j·2^20 + task) with atomicMin,
// read back (one small waited copy) after each accumulation.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>

#include "core/check.h"
#include "core/cuda_check.h"
#include "core/device_pool.h"
#include "core/exact_sum.h"

namespace mt {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 4096;
constexpr unsigned long long kNoFault = ~0ull;

template <typename T>
__global__ void exact_sum_tasks_kernel(const LayoutArgs l, const T* x, Fixed* acc,
                                       unsigned long long* fault) {
  const int64_t n = l.dim();
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < n;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int t = exact_sum_tasks_element(l, j, x, acc);
    if (t >= 0)
      atomicMin(fault, (static_cast<unsigned long long>(j) << 20) | static_cast<unsigned>(t));
  }
}

template <typename T>
class CudaExactSumOps final : public ExactSumOps<T> {
 public:
  explicit CudaExactSumOps(cudaStream_t stream) : stream_(stream), fault_(1) {}

  Buffer<Fixed> alloc(int64_t n) const override {
    MT_CHECK(n >= 0, "buffer of ", n, " elements");
    Fixed* p = nullptr;
    if (n > 0) {
      const cudaError_t e = cudaMalloc(reinterpret_cast<void**>(&p), bytes(n));
      if (e == cudaErrorMemoryAllocation)
        throw_device_out_of_memory("exact accumulators", bytes(n));
      MT_CUDA_CHECK(e);
    }
    return Buffer<Fixed>(p, n, Memory::kDevice, [](Fixed* q) {
      const cudaError_t e = cudaFree(q);
      if (e != cudaSuccess)
        std::fprintf(stderr, "mt::CudaExactSumOps: cudaFree failed: %s\n", cudaGetErrorString(e));
    });
  }
  void upload(int64_t n, const Fixed* host, Fixed* acc) const override {
    if (n > 0) MT_CUDA_CHECK(cudaMemcpyAsync(acc, host, bytes(n), cudaMemcpyHostToDevice, stream_));
  }
  void download(int64_t n, const Fixed* acc, Fixed* host) const override {
    if (n <= 0) return;
    MT_CUDA_CHECK(cudaMemcpyAsync(host, acc, bytes(n), cudaMemcpyDeviceToHost, stream_));
    MT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  FixedFault sum_tasks(const BatchedLayout& l, const T* x, Fixed* acc) const override {
    MT_CHECK(l.tasks() < (1 << 20), "an exact sum of ", l.tasks(), " tasks in one batch");
    const int64_t d = l.dim();
    if (d == 0) return {};
    MT_CUDA_CHECK(cudaMemsetAsync(fault_.data(), 0xff, sizeof(unsigned long long), stream_));
    const int blocks =
        static_cast<int>(std::min<int64_t>((d + kThreads - 1) / kThreads, kMaxBlocks));
    exact_sum_tasks_kernel<<<blocks, kThreads, 0, stream_>>>(make_layout_args(l), x, acc,
                                                             fault_.data());
    MT_CUDA_CHECK_LAUNCH();
    unsigned long long fault = kNoFault;
    MT_CUDA_CHECK(
        cudaMemcpyAsync(&fault, fault_.data(), sizeof fault, cudaMemcpyDeviceToHost, stream_));
    MT_CUDA_CHECK(cudaStreamSynchronize(stream_));
    if (fault == kNoFault) return {};
    FixedFault f;
    f.index = static_cast<int64_t>(fault >> 20);
    f.task = static_cast<int>(fault & ((1u << 20) - 1));
    T value{};
    MT_CUDA_CHECK(
        cudaMemcpy(&value, x + l.index(f.task, f.index), sizeof(T), cudaMemcpyDeviceToHost));
    f.value = static_cast<double>(value);
    return f;
  }

 private:
  static size_t bytes(int64_t n) { return static_cast<size_t>(n) * sizeof(Fixed); }
  cudaStream_t stream_;
  mutable DeviceBuffer<unsigned long long> fault_;
};

}  // namespace

template <typename T>
std::unique_ptr<ExactSumOps<T>> make_cuda_exact_sum_ops(CUstream_st* stream) {
  return std::make_unique<CudaExactSumOps<T>>(stream);
}

template std::unique_ptr<ExactSumOps<float>> make_cuda_exact_sum_ops<float>(CUstream_st*);
template std::unique_ptr<ExactSumOps<double>> make_cuda_exact_sum_ops<double>(CUstream_st*);

}  // namespace mt
