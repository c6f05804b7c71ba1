// A residual block (DESIGN §4), y = post(main(x) + shortcut(x)): a main branch and a shortcut
// (each a chain of layers; an empty shortcut is the identity), summed, then an optional
// activation `post`. x fans out to both branches, so dx and R{dx} are the sums of both branches'.
// One Layer with all four passes, so a Sequential takes it like any other layer.
//
// Parameters: the sub-layers' tensors in order main, shortcut, post, named "<part>.<param>"
// ("conv1.weight", "bn1.gamma", "shortcut.conv.weight"), so a Sequential layer "block1" names
// them "block1.conv1.weight". Nesting blocks is not supported.
//
// Memory. forward keeps in the context, per example: the output of every sub-layer but each
// branch's last (they are the inputs the later passes read) and z = main(x) + shortcut(x) (post's
// input), in ctx.saved; and the sub-layers' own contexts in ctx.sub (batch norm: x̂ and σ; conv:
// its im2col in double, nothing in float). The passes after forward use per-thread scratch, not
// kept between calls: the tangents R{·} of those activations and two gradient buffers per branch.
// The context is const in the R-passes and backward, so r_backward recomputes what they produced:
// the sub-layers' r_forward (their R-activations) and, below each branch's first layer, backward
// (their output gradients, without the weight passes): for ResNet-12's blocks 11 convolution
// passes per conv in an HVP (whose gradient is not wanted). The *_keep / *_kept passes take
// buffers for both from the caller instead (Sequential's HVPs): 8 passes.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/layer.h"

namespace mt {

template <typename T>
class Residual : public Layer<T> {
 public:
  explicit Residual(Shape in) : in_(in) {}

  // Builders; each checks that the layer takes the shape its predecessor gives (the block input
  // for a branch's first). The shortcut's output (x itself when it is empty) must have the main
  // branch's output shape, which post must keep; forward checks that the block is complete.
  void add_main(const std::string& name, std::unique_ptr<Layer<T>> layer);
  void add_shortcut(const std::string& name, std::unique_ptr<Layer<T>> layer);  // "shortcut.<name>"
  void set_post(const std::string& name, std::unique_ptr<Layer<T>> layer);

  std::string kind() const override { return "residual"; }
  Shape in_shape() const override { return in_; }
  Shape out_shape() const override;
  std::vector<ParamShape> param_shapes() const override;
  void init(T* W, Rng& rng) const override;  // each sub-layer's init, in parameter order

  void forward(int m, const T* W, const T* x, T* y, LayerContext<T>& ctx) const override;
  void backward(int m, const T* W, const T* x, const LayerContext<T>& ctx, const T* dy, T* dx,
                T* dW) const override;
  void r_forward(int m, const T* W, const T* R_W, const T* x, const T* R_x,
                 const LayerContext<T>& ctx, T* R_y) const override;
  void r_backward(int m, const T* W, const T* R_W, const T* x, const T* R_x,
                  const LayerContext<T>& ctx, const T* dy, const T* R_dy, T* R_dx,
                  T* R_dW) const override;

  // Elements of ctx.saved that forward keeps per example (the sub-layers' contexts aside).
  int64_t saved_per_example() const { return saved_; }

  // An HVP without the recomputation (Sequential runs its HVPs so): r_forward_keep is r_forward
  // and keeps the block's R-activations in kept_R; backward_keep is backward and keeps the
  // gradients at those activations in kept_d; r_backward_kept is r_backward reading both
  // instead of running r_forward and backward again (a null one runs again: r_backward is
  // r_backward_kept with both null). Each buffer holds m · saved_per_example() values at
  // ctx.saved's offsets. Same bits as the passes above; 8 convolution passes per conv of a block
  // in an HVP without its gradient, not 11.
  void r_forward_keep(int m, const T* W, const T* R_W, const T* x, const T* R_x,
                      const LayerContext<T>& ctx, T* R_y, T* kept_R) const;
  void backward_keep(int m, const T* W, const T* x, const LayerContext<T>& ctx, const T* dy, T* dx,
                     T* dW, T* kept_d) const;
  void r_backward_kept(int m, const T* W, const T* R_W, const T* x, const T* R_x,
                       const LayerContext<T>& ctx, const T* dy, const T* R_dy, T* R_dx, T* R_dW,
                       const T* kept_R, const T* kept_d) const;

  // The parts, for consumers that flatten the block (models/batched_net.h): each branch's layers
  // in order (an empty shortcut is the identity) and post (null when none). Their parameters
  // are the block's in this order: main, shortcut, post.
  std::vector<const Layer<T>*> main_layers() const { return layers_of(main_); }
  std::vector<const Layer<T>*> shortcut_layers() const { return layers_of(shortcut_); }
  const Layer<T>* post() const { return post_.empty() ? nullptr : post_[0].layer.get(); }

 private:
  // One sub-layer: its parameters at `param` in the block's slice (−1: none), its output at
  // `out` per example in ctx.saved (−1: a branch's last, which goes to z or to scratch), and
  // its context at ctx.sub[ctx].
  struct Part {
    std::string name;
    std::unique_ptr<Layer<T>> layer;
    int64_t param = -1, out = -1;
    int ctx = 0;
  };
  using Branch = std::vector<Part>;

  void add(Branch& branch, const std::string& name, std::unique_ptr<Layer<T>> layer);
  void relayout();  // recomputes every Part's param, out and ctx, and saved_ and z_
  void check_complete() const;
  Shape branch_out(const Branch& b) const { return b.empty() ? in_ : b.back().layer->out_shape(); }
  static std::vector<const Layer<T>*> layers_of(const Branch& b) {
    std::vector<const Layer<T>*> out;
    for (const Part& p : b) out.push_back(p.layer.get());
    return out;
  }

  // The passes of one branch from x (R_x) to `last` (its last layer's output); the inputs of its
  // layers are in ctx.saved (forward's), their tangents in R_act (at the same offsets).
  void forward_branch(int m, const Branch& b, const T* W, const T* x, LayerContext<T>& ctx,
                      T* last) const;
  void r_forward_branch(int m, const Branch& b, const T* W, const T* R_W, const T* x, const T* R_x,
                        const LayerContext<T>& ctx, T* R_act, T* R_last) const;
  // kept_d: where the gradients at the branch's inner activations go (null: scratch), or come
  // from in r_backward_branch (null: backward runs again).
  void backward_branch(int m, const Branch& b, const T* W, const T* x, const LayerContext<T>& ctx,
                       const T* dz, T* dx, T* dW, T* kept_d) const;
  void r_backward_branch(int m, const Branch& b, const T* W, const T* R_W, const T* x, const T* R_x,
                         const LayerContext<T>& ctx, const T* R_act, const T* dz, const T* R_dz,
                         T* R_dx, T* R_dW, const T* kept_d) const;
  // z's tangent (R_act at z_) from the branches' r_forward; returns R{z}.
  T* r_forward_sum(int m, const T* W, const T* R_W, const T* x, const T* R_x,
                   const LayerContext<T>& ctx, T* R_act) const;

  Shape in_;
  Branch main_, shortcut_, post_;  // post_: zero or one layer
  int64_t saved_ = 0, z_ = 0;      // per example: ctx.saved's size and z's offset in it
};

}  // namespace mt
