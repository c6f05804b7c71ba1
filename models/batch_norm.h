// Batch normalisation with the statistics of the batch at hand (MAML style: no running
// averages), per channel over m·h·w values: x̂ = (x − μ)/σ, σ = sqrt(var + ε), y = γ x̂ + β.
// Parameters: gamma [c], beta [c]. Forward saves x̂ ([m, c, h, w]) then σ ([c]) in the context.
//
// BatchNorm(in, slope) ends in the (leaky) ReLU that follows batch norm in Conv-4 and ResNet-12:
// y = act(γ x̂ + β), with act(u) = u for u > 0 and slope·u otherwise. Every pass computes what a
// BatchNorm layer followed by a Relu layer (models/relu.h) does, the same values summed in the
// same order; GCC contracts and vectorises each loop on its own, so the R-passes may differ by
// an ulp (tests/models/elementwise_fused_test.cpp). The backward passes recompute the mask from
// x̂, γ and β, so nothing more is saved. One sweep fewer over the activations in each pass (the
// Relu's read and write), and one activation fewer to keep.
#pragma once

#include "core/layer.h"

namespace mt {

template <typename T>
class BatchNorm : public Layer<T> {
 public:
  static constexpr double kEps = 1e-5;
  explicit BatchNorm(Shape in) : shape_(in) {}
  BatchNorm(Shape in, double slope) : shape_(in), act_(true), slope_(static_cast<T>(slope)) {}

  std::string kind() const override { return "batch_norm"; }
  Shape in_shape() const override { return shape_; }
  Shape out_shape() const override { return shape_; }
  bool has_activation() const { return act_; }
  T slope() const { return slope_; }  // the activation's negative slope (when it has one)
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
  // The passes with the activation A (models/relu.h: Act, or ActKind::kNone for none).
  template <typename A>
  void forward_pass(A act, int m, const T* W, const T* x, T* y, LayerContext<T>& ctx) const;
  template <typename A>
  void backward_pass(A act, int m, const T* W, const LayerContext<T>& ctx, const T* dy, T* dx,
                     T* dW) const;
  template <typename A>
  void r_forward_pass(A act, int m, const T* W, const T* R_W, const T* R_x,
                      const LayerContext<T>& ctx, T* R_y) const;
  template <typename A>
  void r_backward_pass(A act, int m, const T* W, const T* R_W, const T* R_x,
                       const LayerContext<T>& ctx, const T* dy, const T* R_dy, T* R_dx,
                       T* R_dW) const;

  Shape shape_;
  bool act_ = false;
  T slope_ = 0;
};

}  // namespace mt
