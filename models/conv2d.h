// k×k convolution, k = 3 (padding 1) or k = 1 (padding 0, ResNet-12's shortcut), stride 1 or 2,
// no bias (every conv in our nets is followed by batch norm, whose β makes a bias redundant).
// Weight layout OIHW: [out_c, in_c, k, k]. Output size (in − 1)/stride + 1 for both kernels.
// CPU float: oneDNN convolutions (models/conv2d_dnnl.h) on the NCHW / OIHW buffers themselves;
// forward saves nothing (the later passes read x). CPU double, the reference: im2col + one GEMM
// per pass over the whole batch; forward saves the batch's im2col matrix in the context
// ([in_c*k*k, m*out_h*out_w]) for backward and the R-passes.
// R-passes: R_y = conv(x, R_W) + conv(R_x, W); R_dx = convᵀ(dy, R_W) + convᵀ(R_dy, W);
// R_dW = corr(x, R_dy) + corr(R_x, dy).
#pragma once

#include "core/layer.h"
#include "models/conv2d_dnnl.h"

namespace mt {

template <typename T>
class Conv2d : public Layer<T> {
 public:
  Conv2d(Shape in, int out_channels, int stride, int kernel = 3);

  std::string kind() const override { return kernel_ == 3 ? "conv2d" : "conv2d_1x1"; }
  int stride() const { return stride_; }
  int kernel() const { return kernel_; }
  Shape in_shape() const override { return in_; }
  Shape out_shape() const override { return out_; }
  std::vector<ParamShape> param_shapes() const override {
    return {{"weight", {out_.c, in_.c, kernel_, kernel_}}};
  }
  void init(T* W, Rng& rng) const override;  // He normal: N(0, 2 / (in_c * k * k))

  void forward(int m, const T* W, const T* x, T* y, LayerContext<T>& ctx) const override;
  void backward(int m, const T* W, const T* x, const LayerContext<T>& ctx, const T* dy, T* dx,
                T* dW) const override;
  void r_forward(int m, const T* W, const T* R_W, const T* x, const T* R_x,
                 const LayerContext<T>& ctx, T* R_y) const override;
  void r_backward(int m, const T* W, const T* R_W, const T* x, const T* R_x,
                  const LayerContext<T>& ctx, const T* dy, const T* R_dy, T* R_dx,
                  T* R_dW) const override;

 private:
  // One example: [c,h,w] -> rows of [c*k*k, out_h*out_w] with row stride ld.
  void im2col(const T* x, T* col, int64_t ld) const;
  void col2im(const T* col, int64_t ld, T* x) const;  // adjoint of im2col (overwrites x)
  // The batch: [m,c,h,w] <-> [c*k*k, m*out_h*out_w], example i in columns [i*P, (i+1)*P).
  void im2col_batch(int m, const T* x, T* col) const;
  void col2im_batch(int m, const T* col, T* x) const;
  dnnl_conv::Geometry geometry() const;
  int taps() const { return kernel_ * kernel_; }
  int64_t col_size() const { return static_cast<int64_t>(in_.c) * taps() * out_.h * out_.w; }

  Shape in_, out_;
  int stride_, kernel_;
};

}  // namespace mt
