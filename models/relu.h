// ReLU, y = max(x, 0), and LeakyReLU, y = x for x > 0 and slope·x otherwise: one layer with a
// negative slope (0: ReLU, kind "relu"; else "leaky_relu", e.g. 0.1 in ResNet-12). Piecewise
// linear: every pass routes its input through the mask x > 0, scaling by the slope off it.
// No parameters; no context (the mask is read from x).
#pragma once

#include "core/layer.h"

namespace mt {

template <typename T>
class Relu : public Layer<T> {
 public:
  explicit Relu(Shape in, double slope = 0) : shape_(in), slope_(static_cast<T>(slope)) {}
  std::string kind() const override { return slope_ == T(0) ? "relu" : "leaky_relu"; }
  Shape in_shape() const override { return shape_; }
  Shape out_shape() const override { return shape_; }
  T slope() const { return slope_; }

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
  T slope_;
};

// The activation at one value, for every pass: out(u) in the forward, through(u, d) for a
// gradient or tangent d at its output: d where u > 0, else slope·d, and +0 for ReLU (never 0·d,
// which is −0, or NaN for d = ±inf). kNone is the identity. The kind is a compile-time choice so
// that a loop over values is a plain select, which GCC vectorises (a test of the slope inside
// the loop made it branch per value, 2× slower). Relu's passes and BatchNorm(in, slope)'s
// (models/batch_norm.h) both use it.
enum class ActKind { kNone, kRelu, kLeaky };
template <typename T, ActKind kKind>
struct Act {
  T slope;
  T out(T u) const { return through(u, u); }
  T through(T u, T d) const {
    if constexpr (kKind == ActKind::kNone) return d;
    if constexpr (kKind == ActKind::kRelu) return u > T(0) ? d : T(0);
    if constexpr (kKind == ActKind::kLeaky) return u > T(0) ? d : slope * d;
  }
};

// Calls pass(act) with the activation of negative slope `slope` (none when on is false).
template <typename T, typename P>
void with_act(bool on, T slope, P pass) {
  if (!on)
    pass(Act<T, ActKind::kNone>{slope});
  else if (slope == T(0))
    pass(Act<T, ActKind::kRelu>{slope});
  else
    pass(Act<T, ActKind::kLeaky>{slope});
}

// The activation of a net's blocks: ReLU, or LeakyReLU with the negative slope of ResNet-12's
// (0.1, as MetaOptNet and learn2learn).
enum class Activation { kRelu, kLeakyRelu };
constexpr double kLeakySlope = 0.1;
inline double negative_slope(Activation a) { return a == Activation::kLeakyRelu ? kLeakySlope : 0; }

}  // namespace mt
