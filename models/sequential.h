// A chain of layers ending in softmax cross-entropy, implementing the Model interface of
// core/model.h: loss + gradient (forward, backward), Hessian-vector products (forward,
// backward, r_forward, r_backward) and per-example loss directional derivatives (forward,
// r_forward). Per-example weights of the batch enter only the softmax cross-entropy. Parameters of
// layer l live at offset_[l] of the flat buffer and are named "<layer name>.<param name>".
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/layer.h"
#include "core/model.h"

namespace mt {

template <typename T>
class Residual;

template <typename T>
class Sequential : public Model<T> {
 public:
  Sequential(Shape input, int classes) : input_(input), classes_(classes) {}

  // Appends a layer; its input shape must equal the previous layer's output shape.
  void add(const std::string& name, std::unique_ptr<Layer<T>> layer);

  const ParamLayout& layout() const override { return layout_; }
  std::unique_ptr<Workspace> make_workspace() const override;
  void init(T* theta, uint64_t seed) const override;
  LossStats loss_grad(const T* theta, const Batch<T>& b, T* grad, Workspace& ws) const override;
  LossStats hvp(const T* theta, const Batch<T>& b, const T* v, T* grad, T* Hv,
                Workspace& ws) const override;
  void example_losses(const T* theta, const Batch<T>& b, T* l, Workspace& ws) const override;
  void loss_directional(const T* theta, const Batch<T>& b, const T* v, T* dl,
                        Workspace& ws) const override;
  int split_layer(int tensor) const override;
  int64_t feature_count(int layer, int n) const override;
  void features(int layer, const T* theta, const Batch<T>& b, T* out, Workspace& ws) const override;
  LossStats loss_grad_from(int layer, const T* theta, const T* features, const Batch<T>& b, T* grad,
                           Workspace& ws) const override;

  // Bytes one task in flight holds (on the CPU backend, one per worker thread) while this model
  // computes gradients on n examples and, when n_hvp > 0, Hessian-vector products on n_hvp
  // examples; buffers grow to the larger batch and never shrink. Counted: the Workspace (every
  // layer's output and context, the two ping-pong gradient buffers, the probabilities; with
  // HVPs the tangents of all of these, sized like them), the per-thread scratch of residual
  // blocks (models/residual.h) and, in float, oneDNN's per-thread reorder buffers for blocked
  // layouts and per-piece weight gradients (models/conv2d_dnnl.h). Contexts are whatever each
  // layer's forward saves (batch-norm x̂, a block's inner activations, max-pool indices): rather
  // than restate each layer's rule here, one forward of one and one of two zero examples measure
  // them (their sizes are affine in the batch size). Not counted: oneDNN's primitives and
  // their own scratchpads. metatrain's
  // start-up line prints it (DESIGN §11), so that a user can size threads and meta_batch;
  // tests/models/resnet12_test.cpp checks it against what the passes allocate. n: the largest batch
  // a gradient takes (the query set); support: the support set's size, whose gradients always run
  // and whose HVPs run when hvp is true.
  int64_t activation_bytes(int n, int support, bool hvp) const;

  Shape input_shape() const { return input_; }
  int classes() const { return classes_; }
  const std::vector<std::unique_ptr<Layer<T>>>& layers() const { return layers_; }

 private:
  struct Buffers;
  // Layers [from, to) on m examples from their input `in`; returns the last one's output.
  const T* forward_layers(const T* theta, int m, const T* in, size_t from, size_t to,
                          Buffers& w) const;
  // From layer `first` on, its input `features` (b.x when first is 0).
  LossStats forward(const T* theta, const Batch<T>& b, Buffers& w, size_t first = 0,
                    const T* features = nullptr) const;
  // Gradients into grad; with v (after r_forward), also the R-pass into Hv in the same sweep.
  // Down to layer `first` (its input `features`), as forward.
  void backward(const T* theta, const Batch<T>& b, Buffers& w, T* grad, const T* v = nullptr,
                T* Hv = nullptr, size_t first = 0, const T* features = nullptr) const;
  // R_act[l] of every layer along v (after forward).
  void r_forward(const T* theta, const Batch<T>& b, const T* v, Buffers& w) const;

  Shape input_;
  int classes_;
  std::vector<std::unique_ptr<Layer<T>>> layers_;
  std::vector<int64_t> offset_;               // parameter offset per layer (-1: no parameters)
  std::vector<const Residual<T>*> residual_;  // per layer: the block it is, or null
  ParamLayout layout_;
};

}  // namespace mt
