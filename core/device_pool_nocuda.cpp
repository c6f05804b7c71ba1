// DevicePool of the CPU-only build: there is no device memory, so constructing a pool is a
// usage error that names the setting to change.
#include "core/check.h"
#include "core/device_pool.h"

namespace mt {

DevicePool::DevicePool(size_t capacity_bytes) : arithmetic_(capacity_bytes) {
  MT_REQUIRE(false, "device=cuda requested (a device memory pool of ", capacity_bytes,
             " bytes), but this binary was built without CUDA: set device=cpu, or rebuild "
             "with nvcc on the PATH (cmake -DMT_ENABLE_CUDA=ON)");
}

DevicePool::~DevicePool() = default;

void* DevicePool::allocate(size_t) {
  MT_REQUIRE(false, "device=cuda: no device memory pool in a CPU-only build");
  return nullptr;
}

void throw_device_out_of_memory(const std::string& what, size_t asked) {
  throw UsageError(detail::concat("device=cuda: ", what, " of ", asked,
                                  " bytes asked of a CPU-only build; set device=cpu"));
}

}  // namespace mt
