// ReLU, y = max(x, 0). Piecewise linear: every pass routes its input through the mask x > 0.
// No parameters; no context (the mask is read from x).
#pragma once

#include "core/layer.h"

namespace mt {

template <typename T>
class Relu : public Layer<T> {
 public:
  explicit Relu(Shape in) : shape_(in) {}
  std::string kind() const override { return "relu"; }
  Shape in_shape() const override { return shape_; }
  Shape out_shape() const override { return shape_; }

  void forward(int m, const T* W, const T* x, T* y, LayerContext<T>& ctx) const override;
  void backward(int m, const T* W, const T* x, const LayerContext<T>& ctx, const T* dy, T* dx,
                T* dW) const override;
  void r_forward(int m, const T* W, const T* R_W, const T* x, const T* R_x,
                 const LayerContext<T>& ctx, T* R_y) const override;
  void r_backward(int m, const T* W, const T* R_W, const T* x, const T* R_x,
                  const LayerContext<T>& ctx, const T* dy, const T* R_dy, T* R_dx,
                  T* R_dW) const override;

 private:
  Shape shape_;
};

}  // namespace mt
