// Backend choice (launch/backend.h).
#include "launch/backend.h"

#include <algorithm>

#include "core/batched_model_cpu.h"
#include "core/device.h"
#include "data/episode_store.h"
#include "models/net_cuda.h"

namespace mt {

std::unique_ptr<BatchedModel<float>> make_backend(const Config& cfg, const Model<float>& model,
                                                  const EpisodeSource& source, int local_rank,
                                                  int threads) {
  if (cfg.device == Config::Device::kCpu)
    return std::make_unique<CpuBatchedModel<float>>(model, threads, kCpuMaxTasks);
  MT_REQUIRE(cuda_built(),
             "device = cuda: this binary was built without the CUDA backend; rebuild with the "
             "CUDA toolkit on PATH, or set device=cpu");
  select_gpu(local_rank);
  // The backend runs the plan of the very model the CPU backend would (make_model's), so both
  // read one description of the architecture and one parameter layout.
  const auto* net = dynamic_cast<const Sequential<float>*>(&model);
  MT_CHECK(net != nullptr, "the CUDA backend runs Sequential models; got another Model");
  MT_CHECK(net->input_shape() == source.image_shape(),
           "the model's input shape differs from the data's");
  CudaBackendOptions o;
  o.max_tasks = std::max(cfg.meta_batch, 1);  // a rank's share is at most the meta-batch
  o.max_examples = cfg.task.ways * std::max(cfg.task.shots, cfg.task.queries);
  o.graphs = cfg.cuda.graphs;
  o.conv = cfg.cuda.conv == "gemm"    ? CudaBackendOptions::Conv::kGemm
           : cfg.cuda.conv == "cudnn" ? CudaBackendOptions::Conv::kCudnn
                                      : CudaBackendOptions::Conv::kAuto;
  o.tune = cfg.cuda.tune;
  const auto* store = dynamic_cast<const EpisodeStore*>(&source);
  if (store && store->residency() == Residency::kDevice) o.resident = &store->device_images();
  return make_net_cuda(*net, o);
}

}  // namespace mt
