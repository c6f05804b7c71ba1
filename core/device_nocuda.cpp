// Device queries of the CPU-only build: no CUDA backend, hence never a GPU.
#include "core/check.h"
#include "core/device.h"

namespace mt {

int gpu_count() { return 0; }

std::vector<GpuInfo> list_gpus() { return {}; }

bool cuda_built() { return false; }

void select_gpu(int) {
  MT_REQUIRE(false,
             "device=cuda requested, but this binary was built without CUDA: set "
             "device=cpu, or rebuild with nvcc on the PATH (cmake -DMT_ENABLE_CUDA=ON)");
}

size_t gpu_memory_used() { return 0; }

std::string describe_devices() { return "CUDA not built (CPU-only binary), 0 GPUs"; }

std::string cuda_versions() { return "CUDA not built"; }

std::string no_gpu_reason() { return "this binary was built without CUDA (a CPU-only build)"; }

}  // namespace mt
