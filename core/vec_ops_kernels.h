// Per-element bodies of the CUDA VecOps kernels (core/vec_ops_cuda.cu), MT_HD so that the host
// tests run exactly the arithmetic the device runs, plus the by-value kernel arguments
// (LayoutArgs, TaskList) that keep every op free of host→device copies and so capturable.
// Includes no CUDA header. Each body writes only the element(s) its comment names.
//
// Rounding: host_vec_ops is compiled with floating-point contraction (GCC's default for C++),
// so y += a·x and a·x + b·y become fused multiply-adds there. The bodies spell the fma out
// (fused_mul_add) instead of leaving the choice to nvcc; vec_ops_test checks that the host
// build contracts the same way, which is what makes the device results equal host_vec_ops.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "core/batched_layout.h"
#include "core/check.h"
#include "core/host_device.h"

namespace mt {

// Limits of the by-value arguments. A kernel's parameters may take 32 764 bytes since
// CUDA 12.1 on sm_70+; a gather's LayoutArgs + TaskList take about 5.1 KB. 128 tensors: ψ of
// Meta-SGD on ResNet-12 (50 tensors of θ, 50 of rates).
constexpr int kMaxLayoutTensors = 128;
constexpr int kMaxTaskList = 1024;
// Threads per block of the per-task reduction (one block per task); a power of two.
constexpr int kReduceThreads = 256;

// A BatchedLayout as plain data: ends[0..tensors] are the tensors' offsets followed by d.
struct LayoutArgs {
  int64_t ends[kMaxLayoutTensors + 1];
  int tensors;
  int tasks;
  MT_HD int64_t dim() const { return ends[tensors]; }
  MT_HD int64_t index(int64_t t, int64_t j) const {
    return batched_index(ends, tensors, tasks, t, j);
  }
};

// The task indices of a gather or scatter: task[i] of the full batch, i < count.
struct TaskList {
  int task[kMaxTaskList];
  int count;
};

inline LayoutArgs make_layout_args(const BatchedLayout& l) {
  MT_CHECK(l.tensors() <= kMaxLayoutTensors, "a batched layout of ", l.tensors(),
           " tensors; the CUDA vector ops take at most ", kMaxLayoutTensors,
           " (raise kMaxLayoutTensors in core/vec_ops_kernels.h)");
  LayoutArgs a{};
  for (int k = 0; k <= l.tensors(); ++k) a.ends[k] = l.ends()[k];
  a.tensors = l.tensors();
  a.tasks = l.tasks();
  return a;
}

// Checks that every index names one of full_tasks tasks.
inline TaskList make_task_list(const std::vector<int>& tasks, int full_tasks) {
  MT_CHECK(tasks.size() <= static_cast<size_t>(kMaxTaskList), "a gather/scatter of ", tasks.size(),
           " tasks; the CUDA vector ops take at most ", kMaxTaskList,
           " (raise kMaxTaskList in core/vec_ops_kernels.h)");
  TaskList list{};
  for (size_t i = 0; i < tasks.size(); ++i) {
    MT_CHECK(tasks[i] >= 0 && tasks[i] < full_tasks, "task ", tasks[i], " of a batch of ",
             full_tasks);
    list.task[i] = tasks[i];
  }
  list.count = static_cast<int>(tasks.size());
  return list;
}

// a·b + c rounded once.
template <typename T>
MT_HD inline T fused_mul_add(T a, T b, T c) {
#if defined(__CUDA_ARCH__)
  return fma(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

// Element-wise bodies: element i of a flat range.
template <typename T>
MT_HD inline void fill_element(int64_t i, T value, T* x) {
  x[i] = value;
}
template <typename T>
MT_HD inline void axpy_element(int64_t i, T a, const T* x, T* y) {  // y[i] += a·x[i]
  y[i] = fused_mul_add(a, x[i], y[i]);
}
template <typename T>
MT_HD inline void combine_element(int64_t i, T a, const T* x, T b, const T* y, T* z) {
  z[i] = fused_mul_add(a, x[i], b * y[i]);  // a·x[i] + b·y[i]; z may alias x or y
}
template <typename T>
MT_HD inline void sub_element(int64_t i, const T* x, const T* y, T* z) {
  z[i] = x[i] - y[i];
}
template <typename T>
MT_HD inline void clamp_element(int64_t i, T c, T* x) {  // as std::clamp(x, −c, c): NaN stays
  const T v = x[i];
  x[i] = v < -c ? -c : (c < v ? c : v);
}

template <typename T>
MT_HD inline void mul_element(int64_t i, const T* x, const T* y, T* z) {
  z[i] = x[i] * y[i];
}
template <typename T>
MT_HD inline void mul_add_element(int64_t i, T a, const T* x, const T* y, T* z) {
  z[i] = fused_mul_add(a, x[i] * y[i], z[i]);  // z[i] += a·(x[i]·y[i])
}

// Batched bodies. q enumerates (task, θ index) pairs as q = t·d + j, so neighbouring threads
// touch neighbouring elements of one tensor.
template <typename T>
MT_HD inline void broadcast_element(const LayoutArgs& l, int64_t q, const T* theta, T* x) {
  const int64_t d = l.dim(), t = q / d, j = q - t * d;
  x[l.index(t, j)] = theta[j];
}
// s[j] += x_t[j] for t = 0 … T−1 in that order (one thread per j).
template <typename T>
MT_HD inline void sum_tasks_element(const LayoutArgs& l, int64_t j, const T* x, T* s) {
  const int64_t first = l.index(0, j);
  const int64_t stride = l.index(l.tasks > 1 ? 1 : 0, j) - first;  // size of j's tensor
  T acc = s[j];
  for (int t = 0; t < l.tasks; ++t) acc += x[first + t * stride];
  s[j] = acc;
}
// Element q = i·d + j of the subset: y_i[j] = x_{task[i]}[j] (gather) or the reverse (scatter).
template <typename T>
MT_HD inline void gather_element(const LayoutArgs& full, const TaskList& tasks, int64_t q,
                                 const T* x, T* y) {
  const int64_t d = full.dim(), i = q / d, j = q - i * d;
  y[batched_index(full.ends, full.tensors, tasks.count, i, j)] = x[full.index(tasks.task[i], j)];
}
template <typename T>
MT_HD inline void scatter_element(const LayoutArgs& full, const TaskList& tasks, int64_t q,
                                  const T* x, T* y) {
  const int64_t d = full.dim(), i = q / d, j = q - i * d;
  y[full.index(tasks.task[i], j)] = x[batched_index(full.ends, full.tensors, tasks.count, i, j)];
}

// Per-task reduction, one block of `lanes` threads per task t. Lane `lane` sums, in double, the
// terms of `sum` over elements lane, lane + lanes, … of each tensor in turn: x_t² (y unused),
// (x_t − y_t)², or x_t·y_t; then the block's partials are added by tree_reduce_step for
// half = lanes/2, lanes/4, …, 1, with a barrier between steps. partials[0] is the result.
enum class TaskSum { kSquares, kSquaredDistances, kDots };
template <typename T>
MT_HD inline double task_sum_partial(const LayoutArgs& l, const T* x, const T* y, TaskSum sum,
                                     int t, int lane, int lanes) {
  double acc = 0;
  for (int k = 0; k < l.tensors; ++k) {
    const int64_t size = l.ends[k + 1] - l.ends[k];
    const int64_t start = l.tasks * l.ends[k] + t * size;
    for (int64_t e = lane; e < size; e += lanes) {
      const double a = static_cast<double>(x[start + e]);
      if (sum == TaskSum::kDots) {
        acc = fused_mul_add(a, static_cast<double>(y[start + e]), acc);
        continue;
      }
      const double v = sum == TaskSum::kSquares ? a : a - static_cast<double>(y[start + e]);
      acc = fused_mul_add(v, v, acc);
    }
  }
  return acc;
}
// Element q = t·d + j: y_t[j] += a[t]·x_t[j] (a in the kernel's memory).
template <typename T>
MT_HD inline void task_axpy_element(const LayoutArgs& l, int64_t q, const double* a, const T* x,
                                    T* y) {
  const int64_t d = l.dim(), t = q / d, i = l.index(t, q - t * d);
  y[i] = fused_mul_add(static_cast<T>(a[t]), x[i], y[i]);
}
MT_HD inline void tree_reduce_step(double* partials, int lane, int half) {
  if (lane < half) partials[lane] += partials[lane + half];
}

// The host twin of the reduction kernel: the same decomposition, run lane by lane.
template <typename T>
double host_task_sum(const LayoutArgs& l, const T* x, const T* y, TaskSum sum, int t) {
  double partials[kReduceThreads];
  for (int lane = 0; lane < kReduceThreads; ++lane)
    partials[lane] = task_sum_partial(l, x, y, sum, t, lane, kReduceThreads);
  for (int half = kReduceThreads / 2; half > 0; half /= 2)
    for (int lane = 0; lane < half; ++lane) tree_reduce_step(partials, lane, half);
  return partials[0];
}

}  // namespace mt
