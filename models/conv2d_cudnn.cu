// The cuDNN form of the task-batched conv (models/conv2d_batched.h), and the only file of the
// project's convolutions that calls cuDNN: one grouped convolution (group t = task t) with FMA
// math, deterministic algorithms chosen by cuDNN's heuristic (never by timing) once per layer
// geometry, the workspace handed in from the owner's pool.
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

// The first result (the heuristic's order) that succeeded, is deterministic and uses FMA math.
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
  BatchedConvGeom g;  // at max_tasks
  int max_n = 0;
  int current_tasks = 0, current_n = 0;  // what the descriptors describe
  cudnnHandle_t handle = nullptr;        // the owner's
  cudnnTensorDescriptor_t x_desc = nullptr, y_desc = nullptr;
  cudnnFilterDescriptor_t w_desc = nullptr;
  cudnnConvolutionDescriptor_t conv_desc = nullptr;
  cudnnConvolutionFwdAlgo_t fwd_algo = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM;
  cudnnConvolutionBwdDataAlgo_t bwd_data_algo = CUDNN_CONVOLUTION_BWD_DATA_ALGO_1;
  cudnnConvolutionBwdFilterAlgo_t bwd_filter_algo = CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;

  Impl(cudnnHandle_t h, const BatchedConvGeom& geom, int n_max) : g(geom), max_n(n_max), handle(h) {
    MT_CHECK(handle, "the cuDNN form needs a cuDNN handle");
    try {
      create();
      choose_algorithms();
      size_workspace();
    } catch (...) {
      destroy();
      throw;
    }
  }
  ~Impl() { destroy(); }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  void create() {
    MT_CUDNN_CHECK(cudnnCreateTensorDescriptor(&x_desc));
    MT_CUDNN_CHECK(cudnnCreateTensorDescriptor(&y_desc));
    MT_CUDNN_CHECK(cudnnCreateFilterDescriptor(&w_desc));
    MT_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&conv_desc));
    MT_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(conv_desc, g.pad(), g.pad(), g.stride, g.stride,
                                                   1, 1, CUDNN_CROSS_CORRELATION,
                                                   CUDNN_DATA_FLOAT));
    MT_CUDNN_CHECK(cudnnSetConvolutionMathType(conv_desc, CUDNN_FMA_MATH));
    set_shape(g.tasks, max_n);
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
    conv_desc = nullptr;
    w_desc = nullptr;
    x_desc = y_desc = nullptr;
  }

  // Host-side only (no allocation, capturable): T groups, x [n, T·C, H, W],
  // W [T·O, C, K, K], y [n, T·O, H_out, W_out].
  void set_shape(int tasks, int n) {
    if (tasks == current_tasks && n == current_n) return;
    if (tasks != current_tasks) {
      MT_CUDNN_CHECK(cudnnSetFilter4dDescriptor(w_desc, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW,
                                                tasks * g.out_c, g.in_c, g.kernel, g.kernel));
      MT_CUDNN_CHECK(cudnnSetConvolutionGroupCount(conv_desc, tasks));
    }
    MT_CUDNN_CHECK(cudnnSetTensor4dDescriptor(x_desc, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n,
                                              tasks * g.in_c, g.in_h, g.in_w));
    MT_CUDNN_CHECK(cudnnSetTensor4dDescriptor(y_desc, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n,
                                              tasks * g.out_c, g.out_h, g.out_w));
    current_tasks = tasks;
    current_n = n;
  }

  // cuDNN's heuristic at max_tasks and max_n (host-side, deterministic for a given GPU and
  // cuDNN): the first admissible algorithm per primitive, kept for every T and n.
  void choose_algorithms() {
    set_shape(g.tasks, max_n);
    int count = 0, returned = 0;
    MT_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(handle, &count));
    std::vector<cudnnConvolutionFwdAlgoPerf_t> fwd(std::max(count, 1));
    MT_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(handle, x_desc, w_desc, conv_desc, y_desc,
                                                          count, &returned, fwd.data()));
    fwd_algo = pick(fwd, returned, "forward");

    MT_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(handle, &count));
    std::vector<cudnnConvolutionBwdDataAlgoPerf_t> bwd_data(std::max(count, 1));
    MT_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(
        handle, w_desc, y_desc, conv_desc, x_desc, count, &returned, bwd_data.data()));
    bwd_data_algo = pick(bwd_data, returned, "backward data");

    MT_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(handle, &count));
    std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> bwd_filter(std::max(count, 1));
    MT_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
        handle, x_desc, y_desc, conv_desc, w_desc, count, &returned, bwd_filter.data()));
    bwd_filter_algo = pick(bwd_filter, returned, "backward filter");
  }

  // The largest workspace the kept algorithms need at any T ≤ max_tasks and n ≤ max_n; an
  // algorithm cuDNN refuses at some (T, n) makes the form unusable for this geometry.
  void size_workspace() {
    size_t need = 0;
    for (int t = 1; t <= g.tasks; ++t)
      for (int n = 1; n <= max_n; ++n) {
        set_shape(t, n);
        size_t bytes = 0;
        check_at(cudnnGetConvolutionForwardWorkspaceSize(handle, x_desc, w_desc, conv_desc, y_desc,
                                                         fwd_algo, &bytes),
                 "forward", t, n);
        need = std::max(need, bytes);
        check_at(cudnnGetConvolutionBackwardDataWorkspaceSize(handle, w_desc, y_desc, conv_desc,
                                                              x_desc, bwd_data_algo, &bytes),
                 "backward data", t, n);
        need = std::max(need, bytes);
        check_at(cudnnGetConvolutionBackwardFilterWorkspaceSize(handle, x_desc, y_desc, conv_desc,
                                                                w_desc, bwd_filter_algo, &bytes),
                 "backward filter", t, n);
        need = std::max(need, bytes);
      }
    set_shape(g.tasks, max_n);
    workspace_bytes = need;
  }
  void check_at(cudnnStatus_t s, const char* what, int tasks, int n) const {
    if (s == CUDNN_STATUS_SUCCESS) return;
    throw Error(ExitCode::kRuntime,
                concat("cuDNN cannot run the grouped ", what, " algorithm it chose for ", g.tasks,
                       " tasks at ", tasks, " tasks of ", n, " examples (", cudnnGetErrorString(s),
                       "); use the GEMM form (cuda.conv=gemm)"));
  }

  void begin(int tasks, int n, CUstream_st* stream) {
    MT_CHECK(n >= 1 && n <= max_n, "batched conv: n = ", n, " outside [1, ", max_n, "]");
    MT_CHECK(tasks >= 1 && tasks <= g.tasks, "batched conv: ", tasks, " tasks outside [1, ",
             g.tasks, "]");
    MT_CHECK(workspace || workspace_bytes == 0, "cuDNN conv: bind() its workspace first");
    set_shape(tasks, n);
    MT_CUDNN_CHECK(cudnnSetStream(handle, stream));
  }
};

CudnnGroupedConv::CudnnGroupedConv(cudnnContext* handle, const BatchedConvGeom& geom, int max_n)
    : impl_(std::make_unique<Impl>(handle, geom, max_n)) {}

CudnnGroupedConv::~CudnnGroupedConv() = default;

size_t CudnnGroupedConv::workspace_bytes() const { return impl_->workspace_bytes; }
void CudnnGroupedConv::bind(void* workspace) { impl_->workspace = workspace; }

void CudnnGroupedConv::forward(int tasks, int n, const float* W, const float* x, float* y,
                               float beta, CUstream_st* stream) {
  MT_CHECK(W && x && y, "batched conv forward: null device pointer");
  Impl& m = *impl_;
  m.begin(tasks, n, stream);
  const float alpha = 1.0f;
  MT_CUDNN_CHECK(cudnnConvolutionForward(m.handle, &alpha, m.x_desc, x, m.w_desc, W, m.conv_desc,
                                         m.fwd_algo, m.workspace, m.workspace_bytes, &beta,
                                         m.y_desc, y));
}

void CudnnGroupedConv::backward_data(int tasks, int n, const float* W, const float* dy, float* dx,
                                     float beta, CUstream_st* stream) {
  MT_CHECK(W && dy && dx, "batched conv backward data: null device pointer");
  Impl& m = *impl_;
  m.begin(tasks, n, stream);
  const float alpha = 1.0f;
  MT_CUDNN_CHECK(cudnnConvolutionBackwardData(m.handle, &alpha, m.w_desc, W, m.y_desc, dy,
                                              m.conv_desc, m.bwd_data_algo, m.workspace,
                                              m.workspace_bytes, &beta, m.x_desc, dx));
}

void CudnnGroupedConv::backward_filter(int tasks, int n, const float* x, const float* dy, float* dW,
                                       float beta, CUstream_st* stream) {
  MT_CHECK(x && dy && dW, "batched conv backward filter: null device pointer");
  Impl& m = *impl_;
  m.begin(tasks, n, stream);
  const float alpha = 1.0f;
  MT_CUDNN_CHECK(cudnnConvolutionBackwardFilter(m.handle, &alpha, m.x_desc, x, m.y_desc, dy,
                                                m.conv_desc, m.bwd_filter_algo, m.workspace,
                                                m.workspace_bytes, &beta, m.w_desc, dW));
}

std::string CudnnGroupedConv::describe() const {
  return concat("cudnn algos (heuristic, pinned) fwd=", fwd_algo_name(impl_->fwd_algo),
                " bwd_data=", bwd_data_algo_name(impl_->bwd_data_algo),
                " bwd_filter=", bwd_filter_algo_name(impl_->bwd_filter_algo),
                " workspace=", impl_->workspace_bytes, "B");
}

}  // namespace detail

namespace {
std::string version_text(size_t v) {  // cuDNN 9 encodes major·10000 + minor·100 + patch
  return detail::concat(v / 10000, ".", v / 100 % 100, ".", v % 100);
}
}  // namespace

std::string cudnn_version() {
  return detail::concat("cuDNN ", version_text(cudnnGetVersion()), " (built against ",
                        version_text(CUDNN_VERSION), ")");
}

std::shared_ptr<cudnnContext> make_cudnn_handle() {
  const size_t loaded = cudnnGetVersion();
  if (loaded / 10000 != CUDNN_MAJOR)
    throw Error(ExitCode::kRuntime,
                detail::concat("the loaded cuDNN is ", version_text(loaded),
                               ", this build needs major version ", CUDNN_MAJOR));
  cudnnHandle_t h = nullptr;
  const cudnnStatus_t s = cudnnCreate(&h);
  if (s != CUDNN_STATUS_SUCCESS)
    throw Error(ExitCode::kRuntime, detail::concat("cudnnCreate failed: ", cudnnGetErrorString(s),
                                                   " (", cudnn_version(), ")"));
  return std::shared_ptr<cudnnContext>(h, [](cudnnHandle_t handle) {
    const cudnnStatus_t d = cudnnDestroy(handle);
    if (d != CUDNN_STATUS_SUCCESS)
      std::fprintf(stderr, "mt: cudnnDestroy failed: %s\n", cudnnGetErrorString(d));
  });
}

}  // namespace mt
