// The CUDA backend of the task-batched model (models/conv4_cuda.h): the batched layer sequence
// (models/batched_net.h) over a CUDA executor (tuned grouped/GEMM convolutions, the strided-
// batched head, the element-wise kernels), all on one stream. Memory: one pool sized at
// construction holds every activation and scratch buffer; each task batch owns device arrays
// and pinned staging for its examples. Passes without host results are captured as CUDA Graphs
// after one eager warm-up per distinct call and replayed after that (cuda.graphs=false: eager).
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
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
#include "models/conv4_cuda.h"
#include "models/linear_batched.h"

namespace mt {

namespace {

// Destructors report a failing release instead of throwing.
void log_failure(const char* call, cudaError_t e) {
  if (e != cudaSuccess)
    std::fprintf(stderr, "mt::Conv4Cuda: %s failed: %s (%s)\n", call, cudaGetErrorName(e),
                 cudaGetErrorString(e));
}

// The executor of BatchedNet on the GPU: every pass enqueued on one stream.
class CudaNetExec {
 public:
  CudaNetExec(const std::vector<NetLayer>& plan, int tasks, int max_n,
              CudaBackendOptions::Conv conv, cudaStream_t stream)
      : stream_(stream), conv_(plan.size()), head_(plan.size()) {
    for (size_t l = 0; l < plan.size(); ++l) {
      const NetLayer& L = plan[l];
      if (L.kind == NetLayer::kConv) {
        conv_[l] = std::make_unique<BatchedConv2dCuda>(L.in, L.out.c, L.stride, tasks, max_n);
        if (conv == CudaBackendOptions::Conv::kAuto)
          conv_[l]->tune(max_n, stream);  // before any capture: it allocates and synchronises
        else
          for (int p = 0; p < kConvPassCount; ++p)
            conv_[l]->set_form(static_cast<ConvPass>(p), conv == CudaBackendOptions::Conv::kGemm
                                                             ? ConvForm::kGemm
                                                             : ConvForm::kCudnnGrouped);
      } else if (L.kind == NetLayer::kLinear) {
        head_[l] = std::make_unique<BatchedLinearCuda>(static_cast<int>(L.in.size()), L.out.c,
                                                       tasks, max_n);
      }
    }
  }

  std::string describe() const {
    std::string s;
    for (size_t l = 0; l < conv_.size(); ++l)
      if (conv_[l]) s += detail::concat(s.empty() ? "" : "; ", "layer ", l, ": ", conv_[l]->describe());
    return s;
  }

  void conv_forward(size_t l, int n, const float* W, const float* x, float* y) {
    conv_[l]->forward(n, W, x, y, stream_);
  }
  void conv_backward(size_t l, int n, const float* W, const float* x, const float* dy, float* dx,
                     float* dW) {
    conv_[l]->backward(n, W, x, dy, dx, dW, stream_);
  }
  void conv_r_forward(size_t l, int n, const float* W, const float* R_W, const float* x,
                      const float* R_x, float* R_y) {
    conv_[l]->r_forward(n, W, R_W, x, R_x, R_y, stream_);
  }
  void conv_r_backward(size_t l, int n, const float* W, const float* R_W, const float* x,
                       const float* R_x, const float* dy, const float* R_dy, float* R_dx,
                       float* R_dW) {
    conv_[l]->r_backward(n, W, R_W, x, R_x, dy, R_dy, R_dx, R_dW, stream_);
  }
  void linear_forward(size_t l, int n, const float* W, const float* b, const float* x, float* y) {
    head_[l]->forward(n, W, b, x, y, stream_);
  }
  void linear_backward(size_t l, int n, const float* W, const float* x, const float* dy,
                       float* dx, float* dW, float* db) {
    head_[l]->backward(n, W, x, dy, dx, dW, db, stream_);
  }
  void linear_r_forward(size_t l, int n, const float* W, const float* R_W, const float* R_b,
                        const float* x, const float* R_x, float* R_y) {
    head_[l]->r_forward(n, W, R_W, R_b, x, R_x, R_y, stream_);
  }
  void linear_r_backward(size_t l, int n, const float* W, const float* R_W, const float* x,
                         const float* R_x, const float* dy, const float* R_dy, float* R_dx,
                         float* R_dW, float* R_db) {
    head_[l]->r_backward(n, W, R_W, x, R_x, dy, R_dy, R_dx, R_dW, R_db, stream_);
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
class CudaTaskBatch final : public TaskBatch {
 public:
  CudaTaskBatch(int max_tasks, int max_examples, int64_t item, uint64_t serial)
      : serial_(serial),
        capacity_(static_cast<int64_t>(max_tasks) * max_examples),
        item_(item),
        pool_(2 * capacity_ * (item * sizeof(float) + sizeof(int32_t)) + 4 * 256),
        staged_x_(2 * capacity_ * item),
        staged_y_(2 * capacity_) {
    for (int k = 0; k < 2; ++k) {
      x_[k] = pool_.allocate_array<float>(capacity_ * item);
      y_[k] = pool_.allocate_array<int32_t>(capacity_);
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
      MT_CHECK(first.n <= max_examples, "a task of ", first.n, " examples; the CUDA backend "
               "was sized for ", max_examples);
      MT_CHECK(first.item.size() == item_, "an episode of another image shape");
      n_[k] = first.n;
      float* hx = staged_x_.data() + k * capacity_ * item_;
      int32_t* hy = staged_y_.data() + k * capacity_;
      pack_examples(eps, s, hx, hy);
      const int64_t rows = static_cast<int64_t>(n_[k]) * tasks_;
      MT_CUDA_CHECK(cudaMemcpyAsync(x_[k], hx, rows * item_ * sizeof(float),
                                    cudaMemcpyHostToDevice, stream));
      MT_CUDA_CHECK(cudaMemcpyAsync(y_[k], hy, rows * sizeof(int32_t), cudaMemcpyHostToDevice,
                                    stream));
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
  DevicePool pool_;
  PinnedBuffer<float> staged_x_;
  PinnedBuffer<int32_t> staged_y_;
  float* x_[2] = {nullptr, nullptr};
  int32_t* y_[2] = {nullptr, nullptr};
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

class Conv4Cuda final : public BatchedModel<float> {
 public:
  Conv4Cuda(const Conv4Spec& spec, const CudaBackendOptions& o);
  ~Conv4Cuda() override;

  const ParamLayout& layout() const override { return net_->layout(); }
  const VecOps<float>& ops() const override { return *ops_; }
  int max_tasks() const override { return o_.max_tasks; }
  std::string describe() const override;

  std::unique_ptr<TaskBatch> make_batch() const override {
    return std::make_unique<CudaTaskBatch>(o_.max_tasks, o_.max_examples, spec_.input.size(),
                                           ++serial_);
  }
  void load(const std::vector<const Episode<float>*>& episodes, TaskBatch& b) override {
    MT_CHECK(!episodes.empty() && static_cast<int>(episodes.size()) <= o_.max_tasks,
             "a batch of ", episodes.size(), " tasks (1 to ", o_.max_tasks, ")");
    cuda_batch(b).load(episodes, o_.max_examples, stream_);
  }
  void gather(const TaskBatch& from, const std::vector<int>& tasks, TaskBatch& to) override {
    load(pick_tasks(cuda_batch(from).episodes(), tasks), to);
  }
  void loss_grad(const TaskBatch& b, Split s, const float* phi, float* grad,
                 LossStats* stats) override;
  void hvp(const TaskBatch& b, Split s, const float* phi, const float* v, float* Hv,
           LossStats* stats) override;

 private:
  struct PerTasks {
    CudaNetExec exec;
    BatchedNet<float, CudaNetExec> net;
    PerTasks(const std::vector<NetLayer>& plan, const ParamLayout& layout, int tasks, int classes,
             int max_n, CudaBackendOptions::Conv conv, const NetBuffers<float>& buf,
             cudaStream_t stream)
        : exec(plan, tasks, max_n, conv, stream), net(plan, layout, tasks, classes, exec, buf) {}
  };
  PerTasks& for_tasks(int tasks);
  // Runs enqueue() eagerly the first time a call is seen, as a captured graph afterwards.
  void launch(const CallKey& key,
              const std::function<void()>& enqueue, const char* pass);
  void copy_stats(int tasks, int n, LossStats* stats);

  Conv4Spec spec_;
  CudaBackendOptions o_;
  std::unique_ptr<Sequential<float>> net_;  // the layout and the plan
  std::vector<NetLayer> plan_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<DevicePool> pool_;
  std::unique_ptr<VecOps<float>> ops_;
  NetBuffers<float> buffers_;
  float* grad_scratch_ = nullptr;  // hvp's gradient [max_tasks, d]
  std::map<int, std::unique_ptr<PerTasks>> nets_;
  std::unique_ptr<GraphRunner> graphs_;
  std::map<CallKey,
           std::unique_ptr<char>>
      seen_;  // calls seen once (eager warm-up done); the char's address is the graph key
  mutable uint64_t serial_ = 0;
  std::vector<float> host_loss_;
  std::vector<int32_t> host_correct_;
};

Conv4Cuda::Conv4Cuda(const Conv4Spec& spec, const CudaBackendOptions& o)
    : spec_(spec), o_(o), net_(make_conv4<float>(spec)), plan_(batched_plan(*net_)) {
  MT_CHECK(o.max_tasks >= 1 && o.max_examples >= 1, "CUDA backend of ", o.max_tasks, " tasks, ",
           o.max_examples, " examples");
  MT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  const NetSizes sizes = net_sizes(plan_, o.max_tasks, o.max_examples, spec.ways);
  size_t bytes = 0;  // what the pool must hold: every buffer rounded up to the pool's alignment
  auto count = [&](int64_t n, size_t elem) {
    bytes += (static_cast<size_t>(n) * elem + 255) / 256 * 256;
    return nullptr;
  };
  make_net_buffers<float>(
      sizes, [&](int64_t n) -> float* { return count(n, sizeof(float)); },
      [&](int64_t n) -> int32_t* { return count(n, sizeof(int32_t)); });
  const int64_t grad_elems = static_cast<int64_t>(o.max_tasks) * net_->layout().total();
  count(grad_elems, sizeof(float));
  pool_ = std::make_unique<DevicePool>(bytes);
  buffers_ = make_net_buffers<float>(
      sizes, [&](int64_t n) { return pool_->allocate_array<float>(n); },
      [&](int64_t n) { return pool_->allocate_array<int32_t>(n); });
  grad_scratch_ = pool_->allocate_array<float>(grad_elems);
  ops_ = make_cuda_vec_ops(stream_, nullptr);
  graphs_ = std::make_unique<GraphRunner>(stream_, o.graphs);
  host_loss_.resize(o.max_tasks);
  host_correct_.resize(o.max_tasks);
}

Conv4Cuda::~Conv4Cuda() {
  nets_.clear();
  graphs_.reset();
  if (stream_) log_failure("cudaStreamDestroy", cudaStreamDestroy(stream_));
}

std::string Conv4Cuda::describe() const {
  std::string gpu = "GPU";
  int dev = 0;
  cudaDeviceProp prop{};
  if (cudaGetDevice(&dev) == cudaSuccess && cudaGetDeviceProperties(&prop, dev) == cudaSuccess)
    gpu = detail::concat("GPU ", dev, " (", prop.name, ")");
  std::string convs;
  if (!nets_.empty()) convs = "; convolutions " + nets_.begin()->second->exec.describe();
  return detail::concat("cuda on ", gpu, ", up to ", o_.max_tasks, " tasks of ", o_.max_examples,
                        " examples per call, CUDA Graphs ", o_.graphs ? "on" : "off",
                        ", pool ", pool_->capacity() >> 20, " MiB", convs);
}

Conv4Cuda::PerTasks& Conv4Cuda::for_tasks(int tasks) {
  auto& p = nets_[tasks];
  if (!p)
    p = std::make_unique<PerTasks>(plan_, net_->layout(), tasks, spec_.ways, o_.max_examples,
                                   o_.conv, buffers_, stream_);
  return *p;
}

void Conv4Cuda::launch(
    const CallKey& key,
    const std::function<void()>& enqueue, const char* pass) {
  auto it = seen_.find(key);
  if (it == seen_.end()) {  // warm-up: cuDNN and cuBLAS settle their state on the first run
    enqueue();
    seen_.emplace(key, std::make_unique<char>());
    return;
  }
  graphs_->run(it->second.get(), enqueue, pass);
}

void Conv4Cuda::copy_stats(int tasks, int n, LossStats* stats) {
  if (!stats) return;
  MT_CUDA_CHECK(cudaMemcpyAsync(host_loss_.data(), buffers_.loss, tasks * sizeof(float),
                                cudaMemcpyDeviceToHost, stream_));
  MT_CUDA_CHECK(cudaMemcpyAsync(host_correct_.data(), buffers_.correct, tasks * sizeof(int32_t),
                                cudaMemcpyDeviceToHost, stream_));
  MT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  for (int t = 0; t < tasks; ++t)
    stats[t] = {host_loss_[t], n > 0 ? static_cast<double>(host_correct_[t]) / n : 0.0};
}

void Conv4Cuda::loss_grad(const TaskBatch& b, Split s, const float* phi, float* grad,
                          LossStats* stats) {
  const auto& c = cuda_batch(b);
  auto& net = for_tasks(c.tasks()).net;
  const int n = c.n(s);
  auto enqueue = [&] {
    net.forward(n, phi, c.x(s), c.y(s));
    if (grad) net.backward(n, phi, c.x(s), c.y(s), grad);
  };
  if (stats) {
    enqueue();  // host results: eager
    copy_stats(c.tasks(), n, stats);
    return;
  }
  launch({0, c.serial(), static_cast<int>(s), phi, grad, nullptr, c.tasks(), n}, enqueue,
         s == Split::kSupport ? "support loss and gradient" : "query loss and gradient");
}

void Conv4Cuda::hvp(const TaskBatch& b, Split s, const float* phi, const float* v, float* Hv,
                    LossStats* stats) {
  const auto& c = cuda_batch(b);
  auto& net = for_tasks(c.tasks()).net;
  const int n = c.n(s);
  auto enqueue = [&] {
    net.forward(n, phi, c.x(s), c.y(s));
    net.backward(n, phi, c.x(s), c.y(s), grad_scratch_);
    net.hvp(n, phi, v, c.x(s), Hv);
  };
  if (stats) {
    enqueue();
    copy_stats(c.tasks(), n, stats);
    return;
  }
  launch({1, c.serial(), static_cast<int>(s), phi, v, Hv, c.tasks(), n}, enqueue,
         "Hessian-vector product");
}

}  // namespace

std::unique_ptr<BatchedModel<float>> make_conv4_cuda(const Conv4Spec& spec,
                                                     const CudaBackendOptions& options) {
  MT_REQUIRE(gpu_count() > 0, "device = cuda, but no GPU is usable (", describe_devices(),
             "): run on a node with a GPU and a working driver, or set device=cpu");
  return std::make_unique<Conv4Cuda>(spec, options);
}

}  // namespace mt
