// The host implementation of VecOps (core/vec_ops.h): plain loops over host memory, each
// element computed in the same form as the per-task code the engine replaced.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/cpu_kernels.h"
#include "core/vec_ops.h"

namespace mt {

namespace {

// The element-wise loops, compiled per instruction set and picked at run time (virtual
// functions cannot be multi-versioned themselves). y + a·x is one fused multiply-add, spelled
// out: the rounding of the device kernels (core/vec_ops_kernels.h) on every CPU.
template <typename T>
MT_DISPATCH_CLONES void axpy_loop(int64_t n, T a, const T* x, T* y) {
  for (int64_t i = 0; i < n; ++i) y[i] = std::fma(a, x[i], y[i]);
}
template <typename T>
MT_DISPATCH_CLONES void combine_loop(int64_t n, T a, const T* x, T b, const T* y, T* z) {
  for (int64_t i = 0; i < n; ++i) z[i] = std::fma(a, x[i], b * y[i]);
}

template <typename T>
MT_DISPATCH_CLONES void mul_add_loop(int64_t n, T a, const T* x, const T* y, T* z) {
  for (int64_t i = 0; i < n; ++i) z[i] = std::fma(a, x[i] * y[i], z[i]);
}

template <typename T>
class HostVecOps final : public VecOps<T> {
 public:
  Memory memory() const override { return Memory::kHost; }
  Buffer<T> alloc(int64_t n) const override {
    MT_CHECK(n >= 0, "buffer of ", n, " elements");
    return Buffer<T>(new T[static_cast<size_t>(n)], n, Memory::kHost, [](T* p) { delete[] p; });
  }
  void upload(int64_t n, const T* host, T* x) const override { copy(n, host, x); }
  void download(int64_t n, const T* x, T* host) const override { copy(n, x, host); }
  void fill(int64_t n, T value, T* x) const override { std::fill(x, x + n, value); }
  void copy(int64_t n, const T* x, T* y) const override {
    if (n > 0 && x != y) std::memcpy(y, x, static_cast<size_t>(n) * sizeof(T));
  }
  void axpy(int64_t n, T a, const T* x, T* y) const override { axpy_loop(n, a, x, y); }
  void combine(int64_t n, T a, const T* x, T b, const T* y, T* z) const override {
    combine_loop(n, a, x, b, y, z);
  }
  void sub(int64_t n, const T* x, const T* y, T* z) const override {
    for (int64_t i = 0; i < n; ++i) z[i] = x[i] - y[i];
  }
  void clamp(int64_t n, T c, T* x) const override {
    for (int64_t i = 0; i < n; ++i) x[i] = std::clamp(x[i], -c, c);
  }
  void mul(int64_t n, const T* x, const T* y, T* z) const override {
    for (int64_t i = 0; i < n; ++i) z[i] = x[i] * y[i];
  }
  void mul_add(int64_t n, T a, const T* x, const T* y, T* z) const override {
    mul_add_loop(n, a, x, y, z);
  }

  // The batched layout is tensor-major: for each tensor k, the T copies follow one another.
  void broadcast(const BatchedLayout& l, const T* theta, T* x) const override {
    for (int k = 0; k < l.tensors(); ++k) {
      const int64_t size = l.ends()[k + 1] - l.ends()[k];
      for (int t = 0; t < l.tasks(); ++t) copy(size, theta + l.ends()[k], x + l.tensor_start(k, t));
    }
  }
  void sum_tasks(const BatchedLayout& l, const T* x, T* s) const override {
    for (int k = 0; k < l.tensors(); ++k) {
      const int64_t size = l.ends()[k + 1] - l.ends()[k];
      T* out = s + l.ends()[k];
      for (int t = 0; t < l.tasks(); ++t) {
        const T* in = x + l.tensor_start(k, t);
        for (int64_t e = 0; e < size; ++e) out[e] += in[e];
      }
    }
  }
  void gather(const BatchedLayout& from, const T* x, const std::vector<int>& tasks,
              T* y) const override {
    const BatchedLayout to = from.with_tasks(static_cast<int>(tasks.size()));
    move_tasks(from, x, to, y, tasks, /*to_subset=*/true);
  }
  void scatter(const BatchedLayout& to, const T* x, const std::vector<int>& tasks,
               T* y) const override {
    const BatchedLayout from = to.with_tasks(static_cast<int>(tasks.size()));
    move_tasks(from, x, to, y, tasks, /*to_subset=*/false);
  }
  void task_sq_norms(const BatchedLayout& l, const T* x, double* out) const override {
    for (int t = 0; t < l.tasks(); ++t) {
      double s = 0;
      for_task(l, t, [&](int64_t i) { s += static_cast<double>(x[i]) * x[i]; });
      out[t] = s;
    }
  }
  void task_sq_dists(const BatchedLayout& l, const T* x, const T* y, double* out) const override {
    for (int t = 0; t < l.tasks(); ++t) {
      double s = 0;
      for_task(l, t, [&](int64_t i) {
        const double diff = static_cast<double>(x[i]) - y[i];
        s += diff * diff;
      });
      out[t] = s;
    }
  }
  void task_dots(const BatchedLayout& l, const T* x, const T* y, double* out) const override {
    for (int t = 0; t < l.tasks(); ++t) {
      double s = 0;
      for_task(l, t, [&](int64_t i) { s += static_cast<double>(x[i]) * y[i]; });
      out[t] = s;
    }
  }
  void task_axpy(const BatchedLayout& l, const double* a, const T* x, T* y) const override {
    for (int t = 0; t < l.tasks(); ++t) {
      const T at = static_cast<T>(a[t]);
      for_task(l, t, [&](int64_t i) { y[i] = std::fma(at, x[i], y[i]); });
    }
  }

 private:
  // f(batched index) for every element of task t, in θ order.
  template <typename F>
  static void for_task(const BatchedLayout& l, int t, F f) {
    for (int k = 0; k < l.tensors(); ++k) {
      const int64_t start = l.tensor_start(k, t), size = l.ends()[k + 1] - l.ends()[k];
      for (int64_t e = 0; e < size; ++e) f(start + e);
    }
  }
  // Copies task tasks[i] of the full batch to/from task i of the subset batch.
  void move_tasks(const BatchedLayout& subset_or_full_from, const T* x,
                  const BatchedLayout& subset_or_full_to, T* y, const std::vector<int>& tasks,
                  bool to_subset) const {
    const BatchedLayout& full = to_subset ? subset_or_full_from : subset_or_full_to;
    for (size_t i = 0; i < tasks.size(); ++i) {
      MT_CHECK(tasks[i] >= 0 && tasks[i] < full.tasks(), "task ", tasks[i], " of a batch of ",
               full.tasks());
      for (int k = 0; k < full.tensors(); ++k) {
        const int64_t size = full.ends()[k + 1] - full.ends()[k];
        const int src_task = to_subset ? tasks[i] : static_cast<int>(i);
        const int dst_task = to_subset ? static_cast<int>(i) : tasks[i];
        copy(size, x + subset_or_full_from.tensor_start(k, src_task),
             y + subset_or_full_to.tensor_start(k, dst_task));
      }
    }
  }
};

}  // namespace

template <typename T>
const VecOps<T>& host_vec_ops() {
  static const HostVecOps<T> ops;
  return ops;
}
template const VecOps<float>& host_vec_ops<float>();
template const VecOps<double>& host_vec_ops<double>();

}  // namespace mt
