// The CUDA backend of the task-batched model (DESIGN §5.1), for any model the batched plan takes
// (models/batched_net.h: Conv-4, ResNet-12, ...): all tasks of a call in a handful of launches
// (grouped or GEMM convolutions, batched element-wise kernels, a strided-batched linear head),
// float32, on the GPU current at construction. CPU code may include this header; a build
// without CUDA links the stub that refuses (net_nocuda.cpp).
#pragma once

#include <memory>

#include "core/batched_model.h"
#include "models/sequential.h"

namespace mt {

struct CudaBackendOptions {
  int max_tasks = 1;     // most tasks per call (the rank's share of the meta-batch)
  int max_examples = 1;  // most examples per task in one call (support or query)
  bool graphs = true;    // replay captured CUDA Graphs of the inner and adjoint steps
  // Convolution form of every pass, chosen once per layer geometry and never by timing unless
  // `tune`: kGemm = im2col + our batch-invariant GEMM (a task's bits never depend on its
  // batch-mates); kCudnn = cuDNN grouped convolution with heuristic-pinned algorithms (an error
  // when cuDNN is unusable); kAuto = kGemm, or with `tune` the faster form per layer and pass
  // (a warning, and the GEMM form, when cuDNN is unusable).
  enum class Conv { kAuto, kCudnn, kGemm } conv = Conv::kAuto;
  // Time both forms at start-up and keep the faster per layer and pass: timings differ between
  // runs, processes and ranks, so a tuned run gives up run-to-run and cross-rank identity.
  bool tune = false;
  // A device-resident store (data.resident=device), or null: episodes that carry only image
  // indices (Batch::source, empty x) are gathered on the GPU from it, so only indices cross PCIe.
  const DeviceRowSource* resident = nullptr;
};

// The backend of `net` (which must outlive it: its layout and plan are read from it). Throws
// UsageError (exit 2) naming `device` in a build without CUDA or without a usable GPU, or for
// conv = kCudnn when cuDNN is unusable (naming the cause); Error naming the layer when the net
// has one the batched plan lacks, and Error (exit 1) with the bytes asked for when device memory
// does not suffice. Everything the backend runs on is built here, once, for up to max_tasks
// tasks: calls of any T <= max_tasks create nothing new.
std::unique_ptr<BatchedModel<float>> make_net_cuda(const Sequential<float>& net,
                                                   const CudaBackendOptions& options);

}  // namespace mt
