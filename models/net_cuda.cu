// The CUDA backend of the task-batched model (models/net_cuda.h): the batched plan of any
// Sequential (models/batched_net.h) over a CUDA executor (GEMM-form or cuDNN convolutions, the
// batched head, the element-wise kernels, sums), all on one stream. One plan: every node is built
// once, at construction, for up to max_tasks tasks, and each call names its T. Memory: one pool
// sized at construction holds every activation, scratch buffer and workspace; each task batch owns
// device arrays and pinned staging for its examples. Passes without host results are captured
// as CUDA Graphs after one eager warm-up per distinct call and replayed after that
// (cuda.graphs=false, or a capture that fails: eager).
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <tuple>

#include "core/cuda_check.h"
#include "core/cuda_graph.h"
#include "core/device.h"
#include "core/device_pool.h"
#include "core/vec_ops_cuda.h"
#include "models/batched_kernels_cuda.h"
#include "models/batched_net.h"
#include "models/conv2d_batched.h"
#include "models/linear_batched.h"
#include "models/net_cuda.h"

namespace mt {

namespace {

// Destructors report a failing release instead of throwing.
void log_failure(const char* call, cudaError_t e) {
  if (e != cudaSuccess)
    std::fprintf(stderr, "mt::NetCuda: %s failed: %s (%s)\n", call, cudaGetErrorName(e),
                 cudaGetErrorString(e));
}

// The executor of BatchedNet on the GPU: every pass enqueued on one stream. Built once for up
// to max_tasks tasks; the convs' workspaces are shared (one stream runs one pass at a time).
class CudaNetExec {
 public:
  CudaNetExec(const std::vector<NetLayer>& plan, int max_tasks, int max_n, ConvForm form,
              cudnnContext* cudnn, cudaStream_t stream)
      : stream_(stream), conv_(plan.size()), head_(plan.size()) {
    for (size_t l = 0; l < plan.size(); ++l) {
      const NetLayer& L = plan[l];
      if (L.kind == NetLayer::kConv) {
        conv_[l] = std::make_unique<BatchedConv2dCuda>(L.in, L.out.c, L.stride, max_tasks, max_n,
                                                       form, cudnn, L.kernel);
        const ConvWorkspaceNeed n = conv_[l]->need();
        need_.col = std::max(need_.col, n.col);
        need_.gy = std::max(need_.gy, n.gy);
        need_.cudnn_bytes = std::max(need_.cudnn_bytes, n.cudnn_bytes);
      } else if (L.kind == NetLayer::kLinear) {
        head_[l] = std::make_unique<BatchedLinearCuda>(static_cast<int>(L.in.size()), L.out.c,
                                                       max_tasks, max_n);
      }
    }
  }

  // The shared workspaces every conv needs (bind() them from the pool).
  const ConvWorkspaceNeed& need() const { return need_; }
  void bind(const ConvGemmWorkspace<float>& gemm, void* cudnn_workspace) {
    for (auto& c : conv_)
      if (c) c->bind(gemm, cudnn_workspace);
  }
  // cuda.tune: times both forms of every conv at max_tasks tasks of n examples.
  void tune(int n) {
    for (auto& c : conv_)
      if (c) c->tune(n, stream_);
  }

  std::string describe() const {
    std::string s;
    for (size_t l = 0; l < conv_.size(); ++l)
      if (conv_[l])
        s += detail::concat(s.empty() ? "" : "; ", "node ", l, ": ", conv_[l]->describe());
    return s;
  }

  void conv_forward(size_t l, int T, int n, const float* W, const float* x, float* y) {
    conv_[l]->forward(T, n, W, x, y, stream_);
  }
  void conv_backward(size_t l, int T, int n, const float* W, const float* x, const float* dy,
                     float* dx, float* dW) {
    conv_[l]->backward(T, n, W, x, dy, dx, dW, stream_);
  }
  void conv_r_forward(size_t l, int T, int n, const float* W, const float* R_W, const float* x,
                      const float* R_x, float* R_y) {
    conv_[l]->r_forward(T, n, W, R_W, x, R_x, R_y, stream_);
  }
  void conv_r_backward(size_t l, int T, int n, const float* W, const float* R_W, const float* x,
                       const float* R_x, const float* dy, const float* R_dy, float* R_dx,
                       float* R_dW) {
    conv_[l]->r_backward(T, n, W, R_W, x, R_x, dy, R_dy, R_dx, R_dW, stream_);
  }
  void linear_forward(size_t l, int T, int n, const float* W, const float* b, const float* x,
                      float* y) {
    head_[l]->forward(T, n, W, b, x, y, stream_);
  }
  void linear_backward(size_t l, int T, int n, const float* W, const float* x, const float* dy,
                       float* dx, float* dW, float* db) {
    head_[l]->backward(T, n, W, x, dy, dx, dW, db, stream_);
  }
  void linear_r_forward(size_t l, int T, int n, const float* W, const float* R_W, const float* R_b,
                        const float* x, const float* R_x, float* R_y) {
    head_[l]->r_forward(T, n, W, R_W, R_b, x, R_x, R_y, stream_);
  }
  void linear_r_backward(size_t l, int T, int n, const float* W, const float* R_W, const float* x,
                         const float* R_x, const float* dy, const float* R_dy, float* R_dx,
                         float* R_dW, float* R_db) {
    head_[l]->r_backward(T, n, W, R_W, x, R_x, dy, R_dy, R_dx, R_dW, R_db, stream_);
  }

#define MT_FORWARD_TO_CUDA(pass) \
  template <typename... A>       \
  void pass(A... a) {            \
    pass##_cuda(a..., stream_);  \
  }
  MT_FORWARD_TO_CUDA(bn_forward)
  MT_FORWARD_TO_CUDA(bn_backward)
  MT_FORWARD_TO_CUDA(bn_r_forward)
  MT_FORWARD_TO_CUDA(bn_r_backward)
  MT_FORWARD_TO_CUDA(relu_forward)
  MT_FORWARD_TO_CUDA(relu_backward)
  MT_FORWARD_TO_CUDA(relu_r_forward)
  MT_FORWARD_TO_CUDA(relu_r_backward)
  MT_FORWARD_TO_CUDA(add)
  MT_FORWARD_TO_CUDA(max_pool_forward)
  MT_FORWARD_TO_CUDA(max_pool_backward)
  MT_FORWARD_TO_CUDA(max_pool_r_forward)
  MT_FORWARD_TO_CUDA(max_pool_r_backward)
  MT_FORWARD_TO_CUDA(mean_pool_forward)
  MT_FORWARD_TO_CUDA(mean_pool_backward)
  MT_FORWARD_TO_CUDA(mean_pool_r_forward)
  MT_FORWARD_TO_CUDA(mean_pool_r_backward)
  MT_FORWARD_TO_CUDA(softmax_xent_forward)
  MT_FORWARD_TO_CUDA(softmax_xent_backward)
  MT_FORWARD_TO_CUDA(softmax_xent_r_backward)
#undef MT_FORWARD_TO_CUDA

 private:
  cudaStream_t stream_;
  std::vector<std::unique_ptr<BatchedConv2dCuda>> conv_;
  std::vector<std::unique_ptr<BatchedLinearCuda>> head_;
  ConvWorkspaceNeed need_;
};

// The backend's stream, destroyed last.
class OwnedStream {
 public:
  OwnedStream() { MT_CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
  ~OwnedStream() { log_failure("cudaStreamDestroy", cudaStreamDestroy(s_)); }
  OwnedStream(const OwnedStream&) = delete;
  OwnedStream& operator=(const OwnedStream&) = delete;
  cudaStream_t get() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
};

// Pinned host memory for the staging of a batch's examples.
template <typename T>
class PinnedBuffer {
 public:
  explicit PinnedBuffer(size_t count) {
    if (count == 0) return;
    const cudaError_t e = cudaMallocHost(reinterpret_cast<void**>(&data_), count * sizeof(T));
    if (e == cudaErrorMemoryAllocation)
      throw_device_out_of_memory("pinned host staging", count * sizeof(T));
    MT_CUDA_CHECK(e);
  }
  ~PinnedBuffer() {
    if (data_) log_failure("cudaFreeHost", cudaFreeHost(data_));
  }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  T* data() { return data_; }

 private:
  T* data_ = nullptr;
};

// A batch on the GPU: the examples of both splits in the batched layout, device and pinned host.
// Without a resident store the episodes' pixels are packed on the host and uploaded; with one
// (data.resident=device) only their store image indices (Batch::source) are uploaded and the
// GPU gathers the pixels from the store's device copy.
class CudaTaskBatch final : public TaskBatch {
 public:
  CudaTaskBatch(int max_tasks, int max_examples, int64_t item, uint64_t serial,
                const DeviceRowSource* resident)
      : serial_(serial),
        capacity_(static_cast<int64_t>(max_tasks) * max_examples),
        item_(item),
        resident_(resident),
        pool_(2 * capacity_ * (item * sizeof(float) + sizeof(int32_t) + sizeof(int64_t)) + 6 * 256),
        staged_x_(resident ? 0 : 2 * capacity_ * item),
        staged_y_(2 * capacity_),
        staged_rows_(2 * capacity_) {
    for (int k = 0; k < 2; ++k) {
      x_[k] = pool_.allocate_array<float>(capacity_ * item);
      y_[k] = pool_.allocate_array<int32_t>(capacity_);
      rows_[k] = pool_.allocate_array<int64_t>(capacity_);
    }
  }

  // Packs and uploads the episodes; waits for the stream first, so that the staging buffers are
  // no longer read by an earlier upload.
  void load(const std::vector<const Episode<float>*>& eps, int max_examples, cudaStream_t stream) {
    MT_CUDA_CHECK(cudaStreamSynchronize(stream));
    episodes_ = eps;
    tasks_ = static_cast<int>(eps.size());
    for (int k = 0; k < 2; ++k) {
      const Split s = k == 0 ? Split::kSupport : Split::kQuery;
      const Batch<float>& first = k == 0 ? eps[0]->support : eps[0]->query;
      MT_CHECK(first.n <= max_examples, "a task of ", first.n,
               " examples; the CUDA backend "
               "was sized for ",
               max_examples);
      MT_CHECK(first.item.size() == item_, "an episode of another image shape");
      n_[k] = first.n;
      const int64_t rows = static_cast<int64_t>(n_[k]) * tasks_;
      int32_t* hy = staged_y_.data() + k * capacity_;
      if (resident_) {  // only the indices cross PCIe; the GPU gathers the pixels
        int64_t* hr = staged_rows_.data() + k * capacity_;
        pack_rows(eps, s, hr, hy);
        MT_CUDA_CHECK(
            cudaMemcpyAsync(rows_[k], hr, rows * sizeof(int64_t), cudaMemcpyHostToDevice, stream));
        resident_->gather_rows(rows_[k], rows, x_[k], stream);
      } else {
        MT_CHECK(first.x.size() == static_cast<size_t>(first.n * item_),
                 "episodes without pixels (drawn for a device-resident store) reached a CUDA "
                 "backend that has none");
        float* hx = staged_x_.data() + k * capacity_ * item_;
        pack_examples(eps, s, hx, hy);
        MT_CUDA_CHECK(cudaMemcpyAsync(x_[k], hx, rows * item_ * sizeof(float),
                                      cudaMemcpyHostToDevice, stream));
      }
      MT_CUDA_CHECK(
          cudaMemcpyAsync(y_[k], hy, rows * sizeof(int32_t), cudaMemcpyHostToDevice, stream));
    }
  }

  uint64_t serial() const { return serial_; }
  int n(Split s) const { return n_[s == Split::kSupport ? 0 : 1]; }
  const float* x(Split s) const { return x_[s == Split::kSupport ? 0 : 1]; }
  const int32_t* y(Split s) const { return y_[s == Split::kSupport ? 0 : 1]; }
  const std::vector<const Episode<float>*>& episodes() const { return episodes_; }

 private:
  uint64_t serial_;  // identifies the batch's buffers in graph keys (addresses may be reused)
  int64_t capacity_, item_;
  const DeviceRowSource* resident_;
  DevicePool pool_;
  PinnedBuffer<float> staged_x_;  // empty with a resident store: only indices are staged
  PinnedBuffer<int32_t> staged_y_;
  PinnedBuffer<int64_t> staged_rows_;
  float* x_[2] = {nullptr, nullptr};
  int32_t* y_[2] = {nullptr, nullptr};
  int64_t* rows_[2] = {nullptr, nullptr};  // store image index of each row (resident store)
  int n_[2] = {0, 0};
  std::vector<const Episode<float>*> episodes_;
};

CudaTaskBatch& cuda_batch(const TaskBatch& b) {
  auto* c = dynamic_cast<const CudaTaskBatch*>(&b);
  MT_CHECK(c != nullptr, "a task batch of another backend was passed to the CUDA backend");
  return const_cast<CudaTaskBatch&>(*c);
}

// A pass call as graphs see it: (kind, batch serial, split, φ, v or grad, out, tasks, n). The
// batch's serial stands for its device buffers; tasks and n because a batch can be reloaded
// with another count (UFOM's exact sub-batch changes size every step).
using CallKey = std::tuple<int, uint64_t, int, const void*, const void*, const void*, int, int>;

class NetCuda final : public BatchedModel<float> {
 public:
  NetCuda(const Sequential<float>& net, const CudaBackendOptions& o);
  ~NetCuda() override;

  const ParamLayout& layout() const override { return net_.layout(); }
  const VecOps<float>& ops() const override { return *ops_; }
  int max_tasks() const override { return o_.max_tasks; }
  std::string describe() const override;

  std::unique_ptr<TaskBatch> make_batch() const override {
    return std::make_unique<CudaTaskBatch>(o_.max_tasks, o_.max_examples, net_.input_shape().size(),
                                           ++serial_, o_.resident);
  }
  void load(const std::vector<const Episode<float>*>& episodes, TaskBatch& b) override {
    MT_CHECK(!episodes.empty() && static_cast<int>(episodes.size()) <= o_.max_tasks, "a batch of ",
             episodes.size(), " tasks (1 to ", o_.max_tasks, ")");
    cuda_batch(b).load(episodes, o_.max_examples, stream_.get());
  }
  void gather(const TaskBatch& from, const std::vector<int>& tasks, TaskBatch& to) override {
    load(pick_tasks(cuda_batch(from).episodes(), tasks), to);
  }
  void loss_grad(const TaskBatch& b, Split s, const float* phi, float* grad,
                 LossStats* stats) override;
  void hvp(const TaskBatch& b, Split s, const float* phi, const float* v, float* Hv,
           LossStats* stats) override;

 private:
  // Runs enqueue() eagerly the first time a call is seen, as a captured graph afterwards.
  void launch(const CallKey& key, const std::function<void()>& enqueue, const char* pass);
  void copy_stats(int tasks, int n, LossStats* stats);

  const Sequential<float>& net_;  // the layout and the plan
  CudaBackendOptions o_;
  std::vector<NetLayer> plan_;
  OwnedStream stream_;
  std::shared_ptr<cudnnContext> cudnn_;  // null unless a conv may use the cuDNN form
  std::string cudnn_note_;               // why the cuDNN form is not used, when it is not
  std::unique_ptr<CudaNetExec> exec_;
  std::unique_ptr<DevicePool> pool_;
  std::unique_ptr<BatchedNet<float, CudaNetExec>> batched_;
  std::unique_ptr<VecOps<float>> ops_;
  NetBuffers<float> buffers_;
  float* grad_scratch_ = nullptr;  // hvp's gradient [max_tasks, d]
  std::unique_ptr<GraphRunner> graphs_;
  std::map<CallKey,
           std::unique_ptr<char>>
      seen_;  // calls seen once (eager warm-up done); the char's address is the graph key
  mutable uint64_t serial_ = 0;
  std::vector<float> host_loss_;
  std::vector<int32_t> host_correct_;
};

// The cuDNN handle the options call for: none for the GEMM form, a hard requirement for
// cuda.conv=cudnn (UsageError naming the cause), optional for auto with tuning (note set).
std::shared_ptr<cudnnContext> cudnn_for(const CudaBackendOptions& o, std::string* note) {
  using Conv = CudaBackendOptions::Conv;
  if (o.conv == Conv::kGemm || (o.conv == Conv::kAuto && !o.tune)) {
    *note =
        "the GEMM form is the batch-invariant choice (cuda.conv=cudnn or cuda.tune=true to "
        "use cuDNN)";
    return nullptr;
  }
  try {
    return make_cudnn_handle();
  } catch (const Error& e) {
    if (o.conv == Conv::kCudnn)
      throw UsageError(detail::concat("cuda.conv=cudnn, but cuDNN is unusable: ", e.what(),
                                      "; set cuda.conv=gemm (or auto)"));
    *note = detail::concat("cuDNN is unusable (", e.what(), "), so every conv uses the GEMM form");
    std::fprintf(stderr, "warning: cuda.conv=auto with cuda.tune: %s\n", note->c_str());
    return nullptr;
  }
}

NetCuda::NetCuda(const Sequential<float>& net, const CudaBackendOptions& o)
    : net_(net), o_(o), plan_(batched_plan(net)) {
  MT_CHECK(o.max_tasks >= 1 && o.max_examples >= 1, "CUDA backend of ", o.max_tasks, " tasks, ",
           o.max_examples, " examples");
  cudnn_ = cudnn_for(o, &cudnn_note_);
  const ConvForm form =
      o.conv == CudaBackendOptions::Conv::kCudnn ? ConvForm::kCudnnGrouped : ConvForm::kGemm;
  exec_ = std::make_unique<CudaNetExec>(plan_, o.max_tasks, o.max_examples, form, cudnn_.get(),
                                        stream_.get());

  // Everything the passes touch, in one pool: net buffers, hvp's gradient, conv workspaces.
  const NetSizes sizes = net_sizes(plan_, o.max_tasks, o.max_examples, net.classes());
  const int64_t grad_elems = static_cast<int64_t>(o.max_tasks) * net.layout().total();
  const ConvWorkspaceNeed& ws = exec_->need();
  PoolArithmetic plan(std::numeric_limits<size_t>::max());
  auto count = [&](int64_t n, size_t elem) {
    plan.take(static_cast<size_t>(n) * elem);
    return nullptr;
  };
  make_net_buffers<float>(
      sizes, [&](int64_t n) -> float* { return count(n, sizeof(float)); },
      [&](int64_t n) -> int32_t* { return count(n, sizeof(int32_t)); });
  count(grad_elems, sizeof(float));
  count(ws.col, sizeof(float));
  count(2 * ws.gy, sizeof(float));
  count(static_cast<int64_t>(ws.cudnn_bytes), 1);
  pool_ = std::make_unique<DevicePool>(plan.used());
  buffers_ = make_net_buffers<float>(
      sizes, [&](int64_t n) { return pool_->allocate_array<float>(n); },
      [&](int64_t n) { return pool_->allocate_array<int32_t>(n); });
  grad_scratch_ = pool_->allocate_array<float>(grad_elems);
  ConvGemmWorkspace<float> gemm_ws;
  gemm_ws.col = pool_->allocate_array<float>(ws.col);
  gemm_ws.gy = pool_->allocate_array<float>(ws.gy);
  gemm_ws.R_gy = pool_->allocate_array<float>(ws.gy);
  exec_->bind(gemm_ws, ws.cudnn_bytes ? pool_->allocate(ws.cudnn_bytes) : nullptr);
  if (o.tune) exec_->tune(o.max_examples);  // before any capture: it synchronises

  batched_ = std::make_unique<BatchedNet<float, CudaNetExec>>(plan_, net.layout(), o.max_tasks,
                                                              net.classes(), *exec_, buffers_);
  ops_ = make_cuda_vec_ops(stream_.get(), nullptr);
  graphs_ = std::make_unique<GraphRunner>(stream_.get(), o.graphs);
  host_loss_.resize(o.max_tasks);
  host_correct_.resize(o.max_tasks);
}

NetCuda::~NetCuda() {
  const cudaError_t e = cudaStreamSynchronize(stream_.get());  // nothing in flight on our memory
  log_failure("cudaStreamSynchronize", e);
  graphs_.reset();
}

std::string NetCuda::describe() const {
  std::string gpu = "GPU";
  int dev = 0;
  cudaDeviceProp prop{};
  if (cudaGetDevice(&dev) == cudaSuccess && cudaGetDeviceProperties(&prop, dev) == cudaSuccess)
    gpu = detail::concat("GPU ", dev, " (", prop.name, ", sm_", prop.major, prop.minor, ", ",
                         prop.multiProcessorCount, " SMs)");
  const char* conv = o_.conv == CudaBackendOptions::Conv::kCudnn  ? "cudnn"
                     : o_.conv == CudaBackendOptions::Conv::kGemm ? "gemm"
                                                                  : "auto";
  return detail::concat(
      "cuda on ", gpu, "; ", cuda_versions(), "; ", cudnn_version(), "; up to ", o_.max_tasks,
      " tasks of ", o_.max_examples,
      " examples per call, CUDA "
      "Graphs ",
      o_.graphs ? "on" : "off", ", pool ", pool_->capacity() >> 20, " MiB (activations ",
      activation_bytes_per_task(plan_, o_.max_examples) >> 20,
      " MiB per task: size meta_batch per GPU by it); cuda.conv=", conv,
      o_.tune ? " tuned (timings: not reproducible)" : "",
      cudnn_note_.empty() ? "" : " (" + cudnn_note_ + ")", "; convolutions ", exec_->describe());
}

void NetCuda::launch(const CallKey& key, const std::function<void()>& enqueue, const char* pass) {
  auto it = seen_.find(key);
  if (it == seen_.end()) {  // warm-up: cuDNN settles its state on the first run
    enqueue();
    seen_.emplace(key, std::make_unique<char>());
    return;
  }
  graphs_->run(it->second.get(), enqueue, pass);
}

void NetCuda::copy_stats(int tasks, int n, LossStats* stats) {
  if (!stats) return;
  MT_CUDA_CHECK(cudaMemcpyAsync(host_loss_.data(), buffers_.loss, tasks * sizeof(float),
                                cudaMemcpyDeviceToHost, stream_.get()));
  MT_CUDA_CHECK(cudaMemcpyAsync(host_correct_.data(), buffers_.correct, tasks * sizeof(int32_t),
                                cudaMemcpyDeviceToHost, stream_.get()));
  MT_CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
  for (int t = 0; t < tasks; ++t)
    stats[t] = {host_loss_[t], n > 0 ? static_cast<double>(host_correct_[t]) / n : 0.0};
}

void NetCuda::loss_grad(const TaskBatch& b, Split s, const float* phi, float* grad,
                        LossStats* stats) {
  const auto& c = cuda_batch(b);
  const int T = c.tasks(), n = c.n(s);
  auto enqueue = [&] {
    batched_->forward(T, n, phi, c.x(s), c.y(s));
    if (grad) batched_->backward(T, n, phi, c.x(s), c.y(s), grad);
  };
  if (stats) {
    enqueue();  // host results: eager
    copy_stats(T, n, stats);
    return;
  }
  launch({0, c.serial(), static_cast<int>(s), phi, grad, nullptr, T, n}, enqueue,
         s == Split::kSupport ? "support loss and gradient" : "query loss and gradient");
}

void NetCuda::hvp(const TaskBatch& b, Split s, const float* phi, const float* v, float* Hv,
                  LossStats* stats) {
  const auto& c = cuda_batch(b);
  const int T = c.tasks(), n = c.n(s);
  auto enqueue = [&] {
    batched_->forward(T, n, phi, c.x(s), c.y(s));
    batched_->backward(T, n, phi, c.x(s), c.y(s), grad_scratch_);
    batched_->hvp(T, n, phi, v, c.x(s), Hv);
  };
  if (stats) {
    enqueue();
    copy_stats(T, n, stats);
    return;
  }
  launch({1, c.serial(), static_cast<int>(s), phi, v, Hv, T, n}, enqueue, "Hessian-vector product");
}

}  // namespace

std::unique_ptr<BatchedModel<float>> make_net_cuda(const Sequential<float>& net,
                                                   const CudaBackendOptions& options) {
  MT_REQUIRE(gpu_count() > 0, "device=cuda, but ", no_gpu_reason(),
             ": run on a node with an NVIDIA GPU and its driver, or set device=cpu");
  return std::make_unique<NetCuda>(net, options);
}

}  // namespace mt
