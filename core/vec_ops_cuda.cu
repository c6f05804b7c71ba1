// CUDA kernels and VecOps implementation of core/vec_ops_cuda.h: grid-stride loops over the
// MT_HD bodies of core/vec_ops_kernels.h, one block per task for the squared norms, every launch
// checked. Arguments travel by value, so everything but download and the norms is capturable.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "core/cuda_check.h"
#include "core/device_pool.h"
#include "core/vec_ops_cuda.h"
#include "core/vec_ops_kernels.h"

namespace mt {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 4096;

int blocks_for(int64_t n) {
  return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks));
}

// Calls body(i) for i in [0, n), one grid-stride loop per launch.
#define MT_GRID_STRIDE(i, n)                                                             \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

template <typename T>
__global__ void fill_kernel(int64_t n, T value, T* x) {
  MT_GRID_STRIDE(i, n) fill_element(i, value, x);
}
template <typename T>
__global__ void axpy_kernel(int64_t n, T a, const T* x, T* y) {
  MT_GRID_STRIDE(i, n) axpy_element(i, a, x, y);
}
template <typename T>
__global__ void combine_kernel(int64_t n, T a, const T* x, T b, const T* y, T* z) {
  MT_GRID_STRIDE(i, n) combine_element(i, a, x, b, y, z);
}
template <typename T>
__global__ void sub_kernel(int64_t n, const T* x, const T* y, T* z) {
  MT_GRID_STRIDE(i, n) sub_element(i, x, y, z);
}
template <typename T>
__global__ void clamp_kernel(int64_t n, T c, T* x) {
  MT_GRID_STRIDE(i, n) clamp_element(i, c, x);
}
template <typename T>
__global__ void broadcast_kernel(const LayoutArgs l, const T* theta, T* x) {
  const int64_t n = l.tasks * l.dim();
  MT_GRID_STRIDE(q, n) broadcast_element(l, q, theta, x);
}
template <typename T>
__global__ void sum_tasks_kernel(const LayoutArgs l, const T* x, T* s) {
  const int64_t n = l.dim();
  MT_GRID_STRIDE(j, n) sum_tasks_element(l, j, x, s);
}
template <typename T>
__global__ void gather_kernel(const LayoutArgs full, const TaskList tasks, const T* x, T* y) {
  const int64_t n = tasks.count * full.dim();
  MT_GRID_STRIDE(q, n) gather_element(full, tasks, q, x, y);
}
template <typename T>
__global__ void scatter_kernel(const LayoutArgs full, const TaskList tasks, const T* x, T* y) {
  const int64_t n = tasks.count * full.dim();
  MT_GRID_STRIDE(q, n) scatter_element(full, tasks, q, x, y);
}
template <typename T>
__global__ void mul_kernel(int64_t n, const T* x, const T* y, T* z) {
  MT_GRID_STRIDE(i, n) mul_element(i, x, y, z);
}
template <typename T>
__global__ void mul_add_kernel(int64_t n, T a, const T* x, const T* y, T* z) {
  MT_GRID_STRIDE(i, n) mul_add_element(i, a, x, y, z);
}
template <typename T>
__global__ void task_axpy_kernel(const LayoutArgs l, const double* a, const T* x, T* y) {
  const int64_t n = l.dim() * l.tasks;
  MT_GRID_STRIDE(q, n) task_axpy_element(l, q, a, x, y);
}
// Block t writes out[t]; launched with kReduceThreads threads (the decomposition the host twin
// host_task_sum repeats).
template <typename T>
__global__ void task_sum_kernel(const LayoutArgs l, const T* x, const T* y, TaskSum sum,
                                double* out) {
  __shared__ double partials[kReduceThreads];
  const int t = blockIdx.x, lane = threadIdx.x;
  partials[lane] = task_sum_partial(l, x, y, sum, t, lane, kReduceThreads);
  __syncthreads();
  for (int half = kReduceThreads / 2; half > 0; half /= 2) {
    tree_reduce_step(partials, lane, half);
    __syncthreads();
  }
  if (lane == 0) out[t] = partials[0];
}

#undef MT_GRID_STRIDE

template <typename T>
class CudaVecOps final : public VecOps<T> {
 public:
  CudaVecOps(cudaStream_t stream, DevicePool* pool) : stream_(stream), pool_(pool) {}

  Memory memory() const override { return Memory::kDevice; }
  CUstream_st* stream() const override { return stream_; }
  Buffer<T> alloc(int64_t n) const override {
    MT_CHECK(n >= 0, "buffer of ", n, " elements");
    if (pool_) return Buffer<T>(pool_->allocate_array<T>(n), n, Memory::kDevice, [](T*) {});
    T* p = nullptr;
    if (n > 0) {
      const cudaError_t e = cudaMalloc(reinterpret_cast<void**>(&p), bytes(n));
      if (e == cudaErrorMemoryAllocation) throw_device_out_of_memory("a vector buffer", bytes(n));
      MT_CUDA_CHECK(e);
    }
    return Buffer<T>(p, n, Memory::kDevice, [](T* q) {
      const cudaError_t e = cudaFree(q);
      if (e != cudaSuccess)
        std::fprintf(stderr, "mt::CudaVecOps: cudaFree failed: %s (%s)\n", cudaGetErrorName(e),
                     cudaGetErrorString(e));
    });
  }
  void upload(int64_t n, const T* host, T* x) const override {
    if (n > 0) MT_CUDA_CHECK(cudaMemcpyAsync(x, host, bytes(n), cudaMemcpyHostToDevice, stream_));
  }
  void download(int64_t n, const T* x, T* host) const override {
    if (n <= 0) return;
    MT_CUDA_CHECK(cudaMemcpyAsync(host, x, bytes(n), cudaMemcpyDeviceToHost, stream_));
    MT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void fill(int64_t n, T value, T* x) const override {
    if (n <= 0) return;
    fill_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(n, value, x);
    MT_CUDA_CHECK_LAUNCH();
  }
  void copy(int64_t n, const T* x, T* y) const override {
    if (n > 0 && x != y)
      MT_CUDA_CHECK(cudaMemcpyAsync(y, x, bytes(n), cudaMemcpyDeviceToDevice, stream_));
  }
  void axpy(int64_t n, T a, const T* x, T* y) const override {
    if (n <= 0) return;
    axpy_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(n, a, x, y);
    MT_CUDA_CHECK_LAUNCH();
  }
  void combine(int64_t n, T a, const T* x, T b, const T* y, T* z) const override {
    if (n <= 0) return;
    combine_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(n, a, x, b, y, z);
    MT_CUDA_CHECK_LAUNCH();
  }
  void sub(int64_t n, const T* x, const T* y, T* z) const override {
    if (n <= 0) return;
    sub_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(n, x, y, z);
    MT_CUDA_CHECK_LAUNCH();
  }
  void clamp(int64_t n, T c, T* x) const override {
    if (n <= 0) return;
    clamp_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(n, c, x);
    MT_CUDA_CHECK_LAUNCH();
  }

  void mul(int64_t n, const T* x, const T* y, T* z) const override {
    if (n <= 0) return;
    mul_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(n, x, y, z);
    MT_CUDA_CHECK_LAUNCH();
  }
  void mul_add(int64_t n, T a, const T* x, const T* y, T* z) const override {
    if (n <= 0) return;
    mul_add_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(n, a, x, y, z);
    MT_CUDA_CHECK_LAUNCH();
  }

  void broadcast(const BatchedLayout& l, const T* theta, T* x) const override {
    if (l.total() == 0) return;
    broadcast_kernel<<<blocks_for(l.total()), kThreads, 0, stream_>>>(make_layout_args(l), theta,
                                                                      x);
    MT_CUDA_CHECK_LAUNCH();
  }
  void sum_tasks(const BatchedLayout& l, const T* x, T* s) const override {
    if (l.dim() == 0) return;
    sum_tasks_kernel<<<blocks_for(l.dim()), kThreads, 0, stream_>>>(make_layout_args(l), x, s);
    MT_CUDA_CHECK_LAUNCH();
  }
  void gather(const BatchedLayout& from, const T* x, const std::vector<int>& tasks,
              T* y) const override {
    const TaskList list = make_task_list(tasks, from.tasks());
    const int64_t n = from.with_tasks(list.count).total();  // checks count ≥ 1, as the host
    if (n == 0) return;
    gather_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(make_layout_args(from), list, x, y);
    MT_CUDA_CHECK_LAUNCH();
  }
  void scatter(const BatchedLayout& to, const T* x, const std::vector<int>& tasks,
               T* y) const override {
    const TaskList list = make_task_list(tasks, to.tasks());
    std::vector<bool> seen(static_cast<size_t>(to.tasks()), false);
    for (int t : tasks) {
      MT_CHECK(!seen[static_cast<size_t>(t)], "task ", t,
               " repeated in a scatter (the device writes would race)");
      seen[static_cast<size_t>(t)] = true;
    }
    const int64_t n = to.with_tasks(list.count).total();
    if (n == 0) return;
    scatter_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(make_layout_args(to), list, x, y);
    MT_CUDA_CHECK_LAUNCH();
  }
  void task_sq_norms(const BatchedLayout& l, const T* x, double* out) const override {
    task_sum(l, x, nullptr, TaskSum::kSquares, out);
  }
  void task_sq_dists(const BatchedLayout& l, const T* x, const T* y, double* out) const override {
    task_sum(l, x, y, TaskSum::kSquaredDistances, out);
  }
  void task_dots(const BatchedLayout& l, const T* x, const T* y, double* out) const override {
    task_sum(l, x, y, TaskSum::kDots, out);
  }
  void task_axpy(const BatchedLayout& l, const double* a, const T* x, T* y) const override {
    if (l.total() == 0) return;
    grow_scratch(l.tasks());
    MT_CUDA_CHECK(cudaMemcpyAsync(scratch_.data(), a,
                                  static_cast<size_t>(l.tasks()) * sizeof(double),
                                  cudaMemcpyHostToDevice, stream_));
    task_axpy_kernel<<<blocks_for(l.total()), kThreads, 0, stream_>>>(make_layout_args(l),
                                                                      scratch_.data(), x, y);
    MT_CUDA_CHECK_LAUNCH();
    // a is the caller's host memory: the copy must be done before the call returns.
    MT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

 private:
  static size_t bytes(int64_t n) { return static_cast<size_t>(n) * sizeof(T); }
  void grow_scratch(int tasks) const {
    if (scratch_.size() < static_cast<size_t>(tasks))
      scratch_ = DeviceBuffer<double>(static_cast<size_t>(tasks));  // grows once, then reused
  }

  // One block per task into the device scratch, then a waited copy to the host.
  void task_sum(const BatchedLayout& l, const T* x, const T* y, TaskSum sum, double* out) const {
    const int tasks = l.tasks();
    grow_scratch(tasks);
    task_sum_kernel<<<tasks, kReduceThreads, 0, stream_>>>(make_layout_args(l), x, y, sum,
                                                           scratch_.data());
    MT_CUDA_CHECK_LAUNCH();
    MT_CUDA_CHECK(cudaMemcpyAsync(out, scratch_.data(), static_cast<size_t>(tasks) * sizeof(double),
                                  cudaMemcpyDeviceToHost, stream_));
    MT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  cudaStream_t stream_;
  DevicePool* pool_;
  mutable DeviceBuffer<double> scratch_;  // per-task sums, task_axpy coefficients; grown once
};

}  // namespace

std::unique_ptr<VecOps<float>> make_cuda_vec_ops(CUstream_st* stream, DevicePool* pool) {
  return std::make_unique<CudaVecOps<float>>(stream, pool);
}
std::unique_ptr<VecOps<double>> make_cuda_vec_ops_double(CUstream_st* stream, DevicePool* pool) {
  return std::make_unique<CudaVecOps<double>>(stream, pool);
}

}  // namespace mt
