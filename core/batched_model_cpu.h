// The CPU backend of the task-batched model interface (core/batched_model.h): today's per-task
// Model (layers on im2col + BLAS) run over the tasks of a batch on OpenMP threads, each thread
// with its own Workspace. A task's parameters are gathered from the batched layout into a
// contiguous row, its gradient scattered back: exact copies, so results are bit-identical to
// running the tasks one by one. Tasks left over after whole rounds of one per thread (a batch
// of 1 on 2 threads, the 33rd task on 32) run one at a time with their passes cut into pieces
// over every thread (core/parallel_for.h); the cut follows the shape, so the bits do not move.
#pragma once

#include <memory>
#include <vector>

#include "core/batched_model.h"

namespace mt {

// Batch bound of the CPU backend: a rank's tasks run in one batch, so UFOM's exact sub-batch
// still spreads over every thread.
constexpr int kCpuMaxTasks = 4096;

template <typename T>
class CpuBatchedModel final : public BatchedModel<T> {
 public:
  // `model` must outlive this object. threads ≥ 1; max_tasks bounds a batch.
  CpuBatchedModel(const Model<T>& model, int threads, int max_tasks);

  const ParamLayout& layout() const override { return model_.layout(); }
  const VecOps<T>& ops() const override { return host_vec_ops<T>(); }
  int max_tasks() const override { return max_tasks_; }
  std::string describe() const override;

  std::unique_ptr<TaskBatch> make_batch() const override;
  void load(const std::vector<const Episode<T>*>& episodes, TaskBatch& b) override;
  void gather(const TaskBatch& from, const std::vector<int>& tasks, TaskBatch& to) override;
  void loss_grad(const TaskBatch& b, Split s, const T* phi, T* grad, LossStats* stats) override;
  void hvp(const TaskBatch& b, Split s, const T* phi, const T* v, T* Hv, LossStats* stats) override;
  bool keep_features(const TaskBatch& b, Split s, const T* phi, int tensor) override;
  void loss_grad_kept(const TaskBatch& b, Split s, const T* phi, T* grad,
                      LossStats* stats) override;

 private:
  struct Scratch {
    std::unique_ptr<Workspace> ws;
    std::vector<T> phi, v, out;  // one task's rows
  };
  // Runs f(task, scratch) for every task of b on the worker threads; rethrows the first error.
  template <typename F>
  void for_tasks(int tasks, F f);

  const Model<T>& model_;
  int threads_, max_tasks_;
  std::vector<Scratch> scratch_;  // one per thread
};

}  // namespace mt
