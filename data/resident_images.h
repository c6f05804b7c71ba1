// The device side of resident images (data.resident = device, DESIGN §7): a store's images as
// stored (uint8 [n, H, W, C]) copied once into GPU memory, and the gather kernel that writes
// float rows of them where the caller says (the rows of the batched example layout come from
// pack_rows in models/batched_net.h, for episodes that carry Batch::source). DeviceImages lives in
// resident_images_cuda.cu; the CPU-only build's (resident_images_nocuda.cpp) throws UsageError.
// No CUDA header here.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/batched_model.h"  // Split
#include "core/episode.h"
#include "data/resident_gather.h"

struct CUstream_st;  // cudaStream_t is CUstream_st*

namespace mt {

// Free bytes of the GPU current in the calling thread (creating its CUDA context), or -1 with
// the reason in *why_not when there is no usable GPU (CPU-only build, no device or driver).
int64_t current_gpu_free_bytes(std::string* why_not);

class DeviceImages final : public DeviceRowSource {
 public:
  // Copies `count` images of shape s from host memory to the GPU current in the calling thread.
  // Throws UsageError when they do not fit its free memory (naming the bytes) or there is no
  // GPU (the CPU-only build always).
  DeviceImages(const uint8_t* images, int64_t count, ResidentShape s);
  ~DeviceImages() override;  // frees; a failure is logged, never thrown
  DeviceImages(const DeviceImages&) = delete;
  DeviceImages& operator=(const DeviceImages&) = delete;

  int64_t count() const { return count_; }
  ResidentShape shape() const { return shape_; }
  int64_t bytes() const { return count_ * shape_.item(); }
  int device() const { return device_; }         // the GPU that holds the images
  const uint8_t* data() const { return data_; }  // device memory, [count, H, W, C]

  // Overwrites x[r · item + j] = gather_element(data(), shape(), index_of_row, r · item + j)
  // for r < rows, j < item: row r is image index_of_row[r], channel-first, through
  // resident_pixel. index_of_row (rows entries, each in [0, count()): not checked on the device)
  // and x (rows · item floats) are device memory of device(). Asynchronous on `stream` (null:
  // the legacy default stream), launch checked; rows = 0 launches nothing.
  void gather_rows(const int64_t* index_of_row, int64_t rows, float* x,
                   CUstream_st* stream) const override;

 private:
  uint8_t* data_ = nullptr;
  int64_t count_ = 0;
  ResidentShape shape_;
  int device_ = -1;
};

}  // namespace mt
