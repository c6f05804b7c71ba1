// CUDA Linear forward (cuBLAS) against the CPU Linear<float>, plus the device queries of the
// CUDA build. GPU cases skip with the reason when no GPU is usable; built only with CUDA.
#include "models/linear_cuda.h"

#include <dlfcn.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/cuda_check.h"
#include "core/device.h"
#include "core/rng.h"
#include "models/linear.h"

namespace mt {
namespace {

TEST(DeviceCuda, QueriesAnswerWithoutAGpu) {
  EXPECT_TRUE(cuda_built());
  const int n = gpu_count();
  EXPECT_GE(n, 0);
  EXPECT_EQ(static_cast<int>(list_gpus().size()), n);
  const std::string line = describe_devices();
  EXPECT_EQ(line.rfind("CUDA built, ", 0), 0u) << line;
  if (n == 0) {
    // The reason in plain words, also in the line; no driver at all is named as such, not as
    // the runtime's "insufficient driver".
    const std::string why = no_gpu_reason();
    EXPECT_FALSE(why.empty());
    EXPECT_NE(line.find(why), std::string::npos) << line;
    if (void* driver = dlopen("libcuda.so.1", RTLD_LAZY)) {
      dlclose(driver);
    } else {
      EXPECT_EQ(why.rfind("no NVIDIA driver", 0), 0u) << why;
    }
    try {
      select_gpu(0);
      ADD_FAILURE() << "select_gpu succeeded without a GPU";
    } catch (const UsageError& e) {
      const std::string m = e.what();
      EXPECT_EQ(m.rfind("device=cuda, but " + why, 0), 0u) << m;
      EXPECT_NE(m.find("set device=cpu"), std::string::npos) << m;
    }
  } else {
    EXPECT_EQ(no_gpu_reason(), "");
  }
}

std::string message_of(void (*f)()) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ExitCode::kRuntime);
    return e.what();
  }
  ADD_FAILURE() << "no mt::Error thrown";
  return "";
}

TEST(CudaCheck, ErrorsNameLocationExpressionAndLibraryMessage) {
  const std::string cuda = message_of([] { MT_CUDA_CHECK(cudaErrorInvalidValue); });
  EXPECT_NE(cuda.find("linear_cuda_test.cpp:"), std::string::npos) << cuda;
  EXPECT_NE(cuda.find("`cudaErrorInvalidValue`"), std::string::npos) << cuda;
  EXPECT_NE(cuda.find("invalid argument"), std::string::npos) << cuda;
  const std::string cublas = message_of([] { MT_CUBLAS_CHECK(CUBLAS_STATUS_NOT_INITIALIZED); });
  EXPECT_NE(cublas.find("cuBLAS"), std::string::npos) << cublas;
  EXPECT_NE(cublas.find(cublasGetStatusString(CUBLAS_STATUS_NOT_INITIALIZED)), std::string::npos)
      << cublas;
  EXPECT_NO_THROW(MT_CUDA_CHECK(cudaSuccess));
  DeviceBuffer<float> empty(0);
  EXPECT_EQ(empty.data(), nullptr);
  EXPECT_THROW(empty.copy_from_host(nullptr, 1), Error);
}

TEST(DeviceCuda, SelectsAndListsGpus) {
  if (gpu_count() == 0) GTEST_SKIP() << "no GPU: " << describe_devices();
  for (const GpuInfo& g : list_gpus()) {
    EXPECT_FALSE(g.name.empty());
    EXPECT_GT(g.total_memory, 0u);
    EXPECT_GE(g.sm_major, 1);
    EXPECT_GT(g.multiprocessors, 0);
  }
  select_gpu(gpu_count());  // wraps around to GPU 0
  int current = -1;
  MT_CUDA_CHECK(cudaGetDevice(&current));
  EXPECT_EQ(current, 0);
}

TEST(LinearCuda, ForwardMatchesCpu) {
  if (gpu_count() == 0) GTEST_SKIP() << "no GPU: " << describe_devices();
  select_gpu(0);
  const int m = 37, in = 150, out = 21;
  Rng rng(7, 0, 0, Stream::kTest);
  std::vector<float> x(static_cast<size_t>(m) * in), W(static_cast<size_t>(out) * in + out);
  for (float& v : x) v = static_cast<float>(rng.uniform(-1, 1));
  for (float& v : W) v = static_cast<float>(rng.uniform(-1, 1));  // nonzero bias included

  Linear<float> cpu(Shape{in, 1, 1}, out);
  LayerContext<float> ctx;
  std::vector<float> y_cpu(static_cast<size_t>(m) * out);
  cpu.forward(m, W.data(), x.data(), y_cpu.data(), ctx);

  DeviceBuffer<float> dW(W.size()), dx(x.size()), dy(y_cpu.size());
  dW.copy_from_host(W.data(), W.size());
  dx.copy_from_host(x.data(), x.size());
  const float poison = std::nanf("");
  std::vector<float> y_gpu(y_cpu.size(), poison);
  dy.copy_from_host(y_gpu.data(), y_gpu.size());  // forward must overwrite every entry
  LinearCuda gpu(in, out);
  gpu.forward(m, dW.data(), dx.data(), dy.data());
  dy.copy_to_host(y_gpu.data(), y_gpu.size());

  // Both sides are FP32 dot products of K = 150 terms summed in different orders (OpenBLAS
  // vs cuBLAS tiling); with |x|, |W| <= 1 the rounding differences stay around
  // sqrt(K) * 2^-24 * |y|, well inside 1e-5 relative to the largest output.
  float max_abs_y = 0, max_diff = 0;
  for (size_t k = 0; k < y_cpu.size(); ++k) {
    ASSERT_TRUE(std::isfinite(y_gpu[k])) << "entry " << k << " not written";
    max_abs_y = std::max(max_abs_y, std::fabs(y_cpu[k]));
    max_diff = std::max(max_diff, std::fabs(y_cpu[k] - y_gpu[k]));
  }
  EXPECT_GT(max_abs_y, 1.0f);
  EXPECT_LE(max_diff, 1e-5f * (1.0f + max_abs_y)) << "max |y| = " << max_abs_y;
}

}  // namespace
}  // namespace mt
