// The CUDA backend's factory in a build without CUDA (models/net_cuda.h): refuses, naming the
// setting to change.
#include "core/check.h"
#include "models/net_cuda.h"

namespace mt {

std::unique_ptr<BatchedModel<float>> make_net_cuda(const Sequential<float>&,
                                                   const CudaBackendOptions&) {
  throw UsageError(
      "device = cuda: this binary was built without the CUDA backend (nvcc was not found at "
      "configure time); rebuild with the CUDA toolkit on PATH, or set device=cpu");
}

}  // namespace mt
