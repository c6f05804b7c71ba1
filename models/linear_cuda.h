// CUDA twin of Linear<float>::forward (models/linear.h): y = x Wᵀ + b on device pointers, by
// one cuBLAS SGEMM (FP32, no TF32) and a bias-broadcast kernel. No CUDA header is included
// here, so CPU code may include this file; it links only in the CUDA build.
#pragma once

#include <memory>

namespace mt {

class LinearCuda {
 public:
  LinearCuda(int in_features, int out_features);
  ~LinearCuda();
  LinearCuda(const LinearCuda&) = delete;
  LinearCuda& operator=(const LinearCuda&) = delete;

  int in_features() const { return in_; }
  int out_features() const { return out_; }

  // All pointers are device memory. dW is the layer's flat parameter slice: W [out, in] then
  // b [out]; dx is [m, in], dy [m, out], row-major. Overwrites dy. Runs asynchronously on the
  // default stream; the device current at construction must be current at every call.
  void forward(int m, const float* dW, const float* dx, float* dy) const;

 private:
  struct Impl;  // owns the cuBLAS handle
  int in_, out_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mt
