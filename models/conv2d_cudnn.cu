// The cuDNN form of the task-batched conv (models/conv2d_batched.h), and the only file of the
// project's convolutions that calls cuDNN: one grouped convolution (group t = task t) with FMA
// math, deterministic algorithms found by cudnnFind*AlgorithmEx, workspace preallocated.
#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/cuda_check.h"
#include "models/conv2d_batched.h"

namespace mt {
namespace detail {

namespace {

const char* fwd_algo_name(cudnnConvolutionFwdAlgo_t a) {
  switch (a) {
    case CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM:
      return "IMPLICIT_GEMM";
    case CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM:
      return "IMPLICIT_PRECOMP_GEMM";
    case CUDNN_CONVOLUTION_FWD_ALGO_GEMM:
      return "GEMM";
    case CUDNN_CONVOLUTION_FWD_ALGO_DIRECT:
      return "DIRECT";
    case CUDNN_CONVOLUTION_FWD_ALGO_FFT:
      return "FFT";
    case CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING:
      return "FFT_TILING";
    case CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD:
      return "WINOGRAD";
    case CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED:
      return "WINOGRAD_NONFUSED";
    default:
      return "?";
  }
}

const char* bwd_data_algo_name(cudnnConvolutionBwdDataAlgo_t a) {
  switch (a) {
    case CUDNN_CONVOLUTION_BWD_DATA_ALGO_0:
      return "ALGO_0";
    case CUDNN_CONVOLUTION_BWD_DATA_ALGO_1:
      return "ALGO_1";
    case CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT:
      return "FFT";
    case CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING:
      return "FFT_TILING";
    case CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD:
      return "WINOGRAD";
    case CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED:
      return "WINOGRAD_NONFUSED";
    default:
      return "?";
  }
}

const char* bwd_filter_algo_name(cudnnConvolutionBwdFilterAlgo_t a) {
  switch (a) {
    case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0:
      return "ALGO_0";
    case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1:
      return "ALGO_1";
    case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT:
      return "FFT";
    case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3:
      return "ALGO_3";
    case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD:
      return "WINOGRAD";
    case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED:
      return "WINOGRAD_NONFUSED";
    case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING:
      return "FFT_TILING";
    default:
      return "?";
  }
}

// Known non-deterministic algorithms, refused even if a cuDNN version reported otherwise.
bool forbidden(cudnnConvolutionFwdAlgo_t) { return false; }
bool forbidden(cudnnConvolutionBwdDataAlgo_t a) { return a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_0; }
bool forbidden(cudnnConvolutionBwdFilterAlgo_t a) {
  return a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0 || a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3;
}

// The fastest result (Find sorts by time) that succeeded, is deterministic and uses FMA math.
// Without one, the error lists every candidate so that the cause shows in the log.
template <typename Perf>
auto pick(const std::vector<Perf>& results, int count, const char* what) -> decltype(Perf{}.algo) {
  std::string seen;
  for (int i = 0; i < count; ++i) {
    const Perf& r = results[i];
    if (r.status == CUDNN_STATUS_SUCCESS && r.determinism == CUDNN_DETERMINISTIC &&
        r.mathType == CUDNN_FMA_MATH && !forbidden(r.algo))
      return r.algo;
    seen += concat(" [algo ", static_cast<int>(r.algo), " status ", cudnnGetErrorString(r.status),
                   " deterministic ", r.determinism == CUDNN_DETERMINISTIC ? "yes" : "no", " math ",
                   static_cast<int>(r.mathType), "]");
  }
  throw Error(ExitCode::kRuntime,
              concat("cuDNN offers no deterministic FMA-math algorithm for the grouped ", what,
                     "; candidates:", seen, "; use the GEMM form for this pass"));
}

}  // namespace

struct CudnnGroupedConv::Impl {
  BatchedConvGeom g;
  int max_n = 0;
  int current_n = 0;  // n the tensor descriptors describe
  cudnnHandle_t handle = nullptr;
  cudnnTensorDescriptor_t x_desc = nullptr, y_desc = nullptr;
  cudnnFilterDescriptor_t w_desc = nullptr;
  cudnnConvolutionDescriptor_t conv_desc = nullptr;
  cudnnConvolutionFwdAlgo_t fwd_algo = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM;
  cudnnConvolutionBwdDataAlgo_t bwd_data_algo = CUDNN_CONVOLUTION_BWD_DATA_ALGO_1;
  cudnnConvolutionBwdFilterAlgo_t bwd_filter_algo = CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1;
  DeviceBuffer<char> workspace;
  size_t workspace_bytes = 0;

  Impl(const BatchedConvGeom& geom, int n_max) : g(geom), max_n(n_max) {
    try {
      create();
      find_algorithms();
    } catch (...) {
      destroy();
      throw;
    }
  }
  ~Impl() { destroy(); }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  void create() {
    MT_CUDNN_CHECK(cudnnCreate(&handle));
    MT_CUDNN_CHECK(cudnnCreateTensorDescriptor(&x_desc));
    MT_CUDNN_CHECK(cudnnCreateTensorDescriptor(&y_desc));
    MT_CUDNN_CHECK(cudnnCreateFilterDescriptor(&w_desc));
    MT_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&conv_desc));
    // Grouped filter: T·O output rows of C input channels each (C per group).
    MT_CUDNN_CHECK(cudnnSetFilter4dDescriptor(w_desc, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW,
                                              g.tasks * g.out_c, g.in_c, 3, 3));
    MT_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(conv_desc, 1, 1, g.stride, g.stride, 1, 1,
                                                   CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    MT_CUDNN_CHECK(cudnnSetConvolutionGroupCount(conv_desc, g.tasks));
    MT_CUDNN_CHECK(cudnnSetConvolutionMathType(conv_desc, CUDNN_FMA_MATH));
    set_n(max_n);
    int n = 0, c = 0, h = 0, w = 0;
    MT_CUDNN_CHECK(
        cudnnGetConvolution2dForwardOutputDim(conv_desc, x_desc, w_desc, &n, &c, &h, &w));
    MT_CHECK(n == max_n && c == g.tasks * g.out_c && h == g.out_h && w == g.out_w,
             "cuDNN's grouped conv output ", n, "x", c, "x", h, "x", w, " differs from ", max_n,
             "x", g.tasks * g.out_c, "x", g.out_h, "x", g.out_w);
  }

  void destroy() noexcept {
    auto report = [](cudnnStatus_t s, const char* what) {
      if (s != CUDNN_STATUS_SUCCESS)
        std::fprintf(stderr, "mt::CudnnGroupedConv: %s failed: %s\n", what, cudnnGetErrorString(s));
    };
    if (conv_desc) report(cudnnDestroyConvolutionDescriptor(conv_desc), "destroy conv desc");
    if (w_desc) report(cudnnDestroyFilterDescriptor(w_desc), "destroy filter desc");
    if (y_desc) report(cudnnDestroyTensorDescriptor(y_desc), "destroy y desc");
    if (x_desc) report(cudnnDestroyTensorDescriptor(x_desc), "destroy x desc");
    if (handle) report(cudnnDestroy(handle), "cudnnDestroy");
    conv_desc = nullptr;
    w_desc = nullptr;
    x_desc = y_desc = nullptr;
    handle = nullptr;
  }

  // Host-side only (no allocation, capturable): x [n, T·C, H, W], y [n, T·O, H_out, W_out].
  void set_n(int n) {
    if (n == current_n) return;
    MT_CUDNN_CHECK(cudnnSetTensor4dDescriptor(x_desc, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n,
                                              g.tasks * g.in_c, g.in_h, g.in_w));
    MT_CUDNN_CHECK(cudnnSetTensor4dDescriptor(y_desc, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n,
                                              g.tasks * g.out_c, g.out_h, g.out_w));
    current_n = n;
  }

  // Times every algorithm on temporary buffers of max_n examples, keeps the fastest admissible
  // one per primitive, then allocates the largest workspace the kept ones need at any n ≤ max_n.
  void find_algorithms() {
    DeviceBuffer<float> x(g.in_size(max_n)), y(g.out_size(max_n)), w(g.weight_size());
    MT_CUDA_CHECK(cudaMemset(x.data(), 0, x.size() * sizeof(float)));
    MT_CUDA_CHECK(cudaMemset(y.data(), 0, y.size() * sizeof(float)));
    MT_CUDA_CHECK(cudaMemset(w.data(), 0, w.size() * sizeof(float)));
    size_t free_bytes = 0, total_bytes = 0;
    MT_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    const size_t find_bytes = std::min<size_t>(size_t{256} << 20, free_bytes / 4);
    DeviceBuffer<char> find_ws(find_bytes);
    MT_CUDNN_CHECK(cudnnSetStream(handle, nullptr));
    set_n(max_n);

    int count = 0, returned = 0;
    MT_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(handle, &count));
    std::vector<cudnnConvolutionFwdAlgoPerf_t> fwd(std::max(count, 1));
    MT_CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(
        handle, x_desc, x.data(), w_desc, w.data(), conv_desc, y_desc, y.data(), count, &returned,
        fwd.data(), find_ws.data(), find_bytes));
    fwd_algo = pick(fwd, returned, "forward");

    MT_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(handle, &count));
    std::vector<cudnnConvolutionBwdDataAlgoPerf_t> bwd_data(std::max(count, 1));
    MT_CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(
        handle, w_desc, w.data(), y_desc, y.data(), conv_desc, x_desc, x.data(), count, &returned,
        bwd_data.data(), find_ws.data(), find_bytes));
    bwd_data_algo = pick(bwd_data, returned, "backward data");

    MT_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(handle, &count));
    std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> bwd_filter(std::max(count, 1));
    MT_CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(
        handle, x_desc, x.data(), y_desc, y.data(), conv_desc, w_desc, w.data(), count, &returned,
        bwd_filter.data(), find_ws.data(), find_bytes));
    bwd_filter_algo = pick(bwd_filter, returned, "backward filter");
    MT_CUDA_CHECK(cudaDeviceSynchronize());

    size_t need = 0;
    for (int n = 1; n <= max_n; ++n) {
      set_n(n);
      size_t bytes = 0;
      MT_CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(handle, x_desc, w_desc, conv_desc,
                                                             y_desc, fwd_algo, &bytes));
      need = std::max(need, bytes);
      MT_CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(handle, w_desc, y_desc, conv_desc,
                                                                  x_desc, bwd_data_algo, &bytes));
      need = std::max(need, bytes);
      MT_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(
          handle, x_desc, y_desc, conv_desc, w_desc, bwd_filter_algo, &bytes));
      need = std::max(need, bytes);
    }
    set_n(max_n);
    workspace = DeviceBuffer<char>(need);
    workspace_bytes = need;
  }

  void begin(int n, CUstream_st* stream) {
    MT_CHECK(n >= 1 && n <= max_n, "batched conv: n = ", n, " outside [1, ", max_n, "]");
    set_n(n);
    MT_CUDNN_CHECK(cudnnSetStream(handle, stream));
  }
};

CudnnGroupedConv::CudnnGroupedConv(const BatchedConvGeom& geom, int max_n)
    : impl_(std::make_unique<Impl>(geom, max_n)) {}

CudnnGroupedConv::~CudnnGroupedConv() = default;

void CudnnGroupedConv::forward(int n, const float* W, const float* x, float* y, float beta,
                               CUstream_st* stream) {
  MT_CHECK(W && x && y, "batched conv forward: null device pointer");
  Impl& m = *impl_;
  m.begin(n, stream);
  const float alpha = 1.0f;
  MT_CUDNN_CHECK(cudnnConvolutionForward(m.handle, &alpha, m.x_desc, x, m.w_desc, W, m.conv_desc,
                                         m.fwd_algo, m.workspace.data(), m.workspace_bytes, &beta,
                                         m.y_desc, y));
}

void CudnnGroupedConv::backward_data(int n, const float* W, const float* dy, float* dx, float beta,
                                     CUstream_st* stream) {
  MT_CHECK(W && dy && dx, "batched conv backward data: null device pointer");
  Impl& m = *impl_;
  m.begin(n, stream);
  const float alpha = 1.0f;
  MT_CUDNN_CHECK(cudnnConvolutionBackwardData(m.handle, &alpha, m.w_desc, W, m.y_desc, dy,
                                              m.conv_desc, m.bwd_data_algo, m.workspace.data(),
                                              m.workspace_bytes, &beta, m.x_desc, dx));
}

void CudnnGroupedConv::backward_filter(int n, const float* x, const float* dy, float* dW,
                                       float beta, CUstream_st* stream) {
  MT_CHECK(x && dy && dW, "batched conv backward filter: null device pointer");
  Impl& m = *impl_;
  m.begin(n, stream);
  const float alpha = 1.0f;
  MT_CUDNN_CHECK(cudnnConvolutionBackwardFilter(m.handle, &alpha, m.x_desc, x, m.y_desc, dy,
                                                m.conv_desc, m.bwd_filter_algo, m.workspace.data(),
                                                m.workspace_bytes, &beta, m.w_desc, dW));
}

std::string CudnnGroupedConv::describe() const {
  return concat("cudnn algos fwd=", fwd_algo_name(impl_->fwd_algo),
                " bwd_data=", bwd_data_algo_name(impl_->bwd_data_algo),
                " bwd_filter=", bwd_filter_algo_name(impl_->bwd_filter_algo),
                " workspace=", impl_->workspace_bytes, "B");
}

}  // namespace detail
}  // namespace mt
