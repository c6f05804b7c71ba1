// Residual block (models/residual.h): the four passes of both branches, the sum at z, and the
// fan-out of x (dx and R{dx} summed over the branches).
#include "models/residual.h"

#include <algorithm>

#include "core/check.h"
#include "core/cpu_kernels.h"
#include "core/parallel_for.h"

namespace mt {

namespace {

// Per-thread scratch of the passes after forward (layers are stateless and shared by threads;
// blocks do not nest, so one set per thread serves every block in turn). R_act: the tangents of
// the activations forward keeps (same offsets as ctx.saved); sc / R_sc: a shortcut's output or
// input gradient; dz / R_dz: the gradient at z and its tangent; d / R_d: a branch's gradients,
// alternating between consecutive layers.
template <typename T>
struct Scratch {
  std::vector<T> R_act, sc, R_sc, dz, R_dz, d[2], R_d[2];
};

template <typename T>
Scratch<T>& scratch() {
  thread_local Scratch<T> s;
  return s;
}

template <typename T>
T* grow(std::vector<T>& v, int64_t n) {
  ensure_size(v, static_cast<size_t>(n));
  return v.data();
}

// y += a over n values, compiled per instruction set (core/cpu_kernels.h).
template <typename T>
MT_DISPATCH_CLONES void add_run(int64_t n, const T* a, T* y) {
  for (int64_t k = 0; k < n; ++k) y[k] += a[k];
}

template <typename T>
void add_into(int64_t n, const T* a, T* y) {
  for_task_runs(n, int64_t{1} << 16, [&](int64_t b, int64_t e) { add_run(e - b, a + b, y + b); });
}

// A part's slice of the block's parameters (or of a gradient / direction of that layout).
template <typename T, typename P>
T* slice(T* W, const P& p) {
  return p.param < 0 || !W ? nullptr : W + p.param;
}

}  // namespace

template <typename T>
void Residual<T>::add(Branch& branch, const std::string& name, std::unique_ptr<Layer<T>> layer) {
  MT_CHECK(layer->kind() != "residual", "residual block: ", name, ": blocks do not nest");
  MT_CHECK(layer->in_shape() == branch_out(branch), "residual block: layer ", name,
           " input shape mismatch");
  Part p;
  p.name = name;
  p.layer = std::move(layer);
  branch.push_back(std::move(p));
  relayout();
}

template <typename T>
void Residual<T>::add_main(const std::string& name, std::unique_ptr<Layer<T>> layer) {
  add(main_, name, std::move(layer));
}

template <typename T>
void Residual<T>::add_shortcut(const std::string& name, std::unique_ptr<Layer<T>> layer) {
  add(shortcut_, "shortcut." + name, std::move(layer));
}

template <typename T>
void Residual<T>::set_post(const std::string& name, std::unique_ptr<Layer<T>> layer) {
  MT_CHECK(post_.empty(), "residual block: post is set twice");
  MT_CHECK(!main_.empty() && layer->in_shape() == branch_out(main_) &&
               layer->out_shape() == layer->in_shape(),
           "residual block: post ", name, " must map the main branch's output shape to itself");
  Part p;
  p.name = name;
  p.layer = std::move(layer);
  post_.push_back(std::move(p));
  relayout();
}

template <typename T>
void Residual<T>::relayout() {
  int64_t param = 0, off = 0;
  int ctx = 0;
  for (Branch* b : {&main_, &shortcut_, &post_})
    for (size_t k = 0; k < b->size(); ++k) {
      Part& p = (*b)[k];
      const int64_t n = p.layer->num_params();
      p.param = n > 0 ? param : -1;
      param += n;
      p.ctx = ctx++;
      p.out = -1;
      if (b != &post_ && k + 1 < b->size()) {
        p.out = off;
        off += p.layer->out_shape().size();
      }
    }
  z_ = off;
  saved_ = off + (main_.empty() ? 0 : branch_out(main_).size());
}

template <typename T>
void Residual<T>::check_complete() const {
  MT_CHECK(!main_.empty(), "residual block without a main branch");
  MT_CHECK(branch_out(shortcut_) == branch_out(main_),
           "residual block: the shortcut's output shape differs from the main branch's");
  MT_CHECK(post_.empty() || post_[0].layer->in_shape() == branch_out(main_),
           "residual block: post does not take the main branch's output shape");
}

template <typename T>
Shape Residual<T>::out_shape() const {
  return post_.empty() ? branch_out(main_) : post_[0].layer->out_shape();
}

template <typename T>
std::vector<ParamShape> Residual<T>::param_shapes() const {
  std::vector<ParamShape> all;
  for (const Branch* b : {&main_, &shortcut_, &post_})
    for (const Part& p : *b)
      for (const ParamShape& s : p.layer->param_shapes())
        all.push_back({p.name + "." + s.name, s.shape});
  return all;
}

template <typename T>
void Residual<T>::init(T* W, Rng& rng) const {
  for (const Branch* b : {&main_, &shortcut_, &post_})
    for (const Part& p : *b)
      if (p.param >= 0) p.layer->init(W + p.param, rng);
}

// ---- forward --------------------------------------------------------------------------------

template <typename T>
void Residual<T>::forward_branch(int m, const Branch& b, const T* W, const T* x,
                                 LayerContext<T>& ctx, T* last) const {
  for (size_t k = 0; k < b.size(); ++k) {
    const Part& p = b[k];
    const T* in = k == 0 ? x : ctx.saved.data() + m * b[k - 1].out;
    T* out = k + 1 == b.size() ? last : ctx.saved.data() + m * p.out;
    p.layer->forward(m, slice(W, p), in, out, ctx.sub[p.ctx]);
  }
}

template <typename T>
void Residual<T>::forward(int m, const T* W, const T* x, T* y, LayerContext<T>& ctx) const {
  check_complete();
  const size_t parts = main_.size() + shortcut_.size() + post_.size();
  if (ctx.sub.size() < parts) ctx.sub.resize(parts);
  ensure_size(ctx.saved, static_cast<size_t>(m) * saved_);
  const int64_t n = m * branch_out(main_).size();
  T* z = ctx.saved.data() + m * z_;
  forward_branch(m, main_, W, x, ctx, z);
  if (shortcut_.empty()) {
    add_into(n, x, z);
  } else {
    T* s = grow(scratch<T>().sc, n);
    forward_branch(m, shortcut_, W, x, ctx, s);
    add_into(n, static_cast<const T*>(s), z);
  }
  if (post_.empty())
    std::copy(z, z + n, y);
  else
    post_[0].layer->forward(m, slice(W, post_[0]), z, y, ctx.sub[post_[0].ctx]);
}

// ---- r_forward ------------------------------------------------------------------------------

template <typename T>
void Residual<T>::r_forward_branch(int m, const Branch& b, const T* W, const T* R_W, const T* x,
                                   const T* R_x, const LayerContext<T>& ctx, T* R_act,
                                   T* R_last) const {
  for (size_t k = 0; k < b.size(); ++k) {
    const Part& p = b[k];
    const T* in = k == 0 ? x : ctx.saved.data() + m * b[k - 1].out;
    const T* R_in = k == 0 ? R_x : R_act + m * b[k - 1].out;
    T* R_out = k + 1 == b.size() ? R_last : R_act + m * p.out;
    p.layer->r_forward(m, slice(W, p), slice(R_W, p), in, R_in, ctx.sub[p.ctx], R_out);
  }
}

template <typename T>
T* Residual<T>::r_forward_sum(int m, const T* W, const T* R_W, const T* x, const T* R_x,
                              const LayerContext<T>& ctx, T* R_act) const {
  const int64_t n = m * branch_out(main_).size();
  T* R_z = R_act + m * z_;
  r_forward_branch(m, main_, W, R_W, x, R_x, ctx, R_act, R_z);
  if (!shortcut_.empty()) {
    T* R_s = grow(scratch<T>().R_sc, n);
    r_forward_branch(m, shortcut_, W, R_W, x, R_x, ctx, R_act, R_s);
    add_into(n, static_cast<const T*>(R_s), R_z);
  } else if (R_x) {
    add_into(n, R_x, R_z);
  }
  return R_z;
}

template <typename T>
void Residual<T>::r_forward(int m, const T* W, const T* R_W, const T* x, const T* R_x,
                            const LayerContext<T>& ctx, T* R_y) const {
  r_forward_keep(m, W, R_W, x, R_x, ctx, R_y, grow(scratch<T>().R_act, m * saved_));
}

template <typename T>
void Residual<T>::r_forward_keep(int m, const T* W, const T* R_W, const T* x, const T* R_x,
                                 const LayerContext<T>& ctx, T* R_y, T* R_act) const {
  const T* R_z = r_forward_sum(m, W, R_W, x, R_x, ctx, R_act);
  const int64_t n = m * branch_out(main_).size();
  if (post_.empty()) {
    std::copy(R_z, R_z + n, R_y);
    return;
  }
  const Part& p = post_[0];
  p.layer->r_forward(m, slice(W, p), slice(R_W, p), ctx.saved.data() + m * z_, R_z, ctx.sub[p.ctx],
                     R_y);
}

// ---- backward -------------------------------------------------------------------------------

template <typename T>
void Residual<T>::backward_branch(int m, const Branch& b, const T* W, const T* x,
                                  const LayerContext<T>& ctx, const T* dz, T* dx, T* dW,
                                  T* kept_d) const {
  Scratch<T>& s = scratch<T>();
  const T* d = dz;
  for (size_t k = b.size(); k-- > 0;) {
    const Part& p = b[k];
    const T* in = k == 0 ? x : ctx.saved.data() + m * b[k - 1].out;
    T* d_in = k == 0   ? dx
              : kept_d ? kept_d + m * b[k - 1].out
                       : grow(s.d[k % 2], m * p.layer->in_shape().size());
    p.layer->backward(m, slice(W, p), in, ctx.sub[p.ctx], d, d_in, slice(dW, p));
    d = d_in;
  }
}

template <typename T>
void Residual<T>::backward(int m, const T* W, const T* x, const LayerContext<T>& ctx, const T* dy,
                           T* dx, T* dW) const {
  backward_keep(m, W, x, ctx, dy, dx, dW, nullptr);
}

template <typename T>
void Residual<T>::backward_keep(int m, const T* W, const T* x, const LayerContext<T>& ctx,
                                const T* dy, T* dx, T* dW, T* kept_d) const {
  Scratch<T>& s = scratch<T>();
  const int64_t n = m * branch_out(main_).size(), nx = m * in_.size();
  const T* dz = dy;
  if (!post_.empty()) {
    const Part& p = post_[0];
    T* d = kept_d ? kept_d + m * z_ : grow(s.dz, n);
    p.layer->backward(m, slice(W, p), ctx.saved.data() + m * z_, ctx.sub[p.ctx], dy, d,
                      slice(dW, p));
    dz = d;
  }
  backward_branch(m, main_, W, x, ctx, dz, dx, dW, kept_d);
  if (!shortcut_.empty()) {
    T* sx = dx ? grow(s.sc, nx) : nullptr;
    backward_branch(m, shortcut_, W, x, ctx, dz, sx, dW, kept_d);
    if (dx) add_into(nx, static_cast<const T*>(sx), dx);
  } else if (dx) {
    add_into(nx, dz, dx);
  }
}

// ---- r_backward -----------------------------------------------------------------------------

template <typename T>
void Residual<T>::r_backward_branch(int m, const Branch& b, const T* W, const T* R_W, const T* x,
                                    const T* R_x, const LayerContext<T>& ctx, const T* R_act,
                                    const T* dz, const T* R_dz, T* R_dx, T* R_dW,
                                    const T* kept_d) const {
  Scratch<T>& s = scratch<T>();
  const T *d = dz, *R_d = R_dz;
  for (size_t k = b.size(); k-- > 0;) {
    const Part& p = b[k];
    const T* in = k == 0 ? x : ctx.saved.data() + m * b[k - 1].out;
    const T* R_in = k == 0 ? R_x : R_act + m * b[k - 1].out;
    const int64_t n_in = m * p.layer->in_shape().size();
    // The layer below needs the plain gradient at this layer's input too: kept, or backward
    // again.
    const T* d_in = nullptr;
    if (k > 0 && kept_d) {
      d_in = kept_d + m * b[k - 1].out;
    } else if (k > 0) {
      T* d_again = grow(s.d[k % 2], n_in);
      p.layer->backward(m, slice(W, p), in, ctx.sub[p.ctx], d, d_again, nullptr);
      d_in = d_again;
    }
    T* R_d_in = k == 0 ? R_dx : grow(s.R_d[k % 2], n_in);
    p.layer->r_backward(m, slice(W, p), slice(R_W, p), in, R_in, ctx.sub[p.ctx], d, R_d, R_d_in,
                        slice(R_dW, p));
    d = d_in;
    R_d = R_d_in;
  }
}

template <typename T>
void Residual<T>::r_backward(int m, const T* W, const T* R_W, const T* x, const T* R_x,
                             const LayerContext<T>& ctx, const T* dy, const T* R_dy, T* R_dx,
                             T* R_dW) const {
  r_backward_kept(m, W, R_W, x, R_x, ctx, dy, R_dy, R_dx, R_dW, nullptr, nullptr);
}

template <typename T>
void Residual<T>::r_backward_kept(int m, const T* W, const T* R_W, const T* x, const T* R_x,
                                  const LayerContext<T>& ctx, const T* dy, const T* R_dy, T* R_dx,
                                  T* R_dW, const T* kept_R, const T* kept_d) const {
  Scratch<T>& s = scratch<T>();
  const int64_t n = m * branch_out(main_).size(), nx = m * in_.size();
  const T* R_act = kept_R;
  if (!R_act) {
    T* again = grow(s.R_act, m * saved_);
    r_forward_sum(m, W, R_W, x, R_x, ctx, again);
    R_act = again;
  }
  const T* R_z = R_act + m * z_;
  const T *dz = dy, *R_dz = R_dy;
  if (!post_.empty()) {
    const Part& p = post_[0];
    const T* z = ctx.saved.data() + m * z_;
    const T* d = kept_d ? kept_d + m * z_ : nullptr;
    if (!d) {
      T* d_again = grow(s.dz, n);
      p.layer->backward(m, slice(W, p), z, ctx.sub[p.ctx], dy, d_again, nullptr);
      d = d_again;
    }
    T* R_d = grow(s.R_dz, n);
    p.layer->r_backward(m, slice(W, p), slice(R_W, p), z, R_z, ctx.sub[p.ctx], dy, R_dy, R_d,
                        slice(R_dW, p));
    dz = d;
    R_dz = R_d;
  }
  r_backward_branch(m, main_, W, R_W, x, R_x, ctx, R_act, dz, R_dz, R_dx, R_dW, kept_d);
  if (!shortcut_.empty()) {
    T* sx = R_dx ? grow(s.sc, nx) : nullptr;
    r_backward_branch(m, shortcut_, W, R_W, x, R_x, ctx, R_act, dz, R_dz, sx, R_dW, kept_d);
    if (R_dx) add_into(nx, static_cast<const T*>(sx), R_dx);
  } else if (R_dx) {
    add_into(nx, R_dz, R_dx);
  }
}

template class Residual<float>;
template class Residual<double>;

}  // namespace mt
