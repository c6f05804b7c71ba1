// What the meta-learning algorithms need from a model: the loss of a labelled batch, its
// gradient, and Hessian-vector products, all at a parameter vector θ given as a flat buffer;
// for the bilevel problems also per-example losses and their directional derivatives.
// The model itself is immutable and shared by threads; each thread brings its own Workspace.
// The loss of a batch is L = Σ_i w_i ℓ_i / n with the batch's weights (all 1 when b.weight is
// empty); ℓ_i is the cross-entropy of example i in the batch's forward pass (with batch norm,
// the statistics of the whole batch).
#pragma once

#include <memory>

#include "core/check.h"
#include "core/episode.h"
#include "core/param_layout.h"

namespace mt {

// Scratch memory of one thread (activations, tangents). Reused across calls.
struct Workspace {
  virtual ~Workspace() = default;
};

struct LossStats {
  double loss = 0;  // L: the (weighted) mean cross-entropy over the batch
  double acc = 0;   // fraction of correct argmax predictions
};

template <typename T>
class Model {
 public:
  virtual ~Model() = default;
  virtual const ParamLayout& layout() const = 0;
  virtual std::unique_ptr<Workspace> make_workspace() const = 0;
  // Deterministic initial parameters for a seed.
  virtual void init(T* theta, uint64_t seed) const = 0;

  // Loss of batch b at θ; overwrites grad with ∇L(θ) when grad is non-null.
  virtual LossStats loss_grad(const T* theta, const Batch<T>& b, T* grad, Workspace& ws) const = 0;
  // Overwrites Hv with ∇²L(θ) v, and grad with ∇L(θ) when grad is non-null.
  virtual LossStats hvp(const T* theta, const Batch<T>& b, const T* v, T* grad, T* Hv,
                        Workspace& ws) const = 0;
  // Overwrites l [b.n] with the unweighted per-example losses ℓ_i(θ).
  virtual void example_losses(const T* theta, const Batch<T>& b, T* l, Workspace& ws) const = 0;
  // Overwrites dl [b.n] with ⟨∇_θ ℓ_i(θ), v⟩ (forward + r_forward; unweighted).
  virtual void loss_directional(const T* theta, const Batch<T>& b, const T* v, T* dl,
                                Workspace& ws) const = 0;

  // Passes from a layer on (ANIL's inner loop, which adapts only the last layers): the output
  // of the layers before, "features", is computed once and the passes start there.
  // split_layer(k): the layer holding θ tensor k, or 0 when the model cannot split (the default).
  virtual int split_layer(int /*tensor*/) const { return 0; }
  // Elements of the features of n examples at layer (> 0).
  virtual int64_t feature_count(int /*layer*/, int /*n*/) const { return 0; }
  // out [feature_count(layer, b.n)] ← the output of layers [0, layer) on b at θ.
  virtual void features(int /*layer*/, const T* /*theta*/, const Batch<T>& /*b*/, T* /*out*/,
                        Workspace& /*ws*/) const {}
  // Loss of b at θ from its features; grad ← the gradient of the tensors of layers ≥ layer and
  // zeros before them. The same passes on the same inputs as loss_grad: the loss and those
  // gradient entries have loss_grad's bits.
  virtual LossStats loss_grad_from(int /*layer*/, const T* /*theta*/, const T* /*features*/,
                                   const Batch<T>& /*b*/, T* /*grad*/, Workspace& /*ws*/) const {
    MT_CHECK(false, "this model cannot run its passes from a layer (split_layer is 0)");
    return {};
  }
};

}  // namespace mt
