// The host twin of the CUDA backend (DESIGN §5.1): the task-batched model interface on host
// memory, running the batched plan of any Sequential it takes (models/batched_net.h: Conv-4,
// ResNet-12) with the host twins of the CUDA kernels (batched_kernels.h, conv2d_batched_index.h).
// It is not a production backend; it exists so that CI checks the CUDA backend's layouts, index
// maps, graph and pass sequencing, the whole meta-step included, against the per-task CPU
// layers without a GPU.
#pragma once

#include <memory>
#include <vector>

#include "core/batched_model.h"
#include "models/batched_net.h"
#include "models/sequential.h"

namespace mt {

template <typename S>
class HostNetExec;

template <typename S>
class TwinBatchedModel final : public BatchedModel<S> {
 public:
  // `net` must outlive this object; max_examples bounds n per task and call.
  TwinBatchedModel(const Sequential<S>& net, int max_tasks, int max_examples);
  ~TwinBatchedModel() override;

  const ParamLayout& layout() const override { return net_.layout(); }
  const VecOps<S>& ops() const override { return host_vec_ops<S>(); }
  int max_tasks() const override { return max_tasks_; }
  std::string describe() const override;

  std::unique_ptr<TaskBatch> make_batch() const override;
  void load(const std::vector<const Episode<S>*>& episodes, TaskBatch& b) override;
  void gather(const TaskBatch& from, const std::vector<int>& tasks, TaskBatch& to) override;
  void loss_grad(const TaskBatch& b, Split s, const S* phi, S* grad, LossStats* stats) override;
  void hvp(const TaskBatch& b, Split s, const S* phi, const S* v, S* Hv, LossStats* stats) override;

 private:
  struct Plan;  // the executor and net, built once for max_tasks and used for every T
  void copy_stats(int tasks, int n, LossStats* stats) const;

  const Sequential<S>& net_;
  std::vector<NetLayer> plan_;
  int max_tasks_, max_examples_;
  std::vector<S> memory_;
  std::vector<int32_t> index_memory_;
  NetBuffers<S> buffers_;
  std::vector<S> grad_scratch_;
  std::unique_ptr<Plan> plan_net_;
};

}  // namespace mt
