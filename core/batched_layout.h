// The batched parameter layout (DESIGN §5.1): T tasks' parameter vectors of one ParamLayout,
// stored tensor by tensor with each tensor's T copies contiguous, so that element e of tensor k
// of task t sits at T·offset_k + t·size_k + e. A conv layer's T filter sets are then cuDNN's
// grouped filter [T·O, C, 3, 3], batch norm's γ and β are [T·C] and the linear head is a strided
// batch. θ itself is the case T = 1 (today's flat layout). The index maps are MT_HD so that
// device kernels and their host twins share them.
#pragma once

#include <cstdint>
#include <vector>

#include "core/check.h"
#include "core/host_device.h"
#include "core/param_layout.h"

namespace mt {

// Index in a T-task batched buffer of flat element j (0 ≤ j < d, θ layout) of task t.
// `ends` holds the tensors' offsets followed by d: ends[k] ≤ j < ends[k+1] for tensor k.
MT_HD inline int64_t batched_index(const int64_t* ends, int tensors, int64_t tasks, int64_t t,
                                   int64_t j) {
  int lo = 0, hi = tensors - 1;  // binary search for the tensor holding j
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (ends[mid] <= j)
      lo = mid;
    else
      hi = mid - 1;
  }
  const int64_t offset = ends[lo], size = ends[lo + 1] - ends[lo];
  return tasks * offset + t * size + (j - offset);
}

class BatchedLayout {
 public:
  BatchedLayout(const ParamLayout& params, int tasks) : tasks_(tasks), dim_(params.total()) {
    MT_CHECK(tasks >= 1, "a batch needs at least one task, got ", tasks);
    for (const TensorSpec& t : params.tensors()) ends_.push_back(t.offset);
    ends_.push_back(dim_);
  }
  int tasks() const { return tasks_; }
  int64_t dim() const { return dim_; }            // d: parameters of one task
  int64_t total() const { return tasks_ * dim_; }  // T·d
  int tensors() const { return static_cast<int>(ends_.size()) - 1; }
  // offsets of the tensors followed by d (what batched_index takes)
  const std::vector<int64_t>& ends() const { return ends_; }
  int64_t index(int t, int64_t j) const {
    return batched_index(ends_.data(), tensors(), tasks_, t, j);
  }
  // First element of tensor k of task t; the tensor's size_k elements follow contiguously.
  int64_t tensor_start(int k, int t) const {
    return tasks_ * ends_[k] + static_cast<int64_t>(t) * (ends_[k + 1] - ends_[k]);
  }
  BatchedLayout with_tasks(int tasks) const {
    BatchedLayout l = *this;
    MT_CHECK(tasks >= 1, "a batch needs at least one task, got ", tasks);
    l.tasks_ = tasks;
    return l;
  }

 private:
  int tasks_;
  int64_t dim_;
  std::vector<int64_t> ends_;
};

}  // namespace mt
