// Which GPUs this process can use, and binding a rank to one of them (DESIGN §5). The CUDA
// build answers from the CUDA runtime (device_cuda.cpp); the CPU-only build answers "no GPU"
// (device_nocuda.cpp), so callers never need an #ifdef.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace mt {

struct GpuInfo {
  int index = 0;
  std::string name;
  size_t total_memory = 0;  // bytes
  int sm_major = 0, sm_minor = 0;
  int multiprocessors = 0;
};

// Number of visible GPUs: 0 without the CUDA backend, and 0 whenever cudaGetDeviceCount fails
// for any reason (no driver, no device, driver too old): any error means "no GPU".
int gpu_count();
std::vector<GpuInfo> list_gpus();
// Whether this binary was built with the CUDA backend.
bool cuda_built();
// Makes GPU local_rank % gpu_count() current for the calling thread. Throws mt::UsageError
// when no GPU is visible or the binary has no CUDA backend.
void select_gpu(int local_rank);
// Bytes of the current GPU's memory in use (total − free, all processes), 0 without a GPU.
size_t gpu_memory_used();
// One line for logs: the backend and the visible GPUs, or why there are none.
std::string describe_devices();
// Why no GPU is usable, in plain words ("" when one is): no CUDA in this binary, no NVIDIA
// driver on the machine, a driver that sees no GPU (CUDA_VISIBLE_DEVICES named when set), or a
// driver older than this build's CUDA runtime (both versions named).
std::string no_gpu_reason();
// The CUDA stack this process runs on, for the start-up line: "CUDA runtime 13.0, driver 13.0,
// cuBLAS 13.0.2" (each part says why when it cannot be queried); "CUDA not built" otherwise.
std::string cuda_versions();

}  // namespace mt
