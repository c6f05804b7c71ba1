// The vector operations the meta-gradient algorithms need (DESIGN §5.1), one implementation per
// backend: host loops (vec_ops_cpu.cpp) and CUDA kernels (vec_ops_cuda.cu). Every pointer is
// memory of the backend (memory()), except where a parameter says "host". Outputs are
// overwritten unless the comment says "accumulates". Operations on batched buffers take the
// BatchedLayout (core/batched_layout.h) that describes them. The arithmetic of each element is
// written exactly as the algorithm's reference form (e.g. y += a·x for φ ← φ − α g), so the CPU
// results stay bit-identical to the per-task code this replaced.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/batched_layout.h"
#include "core/buffer.h"

struct CUstream_st;  // cudaStream_t is CUstream_st*

namespace mt {

template <typename T>
class VecOps {
 public:
  virtual ~VecOps() = default;
  virtual Memory memory() const = 0;
  // The CUDA stream the ops are enqueued on (null for the host ops), for kernels of other
  // units that must run in the same order (core/exact_sum.h).
  virtual CUstream_st* stream() const { return nullptr; }
  // n uninitialised elements of backend memory.
  virtual Buffer<T> alloc(int64_t n) const = 0;
  virtual void upload(int64_t n, const T* host, T* x) const = 0;    // x ← host
  virtual void download(int64_t n, const T* x, T* host) const = 0;  // host ← x (waits)
  virtual void fill(int64_t n, T value, T* x) const = 0;
  virtual void copy(int64_t n, const T* x, T* y) const = 0;
  virtual void axpy(int64_t n, T a, const T* x, T* y) const = 0;  // y[i] += a·x[i]
  // z[i] = a·x[i] + b·y[i] (z may alias x or y)
  virtual void combine(int64_t n, T a, const T* x, T b, const T* y, T* z) const = 0;
  virtual void sub(int64_t n, const T* x, const T* y, T* z) const = 0;  // z = x − y
  virtual void clamp(int64_t n, T c, T* x) const = 0;                   // x ← clamp(x, −c, c)
  virtual void mul(int64_t n, const T* x, const T* y, T* z) const = 0;  // z = x ⊙ y
  // Accumulates: z[i] += a·(x[i]·y[i]) (the product rounded, then one fused multiply-add).
  virtual void mul_add(int64_t n, T a, const T* x, const T* y, T* z) const = 0;

  // Batched buffers. broadcast: every task of x ← θ (θ layout, d elements).
  virtual void broadcast(const BatchedLayout& l, const T* theta, T* x) const = 0;
  // Accumulates: s[j] += x_t[j] for t = 0, 1, …, T−1 in that order (s in θ layout).
  virtual void sum_tasks(const BatchedLayout& l, const T* x, T* s) const = 0;
  // y (tasks.size() tasks) ← tasks[i] of x, i = 0.. (layout of y: from.with_tasks(size)).
  virtual void gather(const BatchedLayout& from, const T* x, const std::vector<int>& tasks,
                      T* y) const = 0;
  // Task tasks[i] of y ← task i of x (the inverse of gather).
  virtual void scatter(const BatchedLayout& to, const T* x, const std::vector<int>& tasks,
                       T* y) const = 0;
  // host out[t] = Σ_j x_t[j]² and Σ_j (x_t[j] − y_t[j])², in double, j in θ order.
  virtual void task_sq_norms(const BatchedLayout& l, const T* x, double* out) const = 0;
  virtual void task_sq_dists(const BatchedLayout& l, const T* x, const T* y, double* out) const = 0;
  // host out[t] = Σ_j x_t[j]·y_t[j], in double, j in θ order.
  virtual void task_dots(const BatchedLayout& l, const T* x, const T* y, double* out) const = 0;
  // y_t += a[t]·x_t for every task t (host a, one coefficient per task).
  virtual void task_axpy(const BatchedLayout& l, const double* a, const T* x, T* y) const = 0;
};

// The host implementation (one instance per scalar type, stateless).
template <typename T>
const VecOps<T>& host_vec_ops();

}  // namespace mt
