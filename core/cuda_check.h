// Checks for the CUDA side (DESIGN §6, STYLE 8): MT_CUDA_CHECK, MT_CUBLAS_CHECK and
// MT_CUDNN_CHECK throw mt::Error with file:line, the expression and the library's message;
// MT_CUDA_CHECK_LAUNCH() follows every kernel launch. Plus DeviceBuffer, RAII device memory.
// Include only from CUDA-side files (*_cuda.cpp, *.cu): it pulls in the CUDA headers.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstddef>
#include <cstdio>
#include <string>
#include <utility>

#include "core/check.h"

namespace mt {
namespace detail {

[[noreturn]] inline void throw_gpu_error(const char* library, const char* expr, const char* file,
                                         int line, const std::string& message) {
  throw Error(ExitCode::kRuntime,
              concat(file, ":", line, ": ", library, " call `", expr, "` failed: ", message));
}

inline std::string cuda_message(cudaError_t e) {
  return concat(cudaGetErrorName(e), " (", cudaGetErrorString(e), ")");
}

}  // namespace detail
}  // namespace mt

#define MT_CUDA_CHECK(expr)                                                  \
  do {                                                                       \
    const cudaError_t mt_status_ = (expr);                                   \
    if (mt_status_ != cudaSuccess)                                           \
      ::mt::detail::throw_gpu_error("CUDA", #expr, __FILE__, __LINE__,       \
                                    ::mt::detail::cuda_message(mt_status_)); \
  } while (0)

#define MT_CUBLAS_CHECK(expr)                                            \
  do {                                                                   \
    const cublasStatus_t mt_status_ = (expr);                            \
    if (mt_status_ != CUBLAS_STATUS_SUCCESS)                             \
      ::mt::detail::throw_gpu_error("cuBLAS", #expr, __FILE__, __LINE__, \
                                    cublasGetStatusString(mt_status_));  \
  } while (0)

#define MT_CUDNN_CHECK(expr)                                            \
  do {                                                                  \
    const cudnnStatus_t mt_status_ = (expr);                            \
    if (mt_status_ != CUDNN_STATUS_SUCCESS)                             \
      ::mt::detail::throw_gpu_error("cuDNN", #expr, __FILE__, __LINE__, \
                                    cudnnGetErrorString(mt_status_));   \
  } while (0)

// After a kernel launch: a bad configuration is reported here, at the launch site.
#define MT_CUDA_CHECK_LAUNCH()                                                   \
  do {                                                                           \
    const cudaError_t mt_status_ = cudaGetLastError();                           \
    if (mt_status_ != cudaSuccess)                                               \
      ::mt::detail::throw_gpu_error("CUDA", "kernel launch", __FILE__, __LINE__, \
                                    ::mt::detail::cuda_message(mt_status_));     \
  } while (0)

namespace mt {

// Owns count elements of T in device memory (uninitialised). Move-only. The destructor never
// throws: a failing cudaFree is reported on stderr.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t count) : size_(count) {
    if (count > 0) MT_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&data_), count * sizeof(T)));
  }
  ~DeviceBuffer() { release(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      release();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }

  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return size_; }

  // Synchronous copies of the first count elements.
  void copy_from_host(const T* host, size_t count) {
    MT_CHECK(count <= size_, "copying ", count, " elements into a device buffer of ", size_);
    if (count > 0)
      MT_CUDA_CHECK(cudaMemcpy(data_, host, count * sizeof(T), cudaMemcpyHostToDevice));
  }
  void copy_to_host(T* host, size_t count) const {
    MT_CHECK(count <= size_, "copying ", count, " elements out of a device buffer of ", size_);
    if (count > 0)
      MT_CUDA_CHECK(cudaMemcpy(host, data_, count * sizeof(T), cudaMemcpyDeviceToHost));
  }

 private:
  void release() noexcept {
    if (!data_) return;
    const cudaError_t e = cudaFree(data_);
    if (e != cudaSuccess)
      std::fprintf(stderr, "mt::DeviceBuffer: cudaFree failed: %s (%s)\n", cudaGetErrorName(e),
                   cudaGetErrorString(e));
    data_ = nullptr;
    size_ = 0;
  }

  T* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace mt
