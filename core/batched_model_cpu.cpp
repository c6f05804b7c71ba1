// CPU backend of the task-batched model (core/batched_model_cpu.h).
#include "core/batched_model_cpu.h"

#include <omp.h>

#include "core/check.h"
#include "core/parallel_for.h"

namespace mt {

namespace {
// A CPU batch refers to the caller's episodes.
template <typename T>
class CpuTaskBatch final : public TaskBatch {
 public:
  void set(std::vector<const Episode<T>*> episodes) {
    episodes_ = std::move(episodes);
    tasks_ = static_cast<int>(episodes_.size());
  }
  const Batch<T>& batch(int t, Split s) const {
    return s == Split::kSupport ? episodes_[t]->support : episodes_[t]->query;
  }
  const std::vector<const Episode<T>*>& episodes() const { return episodes_; }

  // Features kept by keep_features, per split: the layer they feed, then per task its rows.
  struct Kept {
    int layer = 0;  // 0: none
    std::vector<std::vector<T>> rows;
  };
  Kept& kept(Split s) const { return kept_[s == Split::kSupport ? 0 : 1]; }

 private:
  std::vector<const Episode<T>*> episodes_;
  mutable Kept kept_[2];  // a cache of passes over this batch, not its contents
};

template <typename T>
const CpuTaskBatch<T>& cpu_batch(const TaskBatch& b) {
  const auto* c = dynamic_cast<const CpuTaskBatch<T>*>(&b);
  MT_CHECK(c != nullptr, "a task batch of another backend was passed to the CPU backend");
  return *c;
}

// One task's rows of a batched buffer. A batch of one task is laid out as θ itself
// (core/batched_layout.h), so the model reads and writes the caller's buffer directly: no
// copies of d values in and out (for ResNet-12, 47 MiB each way per pass). Otherwise task t's
// rows go through the thread's scratch row.
template <typename T>
const T* task_in(const BatchedLayout& l, const T* x, int t, std::vector<T>& row) {
  if (l.tasks() == 1) return x;
  host_vec_ops<T>().gather(l, x, {t}, row.data());
  return row.data();
}
template <typename T>
T* task_out(const BatchedLayout& l, T* y, std::vector<T>& row) {
  return l.tasks() == 1 ? y : row.data();
}
// Task t's result, written at task_out, into y.
template <typename T>
void put_task_out(const BatchedLayout& l, const std::vector<T>& row, int t, T* y) {
  if (l.tasks() > 1) host_vec_ops<T>().scatter(l, row.data(), {t}, y);
}
}  // namespace

template <typename T>
CpuBatchedModel<T>::CpuBatchedModel(const Model<T>& model, int threads, int max_tasks)
    : model_(model), threads_(threads), max_tasks_(max_tasks) {
  MT_CHECK(threads >= 1, "threads must be >= 1");
  MT_CHECK(max_tasks >= 1, "max_tasks must be >= 1");
  const size_t d = model.layout().total();
  for (int i = 0; i < threads; ++i) {
    Scratch s;
    s.ws = model.make_workspace();
    s.phi.resize(d);
    s.v.resize(d);
    s.out.resize(d);
    scratch_.push_back(std::move(s));
  }
}

template <typename T>
std::string CpuBatchedModel<T>::describe() const {
  return detail::concat("cpu (", threads_, threads_ == 1 ? " thread" : " threads", ", up to ",
                        max_tasks_, " tasks per call)");
}

template <typename T>
std::unique_ptr<TaskBatch> CpuBatchedModel<T>::make_batch() const {
  return std::make_unique<CpuTaskBatch<T>>();
}

template <typename T>
void CpuBatchedModel<T>::load(const std::vector<const Episode<T>*>& episodes, TaskBatch& b) {
  MT_CHECK(!episodes.empty() && static_cast<int>(episodes.size()) <= max_tasks_, "a batch of ",
           episodes.size(), " tasks (1 to ", max_tasks_, " allowed)");
  auto& c = const_cast<CpuTaskBatch<T>&>(cpu_batch<T>(b));
  c.set(episodes);
  for (Split s : {Split::kSupport, Split::kQuery}) c.kept(s).layer = 0;  // other episodes now
}

template <typename T>
void CpuBatchedModel<T>::gather(const TaskBatch& from, const std::vector<int>& tasks,
                                TaskBatch& to) {
  load(pick_tasks(cpu_batch<T>(from).episodes(), tasks), to);
}

// Whole rounds of one task per thread first; the tasks left over (all of them when the batch
// is smaller than the thread count) then run one at a time with every thread inside each.
template <typename T>
template <typename F>
void CpuBatchedModel<T>::for_tasks(int tasks, F f) {
  const int rounds = tasks - tasks % threads_;
  if (rounds > 0)
    parallel_for(threads_, rounds,
                 [&](int64_t t) { f(static_cast<int>(t), scratch_[omp_get_thread_num()]); });
  IntraTaskThreads all(threads_);
  for (int t = rounds; t < tasks; ++t) f(t, scratch_[0]);
}

template <typename T>
void CpuBatchedModel<T>::loss_grad(const TaskBatch& b, Split s, const T* phi, T* grad,
                                   LossStats* stats) {
  const auto& c = cpu_batch<T>(b);
  const BatchedLayout l(model_.layout(), c.tasks());
  for_tasks(c.tasks(), [&](int t, Scratch& w) {
    T* g = grad ? task_out(l, grad, w.out) : nullptr;
    const LossStats st = model_.loss_grad(task_in(l, phi, t, w.phi), c.batch(t, s), g, *w.ws);
    if (grad) put_task_out(l, w.out, t, grad);
    if (stats) stats[t] = st;
  });
}

template <typename T>
void CpuBatchedModel<T>::hvp(const TaskBatch& b, Split s, const T* phi, const T* v, T* Hv,
                             LossStats* stats) {
  const auto& c = cpu_batch<T>(b);
  const BatchedLayout l(model_.layout(), c.tasks());
  for_tasks(c.tasks(), [&](int t, Scratch& w) {
    const LossStats st = model_.hvp(task_in(l, phi, t, w.phi), c.batch(t, s), task_in(l, v, t, w.v),
                                    nullptr, task_out(l, Hv, w.out), *w.ws);
    put_task_out(l, w.out, t, Hv);
    if (stats) stats[t] = st;
  });
}

template <typename T>
bool CpuBatchedModel<T>::keep_features(const TaskBatch& b, Split s, const T* phi, int tensor) {
  const int layer = model_.split_layer(tensor);
  if (layer == 0) return false;
  const auto& c = cpu_batch<T>(b);
  typename CpuTaskBatch<T>::Kept& kept = c.kept(s);
  const BatchedLayout l(model_.layout(), c.tasks());
  kept.rows.resize(static_cast<size_t>(c.tasks()));
  for_tasks(c.tasks(), [&](int t, Scratch& w) {
    const Batch<T>& batch = c.batch(t, s);
    std::vector<T>& row = kept.rows[static_cast<size_t>(t)];
    row.resize(static_cast<size_t>(model_.feature_count(layer, batch.n)));
    model_.features(layer, task_in(l, phi, t, w.phi), batch, row.data(), *w.ws);
  });
  kept.layer = layer;
  return true;
}

template <typename T>
void CpuBatchedModel<T>::loss_grad_kept(const TaskBatch& b, Split s, const T* phi, T* grad,
                                        LossStats* stats) {
  const auto& c = cpu_batch<T>(b);
  const typename CpuTaskBatch<T>::Kept& kept = c.kept(s);
  MT_CHECK(kept.layer > 0 && kept.rows.size() == static_cast<size_t>(c.tasks()),
           "loss_grad_kept without keep_features on this batch");
  const BatchedLayout l(model_.layout(), c.tasks());
  for_tasks(c.tasks(), [&](int t, Scratch& w) {
    T* g = grad ? task_out(l, grad, w.out) : nullptr;
    const LossStats st =
        model_.loss_grad_from(kept.layer, task_in(l, phi, t, w.phi),
                              kept.rows[static_cast<size_t>(t)].data(), c.batch(t, s), g, *w.ws);
    if (grad) put_task_out(l, w.out, t, grad);
    if (stats) stats[t] = st;
  });
}

template class CpuBatchedModel<float>;
template class CpuBatchedModel<double>;

}  // namespace mt
