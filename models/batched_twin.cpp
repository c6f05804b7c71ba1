// Host twin backend (models/batched_twin.h): the batched net over host executors of the kernels.
#include "models/batched_twin.h"

#include "core/check.h"
#include "models/conv2d_batched_index.h"

namespace mt {

// Host executor of the batched node passes: the GEMM-form convolution (3×3 or 1×1) and head
// through HostGemmExec, the element-wise layers and sums through their host twins.
template <typename S>
class HostNetExec {
 public:
  // Built once for up to max_tasks tasks of max_n examples; each call names its T.
  HostNetExec(const std::vector<NetLayer>& plan, int max_tasks, int max_n)
      : conv_(plan.size()), head_(plan.size()), ws_(plan.size()), mem_(plan.size()) {
    for (size_t l = 0; l < plan.size(); ++l) {
      const NetLayer& L = plan[l];
      if (L.kind == NetLayer::kConv) {
        conv_[l] = make_batched_conv_geom(L.in, L.out.c, L.stride, max_tasks, L.kernel);
        const int64_t col = conv_[l].col_size(max_n), out = conv_[l].out_size(max_n);
        mem_[l].resize(col + 2 * out);
        ws_[l] = {mem_[l].data(), mem_[l].data() + col, mem_[l].data() + col + out};
      } else if (L.kind == NetLayer::kLinear) {
        head_[l] = {max_tasks, static_cast<int>(L.in.size()), L.out.c};
      }
    }
  }

  void conv_forward(size_t l, int tasks, int n, const S* W, const S* x, S* y) {
    conv_gemm_forward(ex_, conv_[l].at_tasks(tasks), n, W, x, y, ws_[l]);
  }
  void conv_backward(size_t l, int tasks, int n, const S* W, const S* x, const S* dy, S* dx,
                     S* dW) {
    if (dx) conv_gemm_backward_data(ex_, conv_[l].at_tasks(tasks), n, W, dy, dx, ws_[l]);
    conv_gemm_backward_filter(ex_, conv_[l].at_tasks(tasks), n, x, dy, dW, ws_[l]);
  }
  void conv_r_forward(size_t l, int tasks, int n, const S* W, const S* R_W, const S* x,
                      const S* R_x, S* R_y) {
    conv_gemm_r_forward(ex_, conv_[l].at_tasks(tasks), n, W, R_W, x, R_x, R_y, ws_[l]);
  }
  void conv_r_backward(size_t l, int tasks, int n, const S* W, const S* R_W, const S* x,
                       const S* R_x, const S* dy, const S* R_dy, S* R_dx, S* R_dW) {
    conv_gemm_r_backward(ex_, conv_[l].at_tasks(tasks), n, W, R_W, x, R_x, dy, R_dy, R_dx, R_dW,
                         ws_[l]);
  }
  void linear_forward(size_t l, int tasks, int n, const S* W, const S* b, const S* x, S* y) {
    linear_gemm_forward(ex_, head_[l].at_tasks(tasks), n, W, b, x, y);
  }
  void linear_backward(size_t l, int tasks, int n, const S* W, const S* x, const S* dy, S* dx,
                       S* dW, S* db) {
    linear_gemm_backward(ex_, head_[l].at_tasks(tasks), n, W, x, dy, dx, dW, db);
  }
  void linear_r_forward(size_t l, int tasks, int n, const S* W, const S* R_W, const S* R_b,
                        const S* x, const S* R_x, S* R_y) {
    linear_gemm_r_forward(ex_, head_[l].at_tasks(tasks), n, W, R_W, R_b, x, R_x, R_y);
  }
  void linear_r_backward(size_t l, int tasks, int n, const S* W, const S* R_W, const S* x,
                         const S* R_x, const S* dy, const S* R_dy, S* R_dx, S* R_dW, S* R_db) {
    linear_gemm_r_backward(ex_, head_[l].at_tasks(tasks), n, W, R_W, x, R_x, dy, R_dy, R_dx, R_dW,
                           R_db);
  }

  template <typename... A>
  void bn_forward(A... a) {
    bn_forward_host<S>(a...);
  }
  template <typename... A>
  void bn_backward(A... a) {
    bn_backward_host<S>(a...);
  }
  template <typename... A>
  void bn_r_forward(A... a) {
    bn_r_forward_host<S>(a...);
  }
  template <typename... A>
  void bn_r_backward(A... a) {
    bn_r_backward_host<S>(a...);
  }
  template <typename... A>
  void relu_forward(A... a) {
    relu_forward_host<S>(a...);
  }
  template <typename... A>
  void relu_backward(A... a) {
    relu_backward_host<S>(a...);
  }
  template <typename... A>
  void relu_r_forward(A... a) {
    relu_r_forward_host<S>(a...);
  }
  template <typename... A>
  void relu_r_backward(A... a) {
    relu_r_backward_host<S>(a...);
  }
  void add(int64_t count, const S* a, const S* b, S* y) { add_host<S>(count, a, b, y); }
  template <typename... A>
  void max_pool_forward(A... a) {
    max_pool_forward_host<S>(a...);
  }
  template <typename... A>
  void max_pool_backward(A... a) {
    max_pool_backward_host<S>(a...);
  }
  template <typename... A>
  void max_pool_r_forward(A... a) {
    max_pool_r_forward_host<S>(a...);
  }
  template <typename... A>
  void max_pool_r_backward(A... a) {
    max_pool_r_backward_host<S>(a...);
  }
  template <typename... A>
  void mean_pool_forward(A... a) {
    mean_pool_forward_host<S>(a...);
  }
  template <typename... A>
  void mean_pool_backward(A... a) {
    mean_pool_backward_host<S>(a...);
  }
  template <typename... A>
  void mean_pool_r_forward(A... a) {
    mean_pool_r_forward_host<S>(a...);
  }
  template <typename... A>
  void mean_pool_r_backward(A... a) {
    mean_pool_r_backward_host<S>(a...);
  }
  template <typename... A>
  void softmax_xent_forward(A... a) {
    softmax_xent_forward_host<S>(a...);
  }
  template <typename... A>
  void softmax_xent_backward(A... a) {
    softmax_xent_backward_host<S>(a...);
  }
  template <typename... A>
  void softmax_xent_r_backward(A... a) {
    softmax_xent_r_backward_host<S>(a...);
  }

 private:
  HostGemmExec<S> ex_;
  std::vector<BatchedConvGeom> conv_;
  std::vector<BatchedLinearGeom> head_;
  std::vector<ConvGemmWorkspace<S>> ws_;
  std::vector<std::vector<S>> mem_;
};

namespace {
// A twin batch: the episodes' examples packed in the batched layout (host memory).
template <typename S>
class TwinTaskBatch final : public TaskBatch {
 public:
  std::vector<const Episode<S>*> episodes;
  int n[2] = {0, 0};  // support, query examples per task
  std::vector<S> x[2];
  std::vector<int32_t> y[2];
  void set_tasks(int t) { tasks_ = t; }
};

template <typename S>
TwinTaskBatch<S>& twin_batch(const TaskBatch& b) {
  auto* t = dynamic_cast<const TwinTaskBatch<S>*>(&b);
  MT_CHECK(t != nullptr, "a task batch of another backend was passed to the host twin backend");
  return const_cast<TwinTaskBatch<S>&>(*t);
}
}  // namespace

template <typename S>
struct TwinBatchedModel<S>::Plan {
  HostNetExec<S> exec;
  BatchedNet<S, HostNetExec<S>> net;
  Plan(const std::vector<NetLayer>& plan, const ParamLayout& layout, int max_tasks, int classes,
       int max_n, const NetBuffers<S>& buf)
      : exec(plan, max_tasks, max_n), net(plan, layout, max_tasks, classes, exec, buf) {}
};

template <typename S>
TwinBatchedModel<S>::TwinBatchedModel(const Sequential<S>& net, int max_tasks, int max_examples)
    : net_(net), plan_(batched_plan(net)), max_tasks_(max_tasks), max_examples_(max_examples) {
  MT_CHECK(max_tasks >= 1 && max_examples >= 1, "twin backend of ", max_tasks, " tasks, ",
           max_examples, " examples");
  const NetSizes sizes = net_sizes(plan_, max_tasks, max_examples, net.classes());
  int64_t floats = 0, ints = 0;  // first count, then carve the buffers out of two arrays
  make_net_buffers<S>(
      sizes, [&](int64_t n) -> S* { return floats += n, nullptr; },
      [&](int64_t n) -> int32_t* { return ints += n, nullptr; });
  memory_.assign(floats, S(0));
  index_memory_.assign(ints, 0);
  floats = ints = 0;
  buffers_ = make_net_buffers<S>(
      sizes, [&](int64_t n) { return memory_.data() + (floats += n) - n; },
      [&](int64_t n) { return index_memory_.data() + (ints += n) - n; });
  grad_scratch_.resize(static_cast<size_t>(max_tasks) * net.layout().total());
  plan_net_ = std::make_unique<Plan>(plan_, net_.layout(), max_tasks, net_.classes(), max_examples,
                                     buffers_);
}

template <typename S>
TwinBatchedModel<S>::~TwinBatchedModel() = default;

template <typename S>
std::string TwinBatchedModel<S>::describe() const {
  return detail::concat("host twin of the CUDA backend (up to ", max_tasks_, " tasks of ",
                        max_examples_, " examples per call)");
}

template <typename S>
std::unique_ptr<TaskBatch> TwinBatchedModel<S>::make_batch() const {
  return std::make_unique<TwinTaskBatch<S>>();
}

template <typename S>
void TwinBatchedModel<S>::load(const std::vector<const Episode<S>*>& episodes, TaskBatch& b) {
  auto& t = twin_batch<S>(b);
  const int T = static_cast<int>(episodes.size());
  MT_CHECK(T >= 1 && T <= max_tasks_, "a batch of ", T, " tasks (1 to ", max_tasks_, ")");
  t.episodes = episodes;
  t.set_tasks(T);
  for (Split s : {Split::kSupport, Split::kQuery}) {
    const int k = s == Split::kSupport ? 0 : 1;
    const Batch<S>& first = k == 0 ? episodes[0]->support : episodes[0]->query;
    MT_CHECK(first.n <= max_examples_, "a task of ", first.n, " examples; the backend holds ",
             max_examples_);
    t.n[k] = first.n;
    t.x[k].resize(static_cast<size_t>(first.n) * T * first.item.size());
    t.y[k].resize(static_cast<size_t>(first.n) * T);
    pack_examples(episodes, s, t.x[k].data(), t.y[k].data());
  }
}

template <typename S>
void TwinBatchedModel<S>::gather(const TaskBatch& from, const std::vector<int>& tasks,
                                 TaskBatch& to) {
  load(pick_tasks(twin_batch<S>(from).episodes, tasks), to);
}

template <typename S>
void TwinBatchedModel<S>::copy_stats(int tasks, int n, LossStats* stats) const {
  if (!stats) return;
  for (int t = 0; t < tasks; ++t)
    stats[t] = {static_cast<double>(buffers_.loss[t]),
                n > 0 ? static_cast<double>(buffers_.correct[t]) / n : 0.0};
}

template <typename S>
void TwinBatchedModel<S>::loss_grad(const TaskBatch& b, Split s, const S* phi, S* grad,
                                    LossStats* stats) {
  const auto& t = twin_batch<S>(b);
  const int k = s == Split::kSupport ? 0 : 1;
  auto& net = plan_net_->net;
  net.forward(t.tasks(), t.n[k], phi, t.x[k].data(), t.y[k].data());
  if (grad) net.backward(t.tasks(), t.n[k], phi, t.x[k].data(), t.y[k].data(), grad);
  copy_stats(t.tasks(), t.n[k], stats);
}

template <typename S>
void TwinBatchedModel<S>::hvp(const TaskBatch& b, Split s, const S* phi, const S* v, S* Hv,
                              LossStats* stats) {
  const auto& t = twin_batch<S>(b);
  const int k = s == Split::kSupport ? 0 : 1;
  auto& net = plan_net_->net;
  net.forward(t.tasks(), t.n[k], phi, t.x[k].data(), t.y[k].data());
  net.backward(t.tasks(), t.n[k], phi, t.x[k].data(), t.y[k].data(), grad_scratch_.data());
  net.hvp(t.tasks(), t.n[k], phi, v, t.x[k].data(), Hv);
  copy_stats(t.tasks(), t.n[k], stats);
}

template class TwinBatchedModel<float>;
template class TwinBatchedModel<double>;

}  // namespace mt
