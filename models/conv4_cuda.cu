// Temporary: the CUDA Conv-4 backend is being assembled from the batched kernels; until then
// device=cuda is refused with a clear message (exit 2).
#include "core/check.h"
#include "models/conv4_cuda.h"

namespace mt {

std::unique_ptr<BatchedModel<float>> make_conv4_cuda(const Conv4Spec&,
                                                     const CudaBackendOptions&) {
  throw UsageError("device = cuda: the CUDA Conv-4 backend is not assembled in this build yet; "
                   "use device=cpu");
}

}  // namespace mt
