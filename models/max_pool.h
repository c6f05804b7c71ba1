// 2×2 max-pooling with stride 2 (floor: odd trailing rows/columns are dropped). Forward saves
// the argmax of each window (index into the example's input) in ctx.index; backward and both
// R-passes route through it (the R-operator of a piecewise-linear op uses the same routing).
#pragma once

#include "core/layer.h"

namespace mt {

template <typename T>
class MaxPool2 : public Layer<T> {
 public:
  explicit MaxPool2(Shape in) : in_(in), out_{in.c, in.h / 2, in.w / 2} {}
  std::string kind() const override { return "max_pool2"; }
  Shape in_shape() const override { return in_; }
  Shape out_shape() const override { return out_; }

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
