// The CUDA backend of the task-batched model for Conv-4 (DESIGN §5.1): all tasks of a call in
// a handful of launches (grouped or GEMM convolutions, batched element-wise kernels, a strided-
// batched linear head), float32, on the GPU current at construction. CPU code may include this
// header; a build without CUDA links the stub that refuses (conv4_nocuda.cpp).
#pragma once

#include <memory>

#include "core/batched_model.h"
#include "models/conv4.h"

namespace mt {

struct CudaBackendOptions {
  int max_tasks = 1;        // most tasks per call (the rank's share of the meta-batch)
  int max_examples = 1;     // most examples per task in one call (support or query)
  bool graphs = true;       // replay captured CUDA Graphs of the inner and adjoint steps
  // Convolution form of every pass: kAuto times both at start-up and keeps the faster per layer
  // and pass (the pick can differ between runs when the timings are close, and with it the
  // rounding); a fixed form makes reruns bit-identical.
  enum class Conv { kAuto, kCudnn, kGemm } conv = Conv::kAuto;
};

// Throws UsageError (exit 2) naming `device` in a build without CUDA or without a usable GPU,
// and Error (exit 1) with the bytes asked for when device memory does not suffice.
std::unique_ptr<BatchedModel<float>> make_conv4_cuda(const Conv4Spec& spec,
                                                     const CudaBackendOptions& options);

}  // namespace mt
