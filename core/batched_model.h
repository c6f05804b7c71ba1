// The task-batched model interface (DESIGN §5.1): the passes of a model over T tasks at once,
// each task with its own parameter row. Parameters, gradients, directions and Hv are [T, d]
// buffers in the batched layout (core/batched_layout.h) in the backend's memory; the examples
// of the T tasks are a TaskBatch the backend filled from host episodes. The CPU backend
// (core/batched_model_cpu.h) runs today's per-task layers on threads; the CUDA backend
// (models/net_cuda.h) runs batched kernels. Algorithm code sees only this interface.
#pragma once

#include <memory>
#include <vector>

#include "core/check.h"
#include "core/episode.h"
#include "core/model.h"
#include "core/param_layout.h"
#include "core/vec_ops.h"

struct CUstream_st;  // cudaStream_t is CUstream_st*

namespace mt {

enum class Split { kSupport, kQuery };

// The support and query examples of up to max_tasks() tasks in backend memory. Every task of a
// batch has the same support size and the same query size (one call = one n per task).
class TaskBatch {
 public:
  virtual ~TaskBatch() = default;
  int tasks() const { return tasks_; }

 protected:
  int tasks_ = 0;
};

// Examples that live in device memory (data.resident=device; data/resident_images.h): a GPU
// backend uploads only a batch's row indices (Batch::source, listed by pack_rows in
// models/batched_net.h) and has this write the float rows, rows × item floats at x, on `stream`.
class DeviceRowSource {
 public:
  virtual ~DeviceRowSource() = default;
  virtual void gather_rows(const int64_t* index_of_row, int64_t rows, float* x,
                           CUstream_st* stream) const = 0;
};

// tasks[i] of `episodes`, i = 0.. (what gather() loads for the backends that keep pointers).
template <typename T>
std::vector<const Episode<T>*> pick_tasks(const std::vector<const Episode<T>*>& episodes,
                                          const std::vector<int>& tasks) {
  std::vector<const Episode<T>*> picked;
  for (int t : tasks) {
    MT_CHECK(t >= 0 && t < static_cast<int>(episodes.size()), "task ", t, " of a batch of ",
             episodes.size());
    picked.push_back(episodes[t]);
  }
  return picked;
}

template <typename T>
class BatchedModel {
 public:
  virtual ~BatchedModel() = default;
  virtual const ParamLayout& layout() const = 0;  // one task's parameters (θ's layout)
  virtual const VecOps<T>& ops() const = 0;
  virtual int max_tasks() const = 0;         // most tasks per call
  virtual std::string describe() const = 0;  // one line for logs

  virtual std::unique_ptr<TaskBatch> make_batch() const = 0;
  // b ← the episodes (1 ≤ count ≤ max_tasks). The CPU backend keeps pointers: the episodes must
  // outlive every use of b there.
  virtual void load(const std::vector<const Episode<T>*>& episodes, TaskBatch& b) = 0;
  // to ← tasks[i] of from, i = 0.. (a sub-batch, e.g. UFOM's exact tasks).
  virtual void gather(const TaskBatch& from, const std::vector<int>& tasks, TaskBatch& to) = 0;

  // Loss of split s of every task at φ (layout BatchedLayout(layout(), b.tasks())); overwrites
  // grad with the gradients when non-null, and host stats[t] when non-null. Here and in hvp the
  // outputs must not overlap the inputs (a backend may write them while it reads φ and v).
  virtual void loss_grad(const TaskBatch& b, Split s, const T* phi, T* grad, LossStats* stats) = 0;
  // Overwrites Hv with ∇²L_t(φ_t) v_t for every task t; host stats[t] when non-null.
  virtual void hvp(const TaskBatch& b, Split s, const T* phi, const T* v, T* Hv,
                   LossStats* stats) = 0;

  // ANIL's inner loop adapts only the layers from the one holding θ tensor `tensor` on: the
  // earlier layers' output on split s of every task of b at φ is computed once and kept with b
  // (their tensors of φ must stay as they are until the next keep_features of b), and
  // loss_grad_kept runs the passes from there: loss_grad's loss and gradient entries of those
  // layers, bit for bit, with zeros before them. keep_features returns false when this backend
  // (or model) cannot; then loss_grad_kept must not be called. Default: cannot.
  virtual bool keep_features(const TaskBatch& /*b*/, Split /*s*/, const T* /*phi*/,
                             int /*tensor*/) {
    return false;
  }
  virtual void loss_grad_kept(const TaskBatch& /*b*/, Split /*s*/, const T* /*phi*/, T* /*grad*/,
                              LossStats* /*stats*/) {
    MT_CHECK(false, "loss_grad_kept without kept features");
  }
};

}  // namespace mt
