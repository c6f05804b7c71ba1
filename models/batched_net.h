// The layer sequence of a task-batched network (DESIGN §5.1), written once over an executor of
// batched layer passes: the CUDA backend (models/conv4_cuda.cu) runs it with its kernels, the
// host twin backend (models/batched_twin.h) with the host twins of the same kernels, so that
// CI checks the whole batched forward / backward / R-passes against the per-task CPU layers.
//
// Layouts (T tasks, n examples per task): activations [n, T·C, H, W]; logits [n, T·K]; labels
// [n·T] (example i of task t at i·T + t); parameters in the batched layout (core/batched_layout.h).
// The net keeps no state between calls except its buffers: forward writes what the later passes
// read (activations, batch-norm x̂ and σ, max-pool indices, probabilities).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/batched_layout.h"
#include "core/batched_model.h"
#include "core/check.h"
#include "models/batched_kernels.h"
#include "models/sequential.h"

namespace mt {

// One layer of the plan: its kind, one example's input and output shape, and the index of its
// first parameter tensor in the layout (−1: none).
struct NetLayer {
  enum Kind { kConv, kBatchNorm, kRelu, kMaxPool, kMeanPool, kLinear } kind = kConv;
  Shape in, out;
  int stride = 1;
  int param = -1;
};

// The plan of a Sequential made of the layers above; throws mt::Error naming an unsupported one.
template <typename T>
std::vector<NetLayer> batched_plan(const Sequential<T>& net) {
  std::vector<NetLayer> plan;
  int tensor = 0;
  for (const auto& layer : net.layers()) {
    NetLayer l;
    const std::string kind = layer->kind();
    l.in = layer->in_shape();
    l.out = layer->out_shape();
    if (kind == "conv2d") {
      l.kind = NetLayer::kConv;
      l.stride = l.out.h == l.in.h ? 1 : 2;
    } else if (kind == "batch_norm") {
      l.kind = NetLayer::kBatchNorm;
    } else if (kind == "relu") {
      l.kind = NetLayer::kRelu;
    } else if (kind == "max_pool2") {
      l.kind = NetLayer::kMaxPool;
    } else if (kind == "global_mean_pool") {
      l.kind = NetLayer::kMeanPool;
    } else if (kind == "linear") {
      l.kind = NetLayer::kLinear;
    } else {
      throw Error(ExitCode::kRuntime,
                  detail::concat("the batched backends have no layer '", kind, "'"));
    }
    const size_t params = layer->param_shapes().size();
    if (params > 0) l.param = tensor;
    tensor += static_cast<int>(params);
    plan.push_back(l);
  }
  MT_CHECK(!plan.empty() && plan.back().kind == NetLayer::kLinear,
           "a batched net must end in a linear head");
  return plan;
}

// Elements of every buffer the net needs for up to `tasks` tasks of `n` examples each.
struct NetSizes {
  std::vector<int64_t> act;    // per layer: act, d_act, R_act, R_d_act each
  std::vector<int64_t> saved;  // per layer: batch-norm x̂ (0 for other layers)
  std::vector<int64_t> sigma;  // per layer: batch-norm σ
  std::vector<int64_t> index;  // per layer: max-pool argmax (int32)
  int64_t work = 0, prob = 0, tasks = 0;
};

inline NetSizes net_sizes(const std::vector<NetLayer>& plan, int tasks, int n, int classes) {
  NetSizes s;
  int max_c = 1;
  for (const NetLayer& l : plan) {
    const int64_t out = static_cast<int64_t>(n) * tasks * l.out.size();
    s.act.push_back(out);
    s.saved.push_back(l.kind == NetLayer::kBatchNorm ? out : 0);
    s.sigma.push_back(l.kind == NetLayer::kBatchNorm ? int64_t{tasks} * l.out.c : 0);
    s.index.push_back(l.kind == NetLayer::kMaxPool ? out : 0);
    max_c = std::max(max_c, l.out.c);
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
  b.loss = alloc(sizes.tasks);
  b.correct = alloc_index(sizes.tasks);
  return b;
}

// The passes over an executor Ex with, for l the layer's index in the plan and T the call's
// tasks: conv_{forward,backward,r_forward,r_backward}(l, T, n, …) and linear_…(l, T, n, …) with the
//   argument lists of BatchedConv2dCuda / BatchedLinearCuda; bn_…, relu_…, max_pool_…,
//   mean_pool_…, softmax_xent_… with those of the host twins in batched_kernels.h.
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
        b_(buf) {}

  int max_tasks() const { return max_tasks_; }

  // Logits, per-task loss and hits in buf.loss / buf.correct, of the batch x, y at φ.
  void forward(int tasks, int n, const S* phi, const S* x, const int32_t* y) {
    check_tasks(tasks);
    const S* in = x;
    for (size_t l = 0; l < plan_.size(); ++l) {
      const NetLayer& L = plan_[l];
      S* out = b_.act[l];
      const int C = L.out.c, HW = L.out.h * L.out.w;
      switch (L.kind) {
        case NetLayer::kConv:
          ex_.conv_forward(l, tasks, n, param(tasks, phi, L, 0), in, out);
          break;
        case NetLayer::kBatchNorm:
          ex_.bn_forward(n, tasks, C, HW, in, param(tasks, phi, L, 0), param(tasks, phi, L, 1), out,
                         b_.xhat[l], b_.sigma[l]);
          break;
        case NetLayer::kRelu:
          ex_.relu_forward(count(tasks, n, L), in, out);
          break;
        case NetLayer::kMaxPool:
          ex_.max_pool_forward(n, tasks, L.in.c, L.in.h, L.in.w, in, out, b_.index[l]);
          break;
        case NetLayer::kMeanPool:
          ex_.mean_pool_forward(n, tasks, L.in.c, L.in.h * L.in.w, in, out);
          break;
        case NetLayer::kLinear:
          ex_.linear_forward(l, tasks, n, param(tasks, phi, L, 0), param(tasks, phi, L, 1), in,
                             out);
          break;
      }
      in = out;
    }
    ex_.softmax_xent_forward(n, tasks, classes_, in, y, b_.prob, b_.loss, b_.correct);
  }

  // After forward: grad ← ∇L at φ for every task (batched layout).
  void backward(int tasks, int n, const S* phi, const S* x, const int32_t* y, S* grad) {
    check_tasks(tasks);
    const size_t last = plan_.size() - 1;
    ex_.softmax_xent_backward(n, tasks, classes_, b_.prob, y, b_.d_act[last]);
    for (size_t l = plan_.size(); l-- > 0;) {
      const NetLayer& L = plan_[l];
      const S* in = l == 0 ? x : b_.act[l - 1];
      S* dx = l == 0 ? nullptr : b_.d_act[l - 1];
      const S* dy = b_.d_act[l];
      const int C = L.out.c, HW = L.out.h * L.out.w;
      switch (L.kind) {
        case NetLayer::kConv:
          ex_.conv_backward(l, tasks, n, param(tasks, phi, L, 0), in, dy, dx,
                            param(tasks, grad, L, 0));
          break;
        case NetLayer::kBatchNorm:
          ex_.bn_backward(n, tasks, C, HW, param(tasks, phi, L, 0), b_.xhat[l], b_.sigma[l], dy, dx,
                          param(tasks, grad, L, 0), param(tasks, grad, L, 1));
          break;
        case NetLayer::kRelu:
          ex_.relu_backward(count(tasks, n, L), in, dy, dx);
          break;
        case NetLayer::kMaxPool:
          ex_.max_pool_backward(n, tasks, L.in.c, L.in.h, L.in.w, b_.index[l], dy, dx);
          break;
        case NetLayer::kMeanPool:
          ex_.mean_pool_backward(n, tasks, L.in.c, L.in.h * L.in.w, dy, dx);
          break;
        case NetLayer::kLinear:
          ex_.linear_backward(l, tasks, n, param(tasks, phi, L, 0), in, dy, dx,
                              param(tasks, grad, L, 0), param(tasks, grad, L, 1));
          break;
      }
    }
  }

  // After forward and backward: Hv ← ∇²L(φ) v for every task (forward and backward R-passes).
  void hvp(int tasks, int n, const S* phi, const S* v, const S* x, S* Hv) {
    check_tasks(tasks);
    r_forward(tasks, n, phi, v, x);
    const size_t last = plan_.size() - 1;
    ex_.softmax_xent_r_backward(n, tasks, classes_, b_.prob, b_.R_act[last], b_.R_d_act[last]);
    for (size_t l = plan_.size(); l-- > 0;) {
      const NetLayer& L = plan_[l];
      const S* in = l == 0 ? x : b_.act[l - 1];
      const S* R_in = l == 0 ? nullptr : b_.R_act[l - 1];
      S* R_dx = l == 0 ? nullptr : b_.R_d_act[l - 1];
      const S* dy = b_.d_act[l];
      const S* R_dy = b_.R_d_act[l];
      const int C = L.out.c, HW = L.out.h * L.out.w;
      switch (L.kind) {
        case NetLayer::kConv:
          ex_.conv_r_backward(l, tasks, n, param(tasks, phi, L, 0), param(tasks, v, L, 0), in, R_in,
                              dy, R_dy, R_dx, param(tasks, Hv, L, 0));
          break;
        case NetLayer::kBatchNorm:
          ex_.bn_r_backward(n, tasks, C, HW, param(tasks, phi, L, 0), param(tasks, v, L, 0),
                            b_.xhat[l], b_.sigma[l], R_in, dy, R_dy, R_dx, param(tasks, Hv, L, 0),
                            param(tasks, Hv, L, 1), b_.work);
          break;
        case NetLayer::kRelu:
          ex_.relu_r_backward(count(tasks, n, L), in, R_dy, R_dx);
          break;
        case NetLayer::kMaxPool:
          ex_.max_pool_r_backward(n, tasks, L.in.c, L.in.h, L.in.w, b_.index[l], R_dy, R_dx);
          break;
        case NetLayer::kMeanPool:
          ex_.mean_pool_r_backward(n, tasks, L.in.c, L.in.h * L.in.w, R_dy, R_dx);
          break;
        case NetLayer::kLinear:
          ex_.linear_r_backward(l, tasks, n, param(tasks, phi, L, 0), param(tasks, v, L, 0), in,
                                R_in, dy, R_dy, R_dx, param(tasks, Hv, L, 0),
                                param(tasks, Hv, L, 1));
          break;
      }
    }
  }

 private:
  // R_act of every layer along v (the direction has no component in the images).
  void r_forward(int tasks, int n, const S* phi, const S* v, const S* x) {
    const S* R_in = nullptr;
    for (size_t l = 0; l < plan_.size(); ++l) {
      const NetLayer& L = plan_[l];
      const S* in = l == 0 ? x : b_.act[l - 1];
      S* R_out = b_.R_act[l];
      const int C = L.out.c, HW = L.out.h * L.out.w;
      switch (L.kind) {
        case NetLayer::kConv:
          ex_.conv_r_forward(l, tasks, n, param(tasks, phi, L, 0), param(tasks, v, L, 0), in, R_in,
                             R_out);
          break;
        case NetLayer::kBatchNorm:
          ex_.bn_r_forward(n, tasks, C, HW, param(tasks, phi, L, 0), param(tasks, v, L, 0),
                           param(tasks, v, L, 1), b_.xhat[l], b_.sigma[l], R_in, R_out, b_.work);
          break;
        case NetLayer::kRelu:
          ex_.relu_r_forward(count(tasks, n, L), in, R_in, R_out);
          break;
        case NetLayer::kMaxPool:
          ex_.max_pool_r_forward(n, tasks, L.in.c, L.in.h, L.in.w, b_.index[l], R_in, R_out);
          break;
        case NetLayer::kMeanPool:
          ex_.mean_pool_r_forward(n, tasks, L.in.c, L.in.h * L.in.w, R_in, R_out);
          break;
        case NetLayer::kLinear:
          ex_.linear_r_forward(l, tasks, n, param(tasks, phi, L, 0), param(tasks, v, L, 0),
                               param(tasks, v, L, 1), in, R_in, R_out);
          break;
      }
      R_in = R_out;
    }
  }

  void check_tasks(int tasks) const {
    MT_CHECK(tasks >= 1 && tasks <= max_tasks_, "a batched net call of ", tasks,
             " tasks; the net holds 1 to ", max_tasks_);
  }
  // Tensor `which` of layer L, all `tasks` tasks, in a batched buffer of that many tasks
  // (T·offset_k: no allocation, unlike BatchedLayout::with_tasks).
  template <typename P>
  P* param(int tasks, P* base, const NetLayer& L, int which) const {
    return base + static_cast<int64_t>(tasks) * layout_.ends()[L.param + which];
  }
  int64_t count(int tasks, int n, const NetLayer& L) const {
    return static_cast<int64_t>(n) * tasks * L.out.size();
  }

  const std::vector<NetLayer>& plan_;
  BatchedLayout layout_;  // at max_tasks; only its tensor offsets are read
  int max_tasks_, classes_;
  Ex& ex_;
  NetBuffers<S> b_;
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
