// Batch normalisation with the statistics of the batch at hand (MAML style: no running
// averages), per channel over m·h·w values: x̂ = (x − μ)/σ, σ = sqrt(var + ε), y = γ x̂ + β.
// Parameters: gamma [c], beta [c]. Forward saves x̂ ([m, c, h, w]) then σ ([c]) in the context.
#pragma once

#include "core/layer.h"

namespace mt {

template <typename T>
class BatchNorm : public Layer<T> {
 public:
  static constexpr double kEps = 1e-5;
  explicit BatchNorm(Shape in) : shape_(in) {}

  std::string kind() const override { return "batch_norm"; }
  Shape in_shape() const override { return shape_; }
  Shape out_shape() const override { return shape_; }
  std::vector<ParamShape> param_shapes() const override {
    return {{"gamma", {shape_.c}}, {"beta", {shape_.c}}};
  }
  void init(T* W, Rng& rng) const override;  // γ = 1, β = 0

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
