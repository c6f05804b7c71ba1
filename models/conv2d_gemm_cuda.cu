// The GEMM form of the task-batched conv (models/conv2d_batched.h): im2col / col2im / layout
// kernels over the MT_HD bodies of conv2d_batched_index.h and one batch-invariant GEMM
// (run_gemm_call_pinned, batch = tasks, FP32) per product; plus BatchedConv2dCuda itself, which
// dispatches every pass to this form or the cuDNN one (conv2d_cudnn.cu) and, with cuda.tune,
// times both.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <sstream>

#include "core/check.h"
#include "core/cuda_check.h"
#include "models/conv2d_batched.h"

namespace mt {

const char* conv_form_name(ConvForm form) {
  return form == ConvForm::kGemm ? "gemm" : "cudnn_grouped";
}

const char* conv_pass_name(ConvPass pass) {
  switch (pass) {
    case ConvPass::kForward:
      return "forward";
    case ConvPass::kBackwardData:
      return "backward_data";
    case ConvPass::kBackwardFilter:
      return "backward_filter";
    case ConvPass::kRForward:
      return "r_forward";
    case ConvPass::kRBackward:
      return "r_backward";
  }
  return "?";
}

namespace {

constexpr int kThreads = 256;

int blocks_for(int64_t n) {
  return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, 65535));
}

__global__ void im2col_kernel(BatchedConvGeom g, int n, int64_t size, const float* __restrict__ x,
                              float* __restrict__ col) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < size;
       e += step) {
    const int64_t src = im2col_source(g, n, e);
    col[e] = src < 0 ? 0.0f : x[src];
  }
}

__global__ void col2im_kernel(BatchedConvGeom g, int n, int64_t size, const float* __restrict__ col,
                              float* __restrict__ x) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < size; e += step)
    x[e] = col2im_sum(g, n, col, e);
}

__global__ void to_gemm_kernel(int tasks, int channels, int n, int64_t P, int64_t size,
                               const float* __restrict__ act, float* __restrict__ gm) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < size; e += step)
    gm[gemm_layout_index(tasks, channels, n, P, e)] = act[e];
}

__global__ void from_gemm_kernel(int tasks, int channels, int n, int64_t P, int64_t size,
                                 const float* __restrict__ gm, float* __restrict__ act) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < size; e += step)
    act[e] = gm[gemm_layout_index(tasks, channels, n, P, e)];
}

// Deterministic values in [-1, 1) for tune()'s buffers.
__global__ void fill_pattern_kernel(int64_t size, uint32_t seed, float* __restrict__ p) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < size;
       e += step) {
    uint32_t h = static_cast<uint32_t>(e) * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    p[e] = static_cast<float>(h & 0xffffu) / 32768.0f - 1.0f;
  }
}

// The executor of conv2d_batched_index.h's pass sequences on one stream.
struct CudaGemmExec {
  cudaStream_t stream;

  void im2col(const BatchedConvGeom& g, int n, const float* x, float* col) const {
    const int64_t size = g.col_size(n);
    if (size == 0) return;
    im2col_kernel<<<blocks_for(size), kThreads, 0, stream>>>(g, n, size, x, col);
    MT_CUDA_CHECK_LAUNCH();
  }
  void col2im(const BatchedConvGeom& g, int n, const float* col, float* x) const {
    const int64_t size = g.in_size(n);
    if (size == 0) return;
    col2im_kernel<<<blocks_for(size), kThreads, 0, stream>>>(g, n, size, col, x);
    MT_CUDA_CHECK_LAUNCH();
  }
  void to_gemm(int tasks, int channels, int n, int64_t P, const float* act, float* gm) const {
    const int64_t size = static_cast<int64_t>(n) * tasks * channels * P;
    if (size == 0) return;
    to_gemm_kernel<<<blocks_for(size), kThreads, 0, stream>>>(tasks, channels, n, P, size, act, gm);
    MT_CUDA_CHECK_LAUNCH();
  }
  void from_gemm(int tasks, int channels, int n, int64_t P, const float* gm, float* act) const {
    const int64_t size = static_cast<int64_t>(n) * tasks * channels * P;
    if (size == 0) return;
    from_gemm_kernel<<<blocks_for(size), kThreads, 0, stream>>>(tasks, channels, n, P, size, gm,
                                                                act);
    MT_CUDA_CHECK_LAUNCH();
  }
  void gemm(const GemmCall& call, const float* A, const float* B, float* C) const {
    run_gemm_call_pinned(call, A, B, C, stream);
  }
};

}  // namespace

struct BatchedConv2dCuda::Impl {
  BatchedConvGeom g;  // at max_tasks
  int max_n;
  ConvGemmWorkspace<float> ws;  // bound by bind()
  bool bound = false;
  // The cuDNN form, or null when no handle was given or cuDNN offers no usable algorithm for
  // this geometry (then every pass uses the GEMM form and cudnn_missing says why).
  std::unique_ptr<detail::CudnnGroupedConv> cudnn;
  std::string cudnn_missing;
  ConvForm forms[kConvPassCount];
  float ms[kConvPassCount][2];  // tune()'s time per call: [pass][form], < 0 before tune()
  int tuned_n = 0;

  Impl(const BatchedConvGeom& geom, int n_max, ConvForm form, cudnnContext* handle)
      : g(geom), max_n(n_max) {
    if (handle) {
      try {
        cudnn = std::make_unique<detail::CudnnGroupedConv>(handle, geom, n_max);
      } catch (const Error& e) {
        if (e.code() != ExitCode::kRuntime || form == ConvForm::kCudnnGrouped) throw;
        cudnn_missing = e.what();
      }
    } else {
      cudnn_missing = "no cuDNN handle (cuda.conv=gemm without cuda.tune)";
      MT_CHECK(form == ConvForm::kGemm, "the cuDNN form needs a cuDNN handle");
    }
    for (int p = 0; p < kConvPassCount; ++p) {
      forms[p] = form;
      ms[p][0] = ms[p][1] = -1.0f;
    }
  }

  ConvForm form(ConvPass p) const { return forms[static_cast<int>(p)]; }
  // The geometry of a call of `tasks` tasks of n examples, checked against the plan.
  BatchedConvGeom at(int tasks, int n) const {
    MT_CHECK(bound, "batched conv: bind() its workspaces before the first pass");
    MT_CHECK(n >= 1 && n <= max_n, "batched conv: n = ", n, " outside [1, ", max_n, "]");
    MT_CHECK(tasks >= 1 && tasks <= g.tasks, "batched conv: ", tasks, " tasks outside [1, ",
             g.tasks, "]");
    return g.at_tasks(tasks);
  }
};

BatchedConv2dCuda::BatchedConv2dCuda(Shape in, int out_channels, int stride, int max_tasks,
                                     int max_n, ConvForm form, cudnnContext* cudnn, int kernel) {
  const BatchedConvGeom g = make_batched_conv_geom(in, out_channels, stride, max_tasks, kernel);
  MT_CHECK(max_n >= 1, "batched conv needs max_n >= 1, got ", max_n);
  impl_ = std::make_unique<Impl>(g, max_n, form, cudnn);
}

BatchedConv2dCuda::~BatchedConv2dCuda() = default;

const BatchedConvGeom& BatchedConv2dCuda::geom() const { return impl_->g; }
int BatchedConv2dCuda::max_n() const { return impl_->max_n; }

ConvWorkspaceNeed BatchedConv2dCuda::need() const {
  const Impl& m = *impl_;
  return {m.g.col_size(m.max_n), m.g.out_size(m.max_n), m.cudnn ? m.cudnn->workspace_bytes() : 0};
}

void BatchedConv2dCuda::bind(const ConvGemmWorkspace<float>& gemm, void* cudnn_workspace) {
  Impl& m = *impl_;
  MT_CHECK(gemm.col && gemm.gy && gemm.R_gy, "batched conv: null GEMM workspace");
  m.ws = gemm;
  if (m.cudnn) m.cudnn->bind(cudnn_workspace);
  m.bound = true;
}

void BatchedConv2dCuda::set_form(ConvPass pass, ConvForm form) {
  MT_CHECK(form == ConvForm::kGemm || impl_->cudnn,
           "the cuDNN form is unavailable here: ", impl_->cudnn_missing);
  impl_->forms[static_cast<int>(pass)] = form;
}
ConvForm BatchedConv2dCuda::form(ConvPass pass) const { return impl_->form(pass); }

void BatchedConv2dCuda::forward(int tasks, int n, const float* W, const float* x, float* y,
                                CUstream_st* stream) {
  Impl& m = *impl_;
  const BatchedConvGeom g = m.at(tasks, n);
  MT_CHECK(W && x && y, "batched conv forward: null device pointer");
  if (m.form(ConvPass::kForward) == ConvForm::kCudnnGrouped) {
    m.cudnn->forward(tasks, n, W, x, y, 0.0f, stream);
  } else {
    CudaGemmExec ex{stream};
    conv_gemm_forward(ex, g, n, W, x, y, m.ws);
  }
}

void BatchedConv2dCuda::backward_data(int tasks, int n, const float* W, const float* dy, float* dx,
                                      CUstream_st* stream) {
  Impl& m = *impl_;
  const BatchedConvGeom g = m.at(tasks, n);
  MT_CHECK(W && dy && dx, "batched conv backward data: null device pointer");
  if (m.form(ConvPass::kBackwardData) == ConvForm::kCudnnGrouped) {
    m.cudnn->backward_data(tasks, n, W, dy, dx, 0.0f, stream);
  } else {
    CudaGemmExec ex{stream};
    conv_gemm_backward_data(ex, g, n, W, dy, dx, m.ws);
  }
}

void BatchedConv2dCuda::backward_filter(int tasks, int n, const float* x, const float* dy,
                                        float* dW, CUstream_st* stream) {
  Impl& m = *impl_;
  const BatchedConvGeom g = m.at(tasks, n);
  MT_CHECK(x && dy && dW, "batched conv backward filter: null device pointer");
  if (m.form(ConvPass::kBackwardFilter) == ConvForm::kCudnnGrouped) {
    m.cudnn->backward_filter(tasks, n, x, dy, dW, 0.0f, stream);
  } else {
    CudaGemmExec ex{stream};
    conv_gemm_backward_filter(ex, g, n, x, dy, dW, m.ws);
  }
}

void BatchedConv2dCuda::backward(int tasks, int n, const float* W, const float* x, const float* dy,
                                 float* dx, float* dW, CUstream_st* stream) {
  backward_filter(tasks, n, x, dy, dW, stream);
  if (dx) backward_data(tasks, n, W, dy, dx, stream);
}

void BatchedConv2dCuda::r_forward(int tasks, int n, const float* W, const float* R_W,
                                  const float* x, const float* R_x, float* R_y,
                                  CUstream_st* stream) {
  Impl& m = *impl_;
  const BatchedConvGeom g = m.at(tasks, n);
  MT_CHECK(W && R_W && x && R_y, "batched conv r_forward: null device pointer");
  if (m.form(ConvPass::kRForward) == ConvForm::kCudnnGrouped) {
    m.cudnn->forward(tasks, n, R_W, x, R_y, 0.0f, stream);
    if (R_x) m.cudnn->forward(tasks, n, W, R_x, R_y, 1.0f, stream);
  } else {
    CudaGemmExec ex{stream};
    conv_gemm_r_forward(ex, g, n, W, R_W, x, R_x, R_y, m.ws);
  }
}

void BatchedConv2dCuda::r_backward(int tasks, int n, const float* W, const float* R_W,
                                   const float* x, const float* R_x, const float* dy,
                                   const float* R_dy, float* R_dx, float* R_dW,
                                   CUstream_st* stream) {
  Impl& m = *impl_;
  const BatchedConvGeom g = m.at(tasks, n);
  MT_CHECK(W && R_W && x && dy && R_dy && R_dW, "batched conv r_backward: null device pointer");
  if (m.form(ConvPass::kRBackward) == ConvForm::kCudnnGrouped) {
    m.cudnn->backward_filter(tasks, n, x, R_dy, R_dW, 0.0f, stream);
    if (R_x) m.cudnn->backward_filter(tasks, n, R_x, dy, R_dW, 1.0f, stream);
    if (R_dx) {
      m.cudnn->backward_data(tasks, n, R_W, dy, R_dx, 0.0f, stream);
      m.cudnn->backward_data(tasks, n, W, R_dy, R_dx, 1.0f, stream);
    }
  } else {
    CudaGemmExec ex{stream};
    conv_gemm_r_backward(ex, g, n, W, R_W, x, R_x, dy, R_dy, R_dx, R_dW, m.ws);
  }
}

void BatchedConv2dCuda::tune(int n, CUstream_st* stream, int repeats) {
  Impl& m = *impl_;
  const int T = m.g.tasks;
  m.at(T, n);
  MT_CHECK(repeats >= 1, "tune needs repeats >= 1, got ", repeats);
  const BatchedConvGeom& g = m.g;
  DeviceBuffer<float> x(g.in_size(n)), R_x(g.in_size(n)), dx(g.in_size(n));
  DeviceBuffer<float> y(g.out_size(n)), dy(g.out_size(n)), R_dy(g.out_size(n));
  DeviceBuffer<float> W(g.weight_size()), R_W(g.weight_size()), dW(g.weight_size());
  uint32_t seed = 1;
  for (DeviceBuffer<float>* b : {&x, &R_x, &dy, &R_dy, &W, &R_W}) {
    fill_pattern_kernel<<<blocks_for(b->size()), kThreads, 0, stream>>>(
        static_cast<int64_t>(b->size()), 0x9e3779b9u * seed++, b->data());
    MT_CUDA_CHECK_LAUNCH();
  }

  auto run = [&](ConvPass pass) {
    switch (pass) {
      case ConvPass::kForward:
        forward(T, n, W.data(), x.data(), y.data(), stream);
        break;
      case ConvPass::kBackwardData:
        backward_data(T, n, W.data(), dy.data(), dx.data(), stream);
        break;
      case ConvPass::kBackwardFilter:
        backward_filter(T, n, x.data(), dy.data(), dW.data(), stream);
        break;
      case ConvPass::kRForward:
        r_forward(T, n, W.data(), R_W.data(), x.data(), R_x.data(), y.data(), stream);
        break;
      case ConvPass::kRBackward:
        r_backward(T, n, W.data(), R_W.data(), x.data(), R_x.data(), dy.data(), R_dy.data(),
                   dx.data(), dW.data(), stream);
        break;
    }
  };

  cudaEvent_t start = nullptr, stop = nullptr;
  MT_CUDA_CHECK(cudaEventCreate(&start));
  const cudaError_t created = cudaEventCreate(&stop);
  if (created != cudaSuccess) cudaEventDestroy(start);
  MT_CUDA_CHECK(created);
  try {
    for (int p = 0; p < kConvPassCount; ++p) {
      const ConvPass pass = static_cast<ConvPass>(p);
      for (int f = m.cudnn ? 0 : 1; f < 2; ++f) {
        m.forms[p] = f == 0 ? ConvForm::kCudnnGrouped : ConvForm::kGemm;
        run(pass);  // warm-up
        MT_CUDA_CHECK(cudaEventRecord(start, stream));
        for (int r = 0; r < repeats; ++r) run(pass);
        MT_CUDA_CHECK(cudaEventRecord(stop, stream));
        MT_CUDA_CHECK(cudaEventSynchronize(stop));
        float total = 0;
        MT_CUDA_CHECK(cudaEventElapsedTime(&total, start, stop));
        m.ms[p][f] = total / repeats;
      }
      m.forms[p] = !m.cudnn || m.ms[p][1] < m.ms[p][0] ? ConvForm::kGemm : ConvForm::kCudnnGrouped;
    }
  } catch (...) {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    throw;
  }
  MT_CUDA_CHECK(cudaEventDestroy(start));
  MT_CUDA_CHECK(cudaEventDestroy(stop));
  m.tuned_n = n;
}

std::string BatchedConv2dCuda::describe() const {
  const Impl& m = *impl_;
  const BatchedConvGeom& g = m.g;
  std::ostringstream s;
  s << "batched conv, up to T=" << g.tasks << " [" << g.in_c << "," << g.in_h << "," << g.in_w
    << "]->[" << g.out_c << "," << g.out_h << "," << g.out_w << "] stride " << g.stride << " max_n "
    << m.max_n << ":";
  for (int p = 0; p < kConvPassCount; ++p) {
    s << " " << conv_pass_name(static_cast<ConvPass>(p)) << "=" << conv_form_name(m.forms[p]);
    if (m.ms[p][1] >= 0)
      s << " (cudnn " << m.ms[p][0] << " ms, gemm " << m.ms[p][1] << " ms at n=" << m.tuned_n
        << ")";
    s << ";";
  }
  s << " " << (m.cudnn ? m.cudnn->describe() : "cuDNN form unavailable: " + m.cudnn_missing);
  return s.str();
}

}  // namespace mt
