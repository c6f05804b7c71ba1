// Sequential model (models/sequential.h): drives the four layer passes in order.
#include "models/sequential.h"

#include <algorithm>
#include <string>
#include <type_traits>

#include "core/check.h"
#include "models/conv2d_dnnl.h"
#include "models/residual.h"
#include "models/softmax_xent.h"

namespace mt {

namespace {
// The batch's per-example loss weights, or null when they are all 1.
template <typename T>
const T* weights(const Batch<T>& b) {
  return b.weight.empty() ? nullptr : b.weight.data();
}
}  // namespace

// act[l]: output of layer l; R_act[l]: its R{·} tangent. dL/d act[l] and its tangent live in
// d_act[l % 2] and R_d_act[l % 2]: the backward sweep needs only two consecutive layers' worth.
// Buffers only grow (ensure_size), so their sizes may exceed the current batch's needs.
template <typename T>
struct Sequential<T>::Buffers : Workspace {
  std::vector<std::vector<T>> act, R_act;
  std::vector<T> d_act[2], R_d_act[2];
  // A residual block's R-activations from r_forward and inner gradients from backward, kept
  // for its r_backward in the same HVP (Residual::r_backward_kept): per block, and one shared.
  std::vector<std::vector<T>> kept_R;
  std::vector<T> kept_d;
  std::vector<LayerContext<T>> ctx;
  std::vector<T> prob;
};

template <typename T>
void Sequential<T>::add(const std::string& name, std::unique_ptr<Layer<T>> layer) {
  const Shape expected = layers_.empty() ? input_ : layers_.back()->out_shape();
  MT_CHECK(layer->in_shape() == expected, "layer ", name, " input shape mismatch");
  int64_t offset = -1;
  for (const ParamShape& p : layer->param_shapes()) {
    const int64_t o = layout_.add(name + "." + p.name, p.shape);
    if (offset < 0) offset = o;
  }
  offset_.push_back(offset);
  residual_.push_back(dynamic_cast<const Residual<T>*>(layer.get()));
  layers_.push_back(std::move(layer));
}

template <typename T>
std::unique_ptr<Workspace> Sequential<T>::make_workspace() const {
  auto w = std::make_unique<Buffers>();
  const size_t L = layers_.size();
  w->act.resize(L);
  w->R_act.resize(L);
  w->kept_R.resize(L);
  w->ctx.resize(L);
  return w;
}

template <typename T>
void Sequential<T>::init(T* theta, uint64_t seed) const {
  Rng rng(seed, 0, 0, Stream::kInit);
  for (size_t l = 0; l < layers_.size(); ++l)
    if (offset_[l] >= 0) layers_[l]->init(theta + offset_[l], rng);
}

template <typename T>
const T* Sequential<T>::forward_layers(const T* theta, int m, const T* in, size_t from, size_t to,
                                       Buffers& w) const {
  for (size_t l = from; l < to; ++l) {
    ensure_size(w.act[l], static_cast<size_t>(m) * layers_[l]->out_shape().size());
    const T* W = offset_[l] >= 0 ? theta + offset_[l] : nullptr;
    layers_[l]->forward(m, W, in, w.act[l].data(), w.ctx[l]);
    in = w.act[l].data();
  }
  return in;
}

template <typename T>
LossStats Sequential<T>::forward(const T* theta, const Batch<T>& b, Buffers& w, size_t first,
                                 const T* features) const {
  MT_CHECK(b.item == input_, "batch example shape does not match the model input");
  MT_CHECK(!layers_.empty() && layers_.back()->out_shape().size() == classes_,
           "last layer must output one logit per class");
  const int m = b.n;
  MT_CHECK(b.weight.empty() || b.weight.size() == static_cast<size_t>(m),
           "batch weights: ", b.weight.size(), " for ", m, " examples");
  const T* in =
      forward_layers(theta, m, first == 0 ? b.x.data() : features, first, layers_.size(), w);
  ensure_size(w.prob, static_cast<size_t>(m) * classes_);
  int correct = 0;
  LossStats s;
  s.loss = SoftmaxCrossEntropy<T>::forward(m, classes_, in, b.y.data(), w.prob.data(), &correct,
                                           weights(b));
  s.acc = m > 0 ? static_cast<double>(correct) / m : 0.0;
  return s;
}

// The backward sweep from the loss: gradients into grad (none when it is null: the weight passes
// are skipped) and, when v is given (after r_forward), the R-pass of the same layer right after
// it into Hv.
template <typename T>
void Sequential<T>::backward(const T* theta, const Batch<T>& b, Buffers& w, T* grad, const T* v,
                             T* Hv, size_t first, const T* features) const {
  const int m = b.n;
  const size_t L = layers_.size();
  const size_t top = (L - 1) % 2;
  ensure_size(w.d_act[top], w.act[L - 1].size());
  SoftmaxCrossEntropy<T>::backward(m, classes_, w.prob.data(), b.y.data(), w.d_act[top].data(),
                                   weights(b));
  if (v) {
    ensure_size(w.R_d_act[top], w.act[L - 1].size());
    SoftmaxCrossEntropy<T>::r_backward(m, classes_, w.prob.data(), w.R_act[L - 1].data(),
                                       w.R_d_act[top].data(), weights(b));
  }
  for (size_t l = L; l-- > first;) {
    const T* x = l == 0 ? b.x.data() : l == first ? features : w.act[l - 1].data();
    const T* dy = w.d_act[l % 2].data();
    T* dx = nullptr;
    T* R_dx = nullptr;
    if (l > first) {
      ensure_size(w.d_act[(l - 1) % 2], w.act[l - 1].size());
      dx = w.d_act[(l - 1) % 2].data();
      if (v) {
        ensure_size(w.R_d_act[(l - 1) % 2], w.act[l - 1].size());
        R_dx = w.R_d_act[(l - 1) % 2].data();
      }
    }
    const bool has_w = offset_[l] >= 0;
    const T* W = has_w ? theta + offset_[l] : nullptr;
    T* dW = has_w && grad ? grad + offset_[l] : nullptr;
    const Residual<T>* block = v ? residual_[l] : nullptr;
    T* kept_d = nullptr;
    if (block) {
      ensure_size(w.kept_d, static_cast<size_t>(m) * block->saved_per_example());
      kept_d = w.kept_d.data();
      block->backward_keep(m, W, x, w.ctx[l], dy, dx, dW, kept_d);
    } else {
      layers_[l]->backward(m, W, x, w.ctx[l], dy, dx, dW);
    }
    if (!v) continue;
    const T* R_x = l == 0 ? nullptr : w.R_act[l - 1].data();
    const T* R_W = has_w ? v + offset_[l] : nullptr;
    T* R_dW = has_w ? Hv + offset_[l] : nullptr;
    if (block)
      block->r_backward_kept(m, W, R_W, x, R_x, w.ctx[l], dy, w.R_d_act[l % 2].data(), R_dx, R_dW,
                             w.kept_R[l].data(), kept_d);
    else
      layers_[l]->r_backward(m, W, R_W, x, R_x, w.ctx[l], dy, w.R_d_act[l % 2].data(), R_dx, R_dW);
  }
}

template <typename T>
void Sequential<T>::r_forward(const T* theta, const Batch<T>& b, const T* v, Buffers& w) const {
  const T* R_in = nullptr;  // the direction has no component in the input images
  for (size_t l = 0; l < layers_.size(); ++l) {
    const T* x = l == 0 ? b.x.data() : w.act[l - 1].data();
    const bool has_w = offset_[l] >= 0;
    ensure_size(w.R_act[l], w.act[l].size());
    const T* W = has_w ? theta + offset_[l] : nullptr;
    const T* R_W = has_w ? v + offset_[l] : nullptr;
    if (const Residual<T>* block = residual_[l]) {
      ensure_size(w.kept_R[l], static_cast<size_t>(b.n) * block->saved_per_example());
      block->r_forward_keep(b.n, W, R_W, x, R_in, w.ctx[l], w.R_act[l].data(), w.kept_R[l].data());
    } else {
      layers_[l]->r_forward(b.n, W, R_W, x, R_in, w.ctx[l], w.R_act[l].data());
    }
    R_in = w.R_act[l].data();
  }
}

template <typename T>
LossStats Sequential<T>::loss_grad(const T* theta, const Batch<T>& b, T* grad,
                                   Workspace& ws) const {
  Buffers& w = static_cast<Buffers&>(ws);
  const LossStats s = forward(theta, b, w);
  if (grad) backward(theta, b, w, grad);
  return s;
}

template <typename T>
LossStats Sequential<T>::hvp(const T* theta, const Batch<T>& b, const T* v, T* grad, T* Hv,
                             Workspace& ws) const {
  Buffers& w = static_cast<Buffers&>(ws);
  const LossStats s = forward(theta, b, w);
  r_forward(theta, b, v, w);
  backward(theta, b, w, grad, v, Hv);
  return s;
}

template <typename T>
int Sequential<T>::split_layer(int tensor) const {
  MT_CHECK(tensor >= 0 && tensor < static_cast<int>(layout_.tensors().size()), "tensor ", tensor);
  const int64_t at = layout_.tensors()[static_cast<size_t>(tensor)].offset;
  int layer = 0;
  for (size_t l = 0; l < layers_.size(); ++l)
    if (offset_[l] >= 0 && offset_[l] <= at) layer = static_cast<int>(l);
  return layer;
}

template <typename T>
int64_t Sequential<T>::feature_count(int layer, int n) const {
  MT_CHECK(layer > 0 && layer < static_cast<int>(layers_.size()), "split at layer ", layer);
  return static_cast<int64_t>(n) * layers_[static_cast<size_t>(layer)]->in_shape().size();
}

template <typename T>
void Sequential<T>::features(int layer, const T* theta, const Batch<T>& b, T* out,
                             Workspace& ws) const {
  Buffers& w = static_cast<Buffers&>(ws);
  const int64_t count = feature_count(layer, b.n);
  const T* in = forward_layers(theta, b.n, b.x.data(), 0, static_cast<size_t>(layer), w);
  std::copy(in, in + count, out);
}

template <typename T>
LossStats Sequential<T>::loss_grad_from(int layer, const T* theta, const T* features,
                                        const Batch<T>& b, T* grad, Workspace& ws) const {
  Buffers& w = static_cast<Buffers&>(ws);
  feature_count(layer, b.n);  // checks the layer
  const size_t first = static_cast<size_t>(layer);
  const LossStats s = forward(theta, b, w, first, features);
  if (!grad) return s;
  int64_t from = layout_.total();  // the first parameter of the layers from `first` on
  for (size_t l = first; l < layers_.size() && from == layout_.total(); ++l)
    if (offset_[l] >= 0) from = offset_[l];
  std::fill(grad, grad + from, T(0));
  backward(theta, b, w, grad, nullptr, nullptr, first, features);
  return s;
}

template <typename T>
void Sequential<T>::example_losses(const T* theta, const Batch<T>& b, T* l, Workspace& ws) const {
  Buffers& w = static_cast<Buffers&>(ws);
  forward(theta, b, w);
  SoftmaxCrossEntropy<T>::example_losses(b.n, classes_, w.act.back().data(), b.y.data(), l);
}

template <typename T>
void Sequential<T>::loss_directional(const T* theta, const Batch<T>& b, const T* v, T* dl,
                                     Workspace& ws) const {
  Buffers& w = static_cast<Buffers&>(ws);
  forward(theta, b, w);
  r_forward(theta, b, v, w);
  SoftmaxCrossEntropy<T>::r_example_losses(b.n, classes_, w.prob.data(), b.y.data(),
                                           w.R_act.back().data(), dl);
}

namespace {
template <typename T>
int64_t context_bytes(const LayerContext<T>& c) {
  int64_t bytes =
      static_cast<int64_t>(c.saved.capacity() * sizeof(T) + c.index.capacity() * sizeof(int32_t));
  for (const LayerContext<T>& s : c.sub) bytes += context_bytes(s);
  return bytes;
}
}  // namespace

template <typename T>
int64_t Sequential<T>::activation_bytes(int n, int support, bool hvp) const {
  const int64_t h = hvp ? support : 0, m = std::max<int64_t>(n, h);
  // The contexts, measured at 1 and 2 examples and extended to m (capacities: the vectors grow
  // from empty, so these are the bytes allocated).
  int64_t ctx[2] = {0, 0};
  const std::vector<T> theta(layout_.total(), T(0));
  for (int k = 1; k <= 2; ++k) {
    const auto ws = make_workspace();
    Buffers& w = static_cast<Buffers&>(*ws);
    Batch<T> b;
    b.resize(input_, k);
    forward(theta.data(), b, w);
    for (const LayerContext<T>& c : w.ctx) ctx[k - 1] += context_bytes(c);
  }
  // Elements per example. Buffers: act (every output), d_act[p] (the largest output of the
  // layers of parity p), prob; with HVPs R_act and R_d_act, which take act's sizes, i.e. m.
  // Residual scratch (residual.cpp, one set per thread shared by the blocks: the maximum over
  // blocks of each vector): sc, dz, d[2] in the gradient passes; R_sc, R_dz, R_d[2] in the
  // R-passes, on the HVP's batch; and what an HVP keeps for the blocks' r_backward (Buffers:
  // kept_R per block, kept_d shared, each a block's saved size). A block's inner layers are
  // taken to output its output shape (ResNet-12's do). oneDNN's reorder buffers and the weight
  // pass's per-piece results (conv2d_dnnl.h, float only, per thread, grow-only over the passes of
  // both batch sizes).
  int64_t act = 0, ping[2] = {0, 0}, sc = 0, out_max = 0, saved = 0, saved_sum = 0;
  dnnl_conv::Scratch scratch;
  auto conv_slots = [&](const Shape& in, const Shape& out, int kernel = 3) {
    if (!std::is_same_v<T, float>) return;
    const int stride = out.h < in.h ? 2 : 1;
    const dnnl_conv::Geometry g{in.c, in.h, in.w, out.c, out.h, out.w, stride, kernel};
    for (const int b : {n, support}) dnnl_conv::add_scratch(g, b, scratch);
  };
  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer<T>& layer = *layers_[l];
    const int64_t out = layer.out_shape().size();
    act += out;
    ping[l % 2] = std::max(ping[l % 2], out);
    const std::string kind = layer.kind();
    if (kind == "conv2d" || kind == "conv2d_1x1") {
      conv_slots(layer.in_shape(), layer.out_shape(), kind == "conv2d" ? 3 : 1);
    } else if (const auto* r = dynamic_cast<const Residual<T>*>(&layer)) {
      // The first layer gets no input gradient: its blocks' sc then holds only outputs.
      sc = std::max(sc, l == 0 ? out : std::max(r->in_shape().size(), out));
      out_max = std::max(out_max, out);
      saved = std::max(saved, r->saved_per_example());
      saved_sum += r->saved_per_example();
      conv_slots(r->in_shape(), r->out_shape());   // conv1, the shortcut's
      conv_slots(r->out_shape(), r->out_shape());  // conv2, conv3
    }
  }
  int64_t elements = m * (act + ping[0] + ping[1] + classes_ + sc + 3 * out_max);
  if (h > 0) elements += m * (act + ping[0] + ping[1]) + h * (saved_sum + saved + 4 * out_max);
  elements += scratch.floats();
  return elements * static_cast<int64_t>(sizeof(T)) + ctx[0] + (ctx[1] - ctx[0]) * (m - 1);
}

template class Sequential<float>;
template class Sequential<double>;

}  // namespace mt
