// Task-batched K×K convolution (K = 3, padding 1; or K = 1, padding 0) on the GPU (DESIGN §5.1):
// the convolutions of T tasks, each with its own filters, in one call per pass, in one of two forms
// chosen per pass: im2col + our batch-invariant GEMM (batch = tasks; conv2d_gemm_cuda.cu, which
// also holds this class) or cuDNN grouped convolution (groups = tasks; conv2d_cudnn.cu). No CUDA
// header: CPU code may include it.
//
// One object per layer geometry: built once for up to max_tasks tasks of max_n examples, every
// call names its own T ≤ max_tasks and n ≤ max_n and nothing is created per T. The GEMM form
// gives each task the same bits whatever T (gemm_call_element); the cuDNN form runs one algorithm
// pinned per geometry (cuDNN's heuristic at max_tasks, never timings), but cuDNN does not promise
// that a group's bits are independent of the group count: the gpu tests check it.
//
// Buffers (device, float, layouts of conv2d_batched_index.h), T tasks, n examples per task:
//   x, R_x, dx, R_dx [n, T·C, H, W]; y, R_y, dy, R_dy [n, T·O, H_out, W_out];
//   W, R_W, dW, R_dW [T·O, C, K, K] (task t's OIHW set at t·O·C·K²).
// Every pass OVERWRITES its outputs; R_x null means a zero direction in x, a null dx / R_dx is
// not computed. Passes are asynchronous on `stream` and allocate nothing: the workspaces come
// from the owner (bind(), sized by need()), so passes can be captured in a CUDA Graph. One
// object serves one stream / thread at a time.
#pragma once

#include <memory>
#include <string>

#include "core/episode.h"
#include "models/conv2d_batched_index.h"

struct CUstream_st;   // cudaStream_t is CUstream_st*
struct cudnnContext;  // cudnnHandle_t is cudnnContext*

namespace mt {

enum class ConvForm { kCudnnGrouped, kGemm };
enum class ConvPass { kForward, kBackwardData, kBackwardFilter, kRForward, kRBackward };
constexpr int kConvPassCount = 5;
const char* conv_form_name(ConvForm form);
const char* conv_pass_name(ConvPass pass);

// The device memory a conv's passes use, taken from the owner's pool: the GEMM form's col and
// gy / R_gy (floats, ConvGemmWorkspace) and cuDNN's workspace (bytes).
struct ConvWorkspaceNeed {
  int64_t col = 0, gy = 0;
  size_t cudnn_bytes = 0;
};

// A cuDNN handle for the convs of one backend (conv2d_cudnn.cu), destroyed with the last
// owner. Throws mt::Error (kRuntime) naming the cause when cuDNN is unusable: cudnnCreate
// fails (no library, a driver it does not support), or the loaded library's major version
// differs from the one this build was compiled against.
std::shared_ptr<cudnnContext> make_cudnn_handle();
// "cuDNN 9.19.0 (built against 9.19.0)", or why cuDNN cannot be loaded.
std::string cudnn_version();

namespace detail {

// The cuDNN form (conv2d_cudnn.cu, the only file that calls cuDNN): grouped convolution with
// FMA math; per primitive the first deterministic FMA-math algorithm of cuDNN's heuristic
// (cudnnGet*Algorithm_v7) at max_tasks and max_n, kept for every T and n (refused when cuDNN
// cannot run it at some T ≤ max_tasks). Construction is host-only (no device memory). Each
// primitive computes out = conv-op + beta·out (beta 0 or 1). Throws mt::Error (kRuntime)
// naming the candidates when no algorithm qualifies.
class CudnnGroupedConv {
 public:
  CudnnGroupedConv(cudnnContext* handle, const BatchedConvGeom& geom, int max_n);
  ~CudnnGroupedConv();
  CudnnGroupedConv(const CudnnGroupedConv&) = delete;
  CudnnGroupedConv& operator=(const CudnnGroupedConv&) = delete;

  size_t workspace_bytes() const;  // the most any T ≤ max_tasks, n ≤ max_n needs
  void bind(void* workspace);

  void forward(int tasks, int n, const float* W, const float* x, float* y, float beta,
               CUstream_st* stream);
  void backward_data(int tasks, int n, const float* W, const float* dy, float* dx, float beta,
                     CUstream_st* stream);
  void backward_filter(int tasks, int n, const float* x, const float* dy, float* dW, float beta,
                       CUstream_st* stream);
  std::string describe() const;  // the algorithms and the workspace

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace detail

class BatchedConv2dCuda {
 public:
  // in: one task's input shape [C, H, W]; kernel: K (3 or 1). Host-only. Every pass starts in
  // `form`; `cudnn` (may be null) is the cuDNN handle the cuDNN form uses. With form
  // kCudnnGrouped and no usable cuDNN algorithm this throws mt::Error naming the cause; with
  // kGemm the cuDNN form is still prepared when a handle is given (for tune()), and its absence
  // is only noted in describe().
  BatchedConv2dCuda(Shape in, int out_channels, int stride, int max_tasks, int max_n, ConvForm form,
                    cudnnContext* cudnn, int kernel = 3);
  ~BatchedConv2dCuda();
  BatchedConv2dCuda(const BatchedConv2dCuda&) = delete;
  BatchedConv2dCuda& operator=(const BatchedConv2dCuda&) = delete;

  const BatchedConvGeom& geom() const;  // at max_tasks
  int max_n() const;
  ConvWorkspaceNeed need() const;
  // Hands the object its workspaces (at least need() each); they may be shared with other
  // convs run on the same stream. Must precede the first pass.
  void bind(const ConvGemmWorkspace<float>& gemm, void* cudnn_workspace);

  void set_form(ConvPass pass, ConvForm form);
  ConvForm form(ConvPass pass) const;
  // cuda.tune: times both forms of every pass at max_tasks tasks of n examples on `stream` with
  // CUDA events (one warm-up, then `repeats` timed runs each) and keeps the faster per pass.
  // Timings differ between runs, processes and ranks, so a tuned run gives up run-to-run
  // identity. It allocates its own device buffers (freed on return) and synchronises: call it
  // after bind() and before any graph capture.
  void tune(int n, CUstream_st* stream, int repeats = 10);
  // The form of each pass (with the timings when tuned) and the cuDNN algorithms.
  std::string describe() const;

  // y = conv(x, W). Overwrites y.
  void forward(int tasks, int n, const float* W, const float* x, float* y, CUstream_st* stream);
  // dW = corr(x, dy) and, when dx is not null, dx = convT(dy, W). Overwrites dW and dx.
  void backward(int tasks, int n, const float* W, const float* x, const float* dy, float* dx,
                float* dW, CUstream_st* stream);
  void backward_data(int tasks, int n, const float* W, const float* dy, float* dx,
                     CUstream_st* stream);
  void backward_filter(int tasks, int n, const float* x, const float* dy, float* dW,
                       CUstream_st* stream);
  // R_y = conv(x, R_W) + conv(R_x, W). Overwrites R_y.
  void r_forward(int tasks, int n, const float* W, const float* R_W, const float* x,
                 const float* R_x, float* R_y, CUstream_st* stream);
  // R_dW = corr(x, R_dy) + corr(R_x, dy); R_dx = convT(dy, R_W) + convT(R_dy, W) when R_dx is
  // not null. Overwrites R_dW and R_dx.
  void r_backward(int tasks, int n, const float* W, const float* R_W, const float* x,
                  const float* R_x, const float* dy, const float* R_dy, float* R_dx, float* R_dW,
                  CUstream_st* stream);

 private:
  struct Impl;  // the geometry, the forms, the cuDNN form (conv2d_gemm_cuda.cu)
  std::unique_ptr<Impl> impl_;
};

}  // namespace mt
