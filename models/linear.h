// Fully connected layer on flattened inputs: y = x Wᵀ + b, x [m, in], W [out, in], b [out].
// Parameters in the flat buffer: weight then bias. No context (x is passed to every pass).
// The CUDA twin of forward (cuBLAS) is in linear_cuda.cu.
#pragma once

#include "core/layer.h"

namespace mt {

template <typename T>
class Linear : public Layer<T> {
 public:
  Linear(Shape in, int out_features) : in_(in), out_{out_features, 1, 1} {}
  std::string kind() const override { return "linear"; }
  Shape in_shape() const override { return in_; }
  Shape out_shape() const override { return out_; }
  std::vector<ParamShape> param_shapes() const override {
    return {{"weight", {out_.c, in_.size()}}, {"bias", {out_.c}}};
  }
  void init(T* W, Rng& rng) const override;  // Glorot uniform weights, zero bias

  void forward(int m, const T* W, const T* x, T* y, LayerContext<T>& ctx) const override;
  void backward(int m, const T* W, const T* x, const LayerContext<T>& ctx, const T* dy, T* dx,
                T* dW) const override;
  void r_forward(int m, const T* W, const T* R_W, const T* x, const T* R_x,
                 const LayerContext<T>& ctx, T* R_y) const override;
  void r_backward(int m, const T* W, const T* R_W, const T* x, const T* R_x,
                  const LayerContext<T>& ctx, const T* dy, const T* R_dy, T* R_dx,
                  T* R_dW) const override;

 private:
  Shape in_, out_;
};

}  // namespace mt
