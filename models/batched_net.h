// The graph of a task-batched network (DESIGN §4, §5.1), written once over an executor of
// batched layer passes: the CUDA backend (models/net_cuda.cu) runs it with its kernels, the host
// twin backend (models/batched_twin.h) with the host twins of the same kernels, so that CI checks
// the whole batched forward / backward / R-passes against the per-task CPU layers.
//
// The plan is a small graph in topological order: each node names the node(s) it reads (−1: the
// network input); a residual block of the CPU model becomes its main-branch nodes, its shortcut
// nodes (reading the block input), an add node (the sum) and its post-activation. The passes run
// the nodes in order (forward, r_forward) or in reverse (backward, r_backward).
//
// Fan-out (the one rule for gradients): the gradient, and the R-gradient, into a node's output
// that feeds several consumers is the SUM of theirs. The reverse sweep's first consumer of a node
// (the highest-indexed) writes it; each later one writes its contribution into the fan-in scratch
// and adds that in (an add node, whose contribution is its own output gradient, adds directly).
// Which consumer writes is fixed by the plan (fan_in_rule), not found at run time, so every
// buffer is still overwritten before it is read in every call.
//
// Layouts (T tasks, n examples per task): activations [n, T·C, H, W]; logits [n, T·K]; labels
// [n·T] (example i of task t at i·T + t); parameters in the batched layout (core/batched_layout.h).
// The net keeps no state between calls except its buffers: forward writes what the later passes
// read (activations, batch-norm x̂ and σ, max-pool indices, probabilities).
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "core/batched_layout.h"
#include "core/batched_model.h"
#include "core/check.h"
#include "models/batched_kernels.h"
#include "models/sequential.h"

namespace mt {

constexpr int kNetInput = -1;  // a node input that is the network's input (the images)

// One node of the plan: its kind, one example's input and output shape, the index of its first
// parameter tensor in the layout (−1: none) and the nodes it reads.
struct NetLayer {
  enum Kind { kConv, kBatchNorm, kRelu, kMaxPool, kMeanPool, kLinear, kAdd } kind = kConv;
  Shape in, out;
  int stride = 1, kernel = 3;  // kConv: stride 1 or 2, K×K kernel (3: padding 1; 1: padding 0)
  double slope = 0;            // kRelu: the negative slope (0: ReLU; else LeakyReLU)
  int param = -1;
  std::array<int, 2> input{kNetInput, kNetInput};  // producers; input[1] only for kAdd
  int arity() const { return kind == kAdd ? 2 : 1; }
};

// The plan of a Sequential whose layers (and residual blocks' parts, models/residual.h) are conv
// (3×3 or 1×1), batch norm, (leaky) ReLU, 2×2 max-pool, global mean-pool and a final linear head
// (models/batched_plan.cpp). Throws mt::Error naming an unsupported layer.
template <typename T>
std::vector<NetLayer> batched_plan(const Sequential<T>& net);

// How many nodes read each node's output (an add reading one node twice counts twice).
inline std::vector<int> consumers(const std::vector<NetLayer>& plan) {
  std::vector<int> c(plan.size(), 0);
  for (const NetLayer& l : plan)
    for (int s = 0; s < l.arity(); ++s)
      if (l.input[s] >= 0) ++c[l.input[s]];
  return c;
}

// The fan-out rule (top of this file), fixed once per plan: accumulate[l][s] is true when the
// reverse sweep reaches another consumer of node l's input s first (a later node, or input 0 of
// the same add node), so that node l adds its gradient into that input's rather than writing it.
inline std::vector<std::array<bool, 2>> fan_in_rule(const std::vector<NetLayer>& plan) {
  std::vector<bool> written(plan.size(), false);
  std::vector<std::array<bool, 2>> accumulate(plan.size(), {false, false});
  for (size_t l = plan.size(); l-- > 0;)
    for (int s = 0; s < plan[l].arity(); ++s) {
      const int p = plan[l].input[s];
      if (p == kNetInput) continue;
      accumulate[l][s] = written[p];
      written[p] = true;
    }
  return accumulate;
}

// Elements of every buffer the net needs for up to `tasks` tasks of `n` examples each.
struct NetSizes {
  std::vector<int64_t> act;    // per node: act, d_act, R_act, R_d_act each
  std::vector<int64_t> saved;  // per node: batch-norm x̂ (0 for other nodes)
  std::vector<int64_t> sigma;  // per node: batch-norm σ
  std::vector<int64_t> index;  // per node: max-pool argmax (int32)
  int64_t work = 0, prob = 0, tasks = 0;
  int64_t fan = 0;  // the fan-in scratch: the largest output read by several nodes
};

inline NetSizes net_sizes(const std::vector<NetLayer>& plan, int tasks, int n, int classes) {
  NetSizes s;
  int max_c = 1;
  const std::vector<int> readers = consumers(plan);
  for (size_t l = 0; l < plan.size(); ++l) {
    const NetLayer& L = plan[l];
    const int64_t out = static_cast<int64_t>(n) * tasks * L.out.size();
    s.act.push_back(out);
    s.saved.push_back(L.kind == NetLayer::kBatchNorm ? out : 0);
    s.sigma.push_back(L.kind == NetLayer::kBatchNorm ? int64_t{tasks} * L.out.c : 0);
    s.index.push_back(L.kind == NetLayer::kMaxPool ? out : 0);
    if (readers[l] > 1) s.fan = std::max(s.fan, out);
    max_c = std::max(max_c, L.out.c);
  }
  s.work = bn_work_size(tasks, max_c);
  s.prob = static_cast<int64_t>(n) * tasks * classes;
  s.tasks = tasks;
  return s;
}

// Pointers into the owner's memory (host or device), sized by net_sizes.
template <typename S>
struct NetBuffers {
  std::vector<S*> act, d_act, R_act, R_d_act, xhat, sigma;
  std::vector<int32_t*> index;
  S* work = nullptr;
  S* prob = nullptr;
  S* fan = nullptr;            // the fan-in scratch (null when nothing fans out)
  S* loss = nullptr;           // [T] per-task mean cross-entropy
  int32_t* correct = nullptr;  // [T] argmax hits
};

// Allocates every buffer of `sizes` with alloc(count) / alloc_index(count).
template <typename S, typename Alloc, typename AllocIndex>
NetBuffers<S> make_net_buffers(const NetSizes& sizes, Alloc alloc, AllocIndex alloc_index) {
  NetBuffers<S> b;
  for (size_t l = 0; l < sizes.act.size(); ++l) {
    b.act.push_back(alloc(sizes.act[l]));
    b.d_act.push_back(alloc(sizes.act[l]));
    b.R_act.push_back(alloc(sizes.act[l]));
    b.R_d_act.push_back(alloc(sizes.act[l]));
    b.xhat.push_back(sizes.saved[l] ? alloc(sizes.saved[l]) : nullptr);
    b.sigma.push_back(sizes.sigma[l] ? alloc(sizes.sigma[l]) : nullptr);
    b.index.push_back(sizes.index[l] ? alloc_index(sizes.index[l]) : nullptr);
  }
  b.work = alloc(sizes.work);
  b.prob = alloc(sizes.prob);
  b.fan = sizes.fan ? alloc(sizes.fan) : nullptr;
  b.loss = alloc(sizes.tasks);
  b.correct = alloc_index(sizes.tasks);
  return b;
}

// Bytes of the net's buffers per task of n examples (activations and their gradients and
// tangents, batch-norm and max-pool saves, probabilities, fan-in scratch; not the executor's
// conv workspaces), for scalars of `scalar_bytes`: what each task of a call adds to the memory.
inline int64_t activation_bytes_per_task(const std::vector<NetLayer>& plan, int n,
                                         size_t scalar_bytes = sizeof(float)) {
  MT_CHECK(!plan.empty(), "an empty plan");
  const NetSizes sizes = net_sizes(plan, 1, n, plan.back().out.c);
  int64_t bytes = 0;
  make_net_buffers<char>(
      sizes, [&](int64_t k) -> char* { return bytes += k * scalar_bytes, nullptr; },
      [&](int64_t k) -> int32_t* { return bytes += k * sizeof(int32_t), nullptr; });
  return bytes;
}

// The passes over an executor Ex with, for l the node's index in the plan and T the call's
// tasks: conv_{forward,backward,r_forward,r_backward}(l, T, n, …) and linear_…(l, T, n, …) with
// the argument lists of BatchedConv2dCuda / BatchedLinearCuda; bn_…, relu_…, max_pool_…,
// mean_pool_…, softmax_xent_… and add with those of the host twins in batched_kernels.h.
// A new node kind is one case in each pass below and one executor method per backend.
template <typename S, class Ex>
class BatchedNet {
 public:
  // One net for every call of up to max_tasks tasks: buf holds max_tasks tasks' buffers, and
  // each pass names its own T (the layouts follow T; nothing is created per T).
  BatchedNet(const std::vector<NetLayer>& plan, const ParamLayout& layout, int max_tasks,
             int classes, Ex& ex, const NetBuffers<S>& buf)
      : plan_(plan),
        layout_(layout, max_tasks),
        max_tasks_(max_tasks),
        classes_(classes),
        ex_(ex),
        b_(buf),
        accumulate_(fan_in_rule(plan)) {}

  int max_tasks() const { return max_tasks_; }

  // Logits, per-task loss and hits in buf.loss / buf.correct, of the batch x, y at φ.
  void forward(int tasks, int n, const S* phi, const S* x, const int32_t* y) {
    const Call c = call(tasks, n, phi, nullptr, x);
    for (size_t l = 0; l < plan_.size(); ++l) forward_node(c, l);
    ex_.softmax_xent_forward(n, tasks, classes_, b_.act.back(), y, b_.prob, b_.loss, b_.correct);
  }

  // After forward: grad ← ∇L at φ for every task (batched layout).
  void backward(int tasks, int n, const S* phi, const S* x, const int32_t* y, S* grad) {
    const Call c = call(tasks, n, phi, nullptr, x);
    ex_.softmax_xent_backward(n, tasks, classes_, b_.prob, y, b_.d_act.back());
    for (size_t l = plan_.size(); l-- > 0;) backward_node(c, l, grad);
  }

  // After forward and backward: Hv ← ∇²L(φ) v for every task (forward and backward R-passes;
  // the direction has no component in the images).
  void hvp(int tasks, int n, const S* phi, const S* v, const S* x, S* Hv) {
    const Call c = call(tasks, n, phi, v, x);
    for (size_t l = 0; l < plan_.size(); ++l) r_forward_node(c, l);
    ex_.softmax_xent_r_backward(n, tasks, classes_, b_.prob, b_.R_act.back(), b_.R_d_act.back());
    for (size_t l = plan_.size(); l-- > 0;) r_backward_node(c, l, Hv);
  }

 private:
  struct Call {
    int tasks, n;
    const S* phi;
    const S* v;  // hvp's direction (null otherwise)
    const S* x;  // the images
  };
  Call call(int tasks, int n, const S* phi, const S* v, const S* x) const {
    MT_CHECK(tasks >= 1 && tasks <= max_tasks_, "a batched net call of ", tasks,
             " tasks; the net holds 1 to ", max_tasks_);
    return {tasks, n, phi, v, x};
  }

  void forward_node(const Call& c, size_t l) {
    const NetLayer& L = plan_[l];
    const int T = c.tasks, n = c.n;
    const S* x = in(c, l, 0);
    S* y = b_.act[l];
    switch (L.kind) {
      case NetLayer::kConv:
        ex_.conv_forward(l, T, n, param(T, c.phi, L, 0), x, y);
        break;
      case NetLayer::kBatchNorm:
        ex_.bn_forward(n, T, L.out.c, plane(L.out), x, param(T, c.phi, L, 0), param(T, c.phi, L, 1),
                       y, b_.xhat[l], b_.sigma[l]);
        break;
      case NetLayer::kRelu:
        ex_.relu_forward(count(c, L), slope(L), x, y);
        break;
      case NetLayer::kMaxPool:
        ex_.max_pool_forward(n, T, L.in.c, L.in.h, L.in.w, x, y, b_.index[l]);
        break;
      case NetLayer::kMeanPool:
        ex_.mean_pool_forward(n, T, L.in.c, plane(L.in), x, y);
        break;
      case NetLayer::kLinear:
        ex_.linear_forward(l, T, n, param(T, c.phi, L, 0), param(T, c.phi, L, 1), x, y);
        break;
      case NetLayer::kAdd:
        ex_.add(count(c, L), x, in(c, l, 1), y);
        break;
    }
  }

  void backward_node(const Call& c, size_t l, S* grad) {
    const NetLayer& L = plan_[l];
    const int T = c.tasks, n = c.n;
    const S* x = in(c, l, 0);
    const S* dy = b_.d_act[l];
    S* dx = sink(b_.d_act, l, 0);
    switch (L.kind) {
      case NetLayer::kConv:
        ex_.conv_backward(l, T, n, param(T, c.phi, L, 0), x, dy, dx, param(T, grad, L, 0));
        break;
      case NetLayer::kBatchNorm:
        ex_.bn_backward(n, T, L.out.c, plane(L.out), param(T, c.phi, L, 0), b_.xhat[l], b_.sigma[l],
                        dy, dx, param(T, grad, L, 0), param(T, grad, L, 1));
        break;
      case NetLayer::kRelu:
        ex_.relu_backward(count(c, L), slope(L), x, dy, dx);
        break;
      case NetLayer::kMaxPool:
        ex_.max_pool_backward(n, T, L.in.c, L.in.h, L.in.w, b_.index[l], dy, dx);
        break;
      case NetLayer::kMeanPool:
        ex_.mean_pool_backward(n, T, L.in.c, plane(L.in), dy, dx);
        break;
      case NetLayer::kLinear:
        ex_.linear_backward(l, T, n, param(T, c.phi, L, 0), x, dy, dx, param(T, grad, L, 0),
                            param(T, grad, L, 1));
        break;
      case NetLayer::kAdd:
        add_backward(c, b_.d_act, l, dy);
        return;
    }
    fan_in(c, b_.d_act, l);
  }

  void r_forward_node(const Call& c, size_t l) {
    const NetLayer& L = plan_[l];
    const int T = c.tasks, n = c.n;
    const S* x = in(c, l, 0);
    const S* R_x = R_in(l, 0);
    S* R_y = b_.R_act[l];
    switch (L.kind) {
      case NetLayer::kConv:
        ex_.conv_r_forward(l, T, n, param(T, c.phi, L, 0), param(T, c.v, L, 0), x, R_x, R_y);
        break;
      case NetLayer::kBatchNorm:
        ex_.bn_r_forward(n, T, L.out.c, plane(L.out), param(T, c.phi, L, 0), param(T, c.v, L, 0),
                         param(T, c.v, L, 1), b_.xhat[l], b_.sigma[l], R_x, R_y, b_.work);
        break;
      case NetLayer::kRelu:
        ex_.relu_r_forward(count(c, L), slope(L), x, R_x, R_y);
        break;
      case NetLayer::kMaxPool:
        ex_.max_pool_r_forward(n, T, L.in.c, L.in.h, L.in.w, b_.index[l], R_x, R_y);
        break;
      case NetLayer::kMeanPool:
        ex_.mean_pool_r_forward(n, T, L.in.c, plane(L.in), R_x, R_y);
        break;
      case NetLayer::kLinear:
        ex_.linear_r_forward(l, T, n, param(T, c.phi, L, 0), param(T, c.v, L, 0),
                             param(T, c.v, L, 1), x, R_x, R_y);
        break;
      case NetLayer::kAdd:
        ex_.add(count(c, L), R_x, R_in(l, 1), R_y);
        break;
    }
  }

  void r_backward_node(const Call& c, size_t l, S* Hv) {
    const NetLayer& L = plan_[l];
    const int T = c.tasks, n = c.n;
    const S* x = in(c, l, 0);
    const S* R_x = R_in(l, 0);
    const S* dy = b_.d_act[l];
    const S* R_dy = b_.R_d_act[l];
    S* R_dx = sink(b_.R_d_act, l, 0);
    const S* W = param(T, c.phi, L, 0);
    switch (L.kind) {
      case NetLayer::kConv:
        ex_.conv_r_backward(l, T, n, W, param(T, c.v, L, 0), x, R_x, dy, R_dy, R_dx,
                            param(T, Hv, L, 0));
        break;
      case NetLayer::kBatchNorm:
        ex_.bn_r_backward(n, T, L.out.c, plane(L.out), W, param(T, c.v, L, 0), b_.xhat[l],
                          b_.sigma[l], R_x, dy, R_dy, R_dx, param(T, Hv, L, 0), param(T, Hv, L, 1),
                          b_.work);
        break;
      case NetLayer::kRelu:
        ex_.relu_r_backward(count(c, L), slope(L), x, R_dy, R_dx);
        break;
      case NetLayer::kMaxPool:
        ex_.max_pool_r_backward(n, T, L.in.c, L.in.h, L.in.w, b_.index[l], R_dy, R_dx);
        break;
      case NetLayer::kMeanPool:
        ex_.mean_pool_r_backward(n, T, L.in.c, plane(L.in), R_dy, R_dx);
        break;
      case NetLayer::kLinear:
        ex_.linear_r_backward(l, T, n, W, param(T, c.v, L, 0), x, R_x, dy, R_dy, R_dx,
                              param(T, Hv, L, 0), param(T, Hv, L, 1));
        break;
      case NetLayer::kAdd:
        add_backward(c, b_.R_d_act, l, R_dy);
        return;
    }
    fan_in(c, b_.R_d_act, l);
  }

  // Input s of node l: its producer's activation (R_in: tangent); for the network input, the
  // images (R_in: null, no tangent).
  const S* in(const Call& c, size_t l, int s) const {
    const int p = plan_[l].input[s];
    return p == kNetInput ? c.x : b_.act[p];
  }
  const S* R_in(size_t l, int s) const {
    const int p = plan_[l].input[s];
    return p == kNetInput ? nullptr : b_.R_act[p];
  }
  // Where node l writes the gradient (d = d_act) or R-gradient (d = R_d_act) into its input s:
  // the producer's buffer, or the fan-in scratch when it accumulates (null: the network input).
  S* sink(const std::vector<S*>& d, size_t l, int s) const {
    const int p = plan_[l].input[s];
    if (p == kNetInput) return nullptr;
    return accumulate_[l][s] ? b_.fan : d[p];
  }
  // After node l wrote into sink(d, l, 0): adds the fan-in scratch into the producer's buffer.
  void fan_in(const Call& c, const std::vector<S*>& d, size_t l) {
    const int p = plan_[l].input[0];
    if (p != kNetInput && accumulate_[l][0]) ex_.add(count(c, plan_[p]), b_.fan, d[p], d[p]);
  }
  // The add node's adjoint: dy itself is each input's gradient, written or added in.
  void add_backward(const Call& c, const std::vector<S*>& d, size_t l, const S* dy) {
    for (int s = 0; s < 2; ++s) {
      const int p = plan_[l].input[s];
      if (p != kNetInput) ex_.add(count(c, plan_[l]), dy, accumulate_[l][s] ? d[p] : nullptr, d[p]);
    }
  }

  // Tensor `which` of node L, all `tasks` tasks, in a batched buffer of that many tasks
  // (T·offset_k: no allocation, unlike BatchedLayout::with_tasks).
  // Null for a node without parameters (its passes never read it; callers may ask anyway).
  template <typename P>
  P* param(int tasks, P* base, const NetLayer& L, int which) const {
    if (L.param < 0) return nullptr;
    return base + static_cast<int64_t>(tasks) * layout_.ends()[L.param + which];
  }
  static int64_t count(const Call& c, const NetLayer& L) {
    return static_cast<int64_t>(c.n) * c.tasks * L.out.size();
  }
  static int plane(const Shape& s) { return s.h * s.w; }
  static S slope(const NetLayer& L) { return static_cast<S>(L.slope); }

  const std::vector<NetLayer> plan_;  // a copy: callers may pass a temporary
  BatchedLayout layout_;              // at max_tasks; only its tensor offsets are read
  int max_tasks_, classes_;
  Ex& ex_;
  NetBuffers<S> b_;
  std::vector<std::array<bool, 2>> accumulate_;  // per node and input: fan_in_rule
};

// Packs split s of the episodes into the batched example layout: x [n, T, C·H·W] (example i of
// task t at row i·T + t) and labels y [n·T]. Every episode must have the same n.
template <typename S>
void pack_examples(const std::vector<const Episode<S>*>& eps, Split s, S* x, int32_t* y) {
  const int T = static_cast<int>(eps.size());
  const Batch<S>& first = s == Split::kSupport ? eps[0]->support : eps[0]->query;
  const int64_t item = first.item.size();
  for (int t = 0; t < T; ++t) {
    const Batch<S>& b = s == Split::kSupport ? eps[t]->support : eps[t]->query;
    MT_CHECK(b.n == first.n && b.item == first.item,
             "the tasks of a batch differ in examples or image shape");
    MT_CHECK(b.weight.empty(), "the batched backends take unweighted batches");
    for (int i = 0; i < b.n; ++i) {
      const S* src = b.x.data() + static_cast<int64_t>(i) * item;
      std::copy(src, src + item, x + (static_cast<int64_t>(i) * T + t) * item);
      y[static_cast<int64_t>(i) * T + t] = b.y[i];
    }
  }
}

// The rows of split s of `eps` in the layout of pack_examples, as store image indices (for a
// device-resident store, core/batched_model.h DeviceRowSource): with T = eps.size(), overwrites
// index_of_row[i·T + t] = source[i] and y[i·T + t] = y[i] of task t's batch, for i < n. Every
// batch must carry its source indices and have the same n (MT_CHECK).
template <typename S>
void pack_rows(const std::vector<const Episode<S>*>& eps, Split s, int64_t* index_of_row,
               int32_t* y) {
  const int T = static_cast<int>(eps.size());
  MT_CHECK(T > 0, "pack_rows of no tasks");
  const Batch<S>& first = s == Split::kSupport ? eps[0]->support : eps[0]->query;
  for (int t = 0; t < T; ++t) {
    const Batch<S>& b = s == Split::kSupport ? eps[t]->support : eps[t]->query;
    MT_CHECK(b.n == first.n && b.item == first.item,
             "the tasks of a batch differ in examples or image shape");
    MT_CHECK(static_cast<int64_t>(b.source.size()) == b.n, "task ", t, " carries ", b.source.size(),
             " image indices for ", b.n, " examples: draw it from an EpisodeStore");
    for (int i = 0; i < b.n; ++i) {
      index_of_row[static_cast<int64_t>(i) * T + t] = b.source[i];
      y[static_cast<int64_t>(i) * T + t] = b.y[i];
    }
  }
}

}  // namespace mt
