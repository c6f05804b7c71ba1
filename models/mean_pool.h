// Global mean-pooling over height and width: [m, c, h, w] -> [m, c, 1, 1]. Linear, so every
// pass is the same averaging (forward, R-forward) or its adjoint (backward, R-backward).
#pragma once

#include "core/layer.h"

namespace mt {

template <typename T>
class GlobalMeanPool : public Layer<T> {
 public:
  explicit GlobalMeanPool(Shape in) : in_(in) {}
  std::string kind() const override { return "global_mean_pool"; }
  Shape in_shape() const override { return in_; }
  Shape out_shape() const override { return {in_.c, 1, 1}; }

  void forward(int m, const T* W, const T* x, T* y, LayerContext<T>& ctx) const override;
  void backward(int m, const T* W, const T* x, const LayerContext<T>& ctx, const T* dy, T* dx,
                T* dW) const override;
  void r_forward(int m, const T* W, const T* R_W, const T* x, const T* R_x,
                 const LayerContext<T>& ctx, T* R_y) const override;
  void r_backward(int m, const T* W, const T* R_W, const T* x, const T* R_x,
                  const LayerContext<T>& ctx, const T* dy, const T* R_dy, T* R_dx,
                  T* R_dW) const override;

 private:
  void average(int m, const T* x, T* y) const;
  void spread(int m, const T* dy, T* dx) const;  // adjoint of average
  Shape in_;
};

}  // namespace mt
