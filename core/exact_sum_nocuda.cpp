// The CUDA exact-sum factory of a build without CUDA: device memory cannot occur there.
#include "core/check.h"
#include "core/exact_sum.h"

namespace mt {

template <typename T>
std::unique_ptr<ExactSumOps<T>> make_cuda_exact_sum_ops(CUstream_st*) {
  throw UsageError("the exact reduction on device memory needs a CUDA build");
}

template std::unique_ptr<ExactSumOps<float>> make_cuda_exact_sum_ops<float>(CUstream_st*);
template std::unique_ptr<ExactSumOps<double>> make_cuda_exact_sum_ops<double>(CUstream_st*);

}  // namespace mt
