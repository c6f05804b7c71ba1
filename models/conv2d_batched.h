// Task-batched 3×3 convolution on the GPU (DESIGN §5.1): the convolutions of T tasks, each with
// its own filters, in one call per pass, in one of two forms chosen per pass: cuDNN grouped
// convolution (groups = tasks; conv2d_cudnn.cu) or im2col + strided-batched SGEMM (batch = tasks;
// conv2d_gemm_cuda.cu, which also holds this class). No CUDA header: CPU code may include it.
//
// Buffers (device, float, layouts of conv2d_batched_index.h), n ≤ max_n examples per task:
//   x, R_x, dx, R_dx [n, T·C, H, W]; y, R_y, dy, R_dy [n, T·O, H_out, W_out];
//   W, R_W, dW, R_dW [T·O, C, 3, 3] (task t's OIHW set at t·O·C·9).
// Every pass OVERWRITES its outputs; R_x null means a zero direction in x, a null dx / R_dx is
// not computed. Passes are asynchronous on `stream` and allocate nothing: the workspaces (cuDNN,
// cuBLAS, im2col) are allocated at construction, so passes can be captured in a CUDA Graph.
// One object serves one stream / thread at a time (it owns one cuDNN and one cuBLAS handle).
#pragma once

#include <memory>
#include <string>

#include "core/episode.h"
#include "models/conv2d_batched_index.h"

struct CUstream_st;  // cudaStream_t is CUstream_st*

namespace mt {

enum class ConvForm { kCudnnGrouped, kGemm };
enum class ConvPass { kForward, kBackwardData, kBackwardFilter, kRForward, kRBackward };
constexpr int kConvPassCount = 5;
const char* conv_form_name(ConvForm form);
const char* conv_pass_name(ConvPass pass);

namespace detail {

// The cuDNN form (conv2d_cudnn.cu, the only file that calls cuDNN): grouped convolution with
// FMA math and deterministic algorithms picked by cudnnFind*AlgorithmEx at max_n on
// construction. Each primitive computes out = conv-op + beta·out (beta 0 or 1).
class CudnnGroupedConv {
 public:
  CudnnGroupedConv(const BatchedConvGeom& geom, int max_n);
  ~CudnnGroupedConv();
  CudnnGroupedConv(const CudnnGroupedConv&) = delete;
  CudnnGroupedConv& operator=(const CudnnGroupedConv&) = delete;

  void forward(int n, const float* W, const float* x, float* y, float beta, CUstream_st* stream);
  void backward_data(int n, const float* W, const float* dy, float* dx, float beta,
                     CUstream_st* stream);
  void backward_filter(int n, const float* x, const float* dy, float* dW, float beta,
                       CUstream_st* stream);
  std::string describe() const;  // the algorithms and the workspace

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace detail

class BatchedConv2dCuda {
 public:
  // in: one task's input shape [C, H, W]. Both forms start as kCudnnGrouped until tune() or
  // set_form() says otherwise.
  BatchedConv2dCuda(Shape in, int out_channels, int stride, int tasks, int max_n);
  ~BatchedConv2dCuda();
  BatchedConv2dCuda(const BatchedConv2dCuda&) = delete;
  BatchedConv2dCuda& operator=(const BatchedConv2dCuda&) = delete;

  const BatchedConvGeom& geom() const;
  int max_n() const;

  void set_form(ConvPass pass, ConvForm form);
  ConvForm form(ConvPass pass) const;
  // Times both forms of every pass at n examples on `stream` with CUDA events (one warm-up,
  // then `repeats` timed runs each) and keeps the faster per pass. It allocates and fills its
  // own device buffers of the true sizes and synchronises: call it before any graph capture.
  void tune(int n, CUstream_st* stream, int repeats = 10);
  // The form of each pass (with the timings when tuned) and the cuDNN algorithms.
  std::string describe() const;

  // y = conv(x, W). Overwrites y.
  void forward(int n, const float* W, const float* x, float* y, CUstream_st* stream);
  // dW = corr(x, dy) and, when dx is not null, dx = convT(dy, W). Overwrites dW and dx.
  void backward(int n, const float* W, const float* x, const float* dy, float* dx, float* dW,
                CUstream_st* stream);
  void backward_data(int n, const float* W, const float* dy, float* dx, CUstream_st* stream);
  void backward_filter(int n, const float* x, const float* dy, float* dW, CUstream_st* stream);
  // R_y = conv(x, R_W) + conv(R_x, W). Overwrites R_y.
  void r_forward(int n, const float* W, const float* R_W, const float* x, const float* R_x,
                 float* R_y, CUstream_st* stream);
  // R_dW = corr(x, R_dy) + corr(R_x, dy); R_dx = convT(dy, R_W) + convT(R_dy, W) when R_dx is
  // not null. Overwrites R_dW and R_dx.
  void r_backward(int n, const float* W, const float* R_W, const float* x, const float* R_x,
                  const float* dy, const float* R_dy, float* R_dx, float* R_dW,
                  CUstream_st* stream);

 private:
  struct Impl;  // handles, workspaces, the two forms (conv2d_gemm_cuda.cu)
  std::unique_ptr<Impl> impl_;
};

}  // namespace mt
