// DeviceImages of the CUDA build (data/resident_images.h): the images in one cudaMalloc of the
// GPU current at construction, and the gather kernel, a grid-stride loop over the MT_HD body
// gather_element (data/resident_gather.h) whose host twin CI compares with the file path.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>

#include "core/cuda_check.h"
#include "core/device.h"
#include "data/residency.h"
#include "data/resident_images.h"

namespace mt {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 8192;

__global__ void gather_rows_kernel(const uint8_t* images, ResidentShape s,
                                   const int64_t* index_of_row, int64_t total, float* x) {
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[e] = gather_element(images, s, index_of_row, e);
}

}  // namespace

int64_t current_gpu_free_bytes(std::string* why_not) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    cudaGetLastError();  // the failed query must not surface at the next checked call
    if (why_not) *why_not = no_gpu_reason();
    return -1;
  }
  size_t free_bytes = 0, total = 0;
  MT_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total));
  return static_cast<int64_t>(free_bytes);
}

DeviceImages::DeviceImages(const uint8_t* images, int64_t count, ResidentShape s)
    : count_(count), shape_(s) {
  MT_CHECK(count >= 0 && s.pixels > 0 && s.channels > 0, "DeviceImages of ", count, " images of ",
           s.pixels, " pixels x ", s.channels, " channels");
  std::string why_not;
  const int64_t free_bytes = current_gpu_free_bytes(&why_not);
  MT_REQUIRE(free_bytes >= 0, "data.resident = device, but no GPU is usable (", why_not,
             "); set data.resident = host, auto or off");
  MT_REQUIRE(bytes() <= free_bytes, "data.resident = device: the images take ",
             describe_bytes(bytes()), ", more than the ", describe_bytes(free_bytes),
             " free on the GPU; set data.resident = host or auto");
  MT_CUDA_CHECK(cudaGetDevice(&device_));
  if (bytes() == 0) return;
  MT_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&data_), static_cast<size_t>(bytes())));
  const cudaError_t e =
      cudaMemcpy(data_, images, static_cast<size_t>(bytes()), cudaMemcpyHostToDevice);
  if (e != cudaSuccess) {
    cudaFree(data_);
    data_ = nullptr;
    MT_CUDA_CHECK(e);
  }
}

DeviceImages::~DeviceImages() {
  if (!data_) return;
  const cudaError_t e = cudaFree(data_);
  if (e != cudaSuccess)
    std::fprintf(stderr, "mt::DeviceImages: cudaFree failed: %s (%s)\n", cudaGetErrorName(e),
                 cudaGetErrorString(e));
}

void DeviceImages::gather_rows(const int64_t* index_of_row, int64_t rows, float* x,
                               CUstream_st* stream) const {
  MT_CHECK(rows >= 0, "gather_rows of ", rows, " rows");
  const int64_t total = rows * shape_.item();
  if (total == 0) return;
  const int blocks =
      static_cast<int>(std::min<int64_t>((total + kThreads - 1) / kThreads, kMaxBlocks));
  gather_rows_kernel<<<blocks, kThreads, 0, stream>>>(data_, shape_, index_of_row, total, x);
  MT_CUDA_CHECK_LAUNCH();
}

}  // namespace mt
