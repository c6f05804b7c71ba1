// Backend choice (launch/backend.h).
#include "launch/backend.h"

#include <algorithm>

#include "core/batched_model_cpu.h"
#include "core/device.h"
#include "data/episode_store.h"
#include "models/conv4_cuda.h"

namespace mt {

std::unique_ptr<BatchedModel<float>> make_backend(const Config& cfg, const Model<float>& model,
                                                  const EpisodeSource& source, int local_rank,
                                                  int threads) {
  if (cfg.device == Config::Device::kCpu)
    return std::make_unique<CpuBatchedModel<float>>(model, threads, kCpuMaxTasks);
  MT_REQUIRE(cfg.model.name == "conv4", "model.name = ", cfg.model.name,
             ": ResNet-12 runs on the CPU backend only for now (device=cpu); the CUDA backend "
             "builds Conv-4");
  MT_REQUIRE(cfg.model.activation == "relu", "model.activation = ", cfg.model.activation,
             ": the CUDA backend's Conv-4 has ReLU only for now; set model.activation=relu or "
             "device=cpu");
  MT_REQUIRE(cuda_built(),
             "device = cuda: this binary was built without the CUDA backend; rebuild with the "
             "CUDA toolkit on PATH, or set device=cpu");
  select_gpu(local_rank);
  Conv4Spec spec;
  spec.input = source.image_shape();
  spec.filters = cfg.model.filters;
  spec.ways = cfg.task.ways;
  spec.pool = cfg.model.pool == Config::Model::Pool::kMax ? Conv4Pool::kMax : Conv4Pool::kStride;
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
  return make_conv4_cuda(spec, o);
}

}  // namespace mt
