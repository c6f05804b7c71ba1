// Device queries of the CUDA build, from the CUDA runtime. A failing cudaGetDeviceCount (no
// driver, no device, driver older than the runtime) is reported as zero GPUs, never thrown.
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>

#include "core/cuda_check.h"
#include "core/device.h"

namespace mt {

namespace {
// The device count and the error that explains a count of zero (cudaSuccess otherwise).
int query_count(cudaError_t* error) {
  int n = 0;
  *error = cudaGetDeviceCount(&n);
  if (*error != cudaSuccess) {
    cudaGetLastError();  // the failed query must not surface at the next checked call
    return 0;
  }
  return n;
}
}  // namespace

int gpu_count() {
  cudaError_t error;
  return query_count(&error);
}

std::vector<GpuInfo> list_gpus() {
  std::vector<GpuInfo> gpus;
  const int n = gpu_count();
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp prop{};
    MT_CUDA_CHECK(cudaGetDeviceProperties(&prop, i));
    gpus.push_back(GpuInfo{i, prop.name, prop.totalGlobalMem, prop.major, prop.minor,
                           prop.multiProcessorCount});
  }
  return gpus;
}

bool cuda_built() { return true; }

void select_gpu(int local_rank) {
  MT_CHECK(local_rank >= 0, "local rank ", local_rank);
  const int n = gpu_count();
  MT_REQUIRE(n > 0, "device=cuda, but ", no_gpu_reason(),
             ": run on a node with an NVIDIA GPU and its driver, or set device=cpu");
  MT_CUDA_CHECK(cudaSetDevice(local_rank % n));
}

size_t gpu_memory_used() {
  if (gpu_count() == 0) return 0;
  size_t free_bytes = 0, total = 0;
  MT_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total));
  return total - free_bytes;
}

std::string describe_devices() {
  cudaError_t error;
  const int n = query_count(&error);
  if (n == 0) return detail::concat("CUDA built, 0 GPUs usable: ", no_gpu_reason());
  std::string line = detail::concat("CUDA built, ", n, n == 1 ? " GPU" : " GPUs", " visible:");
  for (const GpuInfo& g : list_gpus()) {
    char memory[32];
    std::snprintf(memory, sizeof memory, "%.1f GiB", g.total_memory / 1073741824.0);
    line += detail::concat(g.index == 0 ? " " : ", ", "[", g.index, "] ", g.name, " (sm_",
                           g.sm_major, g.sm_minor, ", ", g.multiprocessors, " SMs, ", memory, ")");
  }
  return line;
}

namespace {
std::string cuda_version_text(int v) { return detail::concat(v / 1000, ".", v % 1000 / 10); }
}  // namespace

std::string no_gpu_reason() {
  cudaError_t error;
  if (query_count(&error) > 0) return "";
  // The runtime reports a missing driver as "insufficient driver": ask the loader first.
  void* driver = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
  if (!driver)
    return "no NVIDIA driver is installed or loaded here (libcuda.so.1 cannot be loaded)";
  dlclose(driver);
  int runtime = 0, version = 0;
  cudaRuntimeGetVersion(&runtime);
  cudaDriverGetVersion(&version);
  if (error == cudaErrorInsufficientDriver)
    return detail::concat("the NVIDIA driver supports CUDA ", cuda_version_text(version),
                          ", older than this build's CUDA runtime ", cuda_version_text(runtime),
                          ": update the driver");
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  if (error == cudaErrorNoDevice || error == cudaSuccess)
    return detail::concat("the NVIDIA driver sees no GPU",
                          visible ? detail::concat(" (CUDA_VISIBLE_DEVICES=", visible, ")") : "");
  return detail::concat(
      "the CUDA runtime cannot use a GPU (cudaGetDeviceCount: ", detail::cuda_message(error), ")");
}

std::string cuda_versions() {
  int runtime = 0, driver = 0;
  const cudaError_t r = cudaRuntimeGetVersion(&runtime);
  const cudaError_t d = cudaDriverGetVersion(&driver);
  int major = 0, minor = 0, patch = 0;
  const bool blas = cublasGetProperty(MAJOR_VERSION, &major) == CUBLAS_STATUS_SUCCESS &&
                    cublasGetProperty(MINOR_VERSION, &minor) == CUBLAS_STATUS_SUCCESS &&
                    cublasGetProperty(PATCH_LEVEL, &patch) == CUBLAS_STATUS_SUCCESS;
  return detail::concat(
      "CUDA runtime ", r == cudaSuccess ? cuda_version_text(runtime) : detail::cuda_message(r),
      ", driver ",
      d == cudaSuccess ? (driver ? cuda_version_text(driver) : "none") : detail::cuda_message(d),
      ", cuBLAS ", blas ? detail::concat(major, ".", minor, ".", patch) : "unknown");
}

}  // namespace mt
