// DeviceImages of the CPU-only build (data/resident_images.h): there is no GPU to hold images.
#include "core/check.h"
#include "data/resident_images.h"

namespace mt {

int64_t current_gpu_free_bytes(std::string* why_not) {
  if (why_not) *why_not = "this binary was built without CUDA";
  return -1;
}

DeviceImages::DeviceImages(const uint8_t*, int64_t, ResidentShape) {
  throw UsageError(
      "data.resident = device needs the CUDA backend, but this binary was built without CUDA: "
      "set data.resident = host, auto or off, or rebuild with nvcc on the PATH");
}

DeviceImages::~DeviceImages() = default;

void DeviceImages::gather_rows(const int64_t*, int64_t, float*, CUstream_st*) const {
  MT_CHECK(false, "DeviceImages::gather_rows in a CPU-only build");
}

}  // namespace mt
