// The layer contract (DESIGN §3.2): four passes, forward, backward, r_forward and r_backward,
// over a batch of m examples. R-passes carry a direction in parameter (and input) space
// (Pearlmutter's R-operator), so that r_backward yields the Hessian-vector product.
//
// Buffers: x, y, dy, R_* are [m, shape] row-major. W points at this layer's slice of the flat
// parameter buffer (null when the layer has none); dW and R_dW are slices of the gradient and
// Hv buffers. Every output pointer is OVERWRITTEN, never accumulated into. An optional output
// may be null (the first layer needs no dx / R_dx); a null R_x means "the direction in x is
// zero". Layers keep no state between calls: forward writes what the later passes need into
// a LayerContext owned by the caller, which must be passed back unchanged.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/episode.h"
#include "core/rng.h"

namespace mt {

// Grows v to at least n elements and never shrinks it: buffers that alternate between support
// and query batch sizes are then neither reallocated nor re-zeroed. Callers use the first n.
// It grows to exactly n (reserve first: resize alone may double), so what a workspace holds is
// what its largest call needs (Sequential::activation_bytes predicts it).
template <typename V>
void ensure_size(V& v, size_t n) {
  if (v.size() >= n) return;
  v.reserve(n);
  v.resize(n);
}

template <typename T>
struct LayerContext {
  std::vector<T> saved;           // e.g. batch-norm x̂ and σ, conv im2col of x
  std::vector<int32_t> index;     // e.g. max-pool argmax
  std::vector<LayerContext> sub;  // a composite layer's: its sub-layers' (models/residual.h)
};

struct ParamShape {
  std::string name;  // suffix, e.g. "weight"
  std::vector<int64_t> shape;
};

template <typename T>
class Layer {
 public:
  virtual ~Layer() = default;
  virtual std::string kind() const = 0;
  virtual Shape in_shape() const = 0;
  virtual Shape out_shape() const = 0;
  virtual std::vector<ParamShape> param_shapes() const { return {}; }
  // Fills this layer's parameter slice with its initial values.
  virtual void init(T* W, Rng& rng) const {
    (void)W;
    (void)rng;
  }

  // y = f(x; W). Overwrites y and ctx.
  virtual void forward(int m, const T* W, const T* x, T* y, LayerContext<T>& ctx) const = 0;
  // dx = (∂y/∂x)ᵀ dy, dW = (∂y/∂W)ᵀ dy. Overwrites dx and dW, each if non-null (an HVP needs
  // the sweep's dx but not the gradient: its weight passes are then skipped).
  virtual void backward(int m, const T* W, const T* x, const LayerContext<T>& ctx, const T* dy,
                        T* dx, T* dW) const = 0;
  // R_y = ∂y/∂W · R_W + ∂y/∂x · R_x. Overwrites R_y.
  virtual void r_forward(int m, const T* W, const T* R_W, const T* x, const T* R_x,
                         const LayerContext<T>& ctx, T* R_y) const = 0;
  // R{dx}, R{dW}: the directional derivatives of backward's outputs given R{dy}.
  // Overwrites R_dx (if non-null) and R_dW.
  virtual void r_backward(int m, const T* W, const T* R_W, const T* x, const T* R_x,
                          const LayerContext<T>& ctx, const T* dy, const T* R_dy, T* R_dx,
                          T* R_dW) const = 0;

  int64_t num_params() const {
    int64_t n = 0;
    for (const auto& p : param_shapes()) {
      int64_t s = 1;
      for (int64_t d : p.shape) s *= d;
      n += s;
    }
    return n;
  }
};

}  // namespace mt
