// One parallel loop for the CPU side: f(i) for i in [0, n) on `threads` OpenMP threads, one
// index at a time (dynamic schedule), and the first exception any call throws rethrown on the
// caller's thread once the loop is done (an exception must not leave an OpenMP region). And
// the threads one task may spread its own work over, when a batch has fewer tasks than threads.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <exception>

namespace mt {

template <typename F>
void parallel_for(int threads, int64_t n, F f) {
  std::exception_ptr failure;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t i = 0; i < n; ++i) {
    try {
      f(i);
    } catch (...) {
#pragma omp critical
      if (!failure) failure = std::current_exception();
    }
  }
  if (failure) std::rethrow_exception(failure);
}

// Threads the kernels of the task now running on this thread may use for its pieces (see
// models/conv2d_dnnl.cpp): 1, unless an IntraTaskThreads on this thread says more. A kernel
// cuts its work by shape alone, never by this count, so results do not depend on it.
inline thread_local int intra_task_threads_now = 1;
inline int intra_task_threads() { return intra_task_threads_now; }

// Lets the task run on the calling thread (outside any parallel region) use `threads` threads
// for the lifetime of this object.
class IntraTaskThreads {
 public:
  explicit IntraTaskThreads(int threads) : prev_(intra_task_threads_now) {
    intra_task_threads_now = threads < 1 ? 1 : threads;
  }
  ~IntraTaskThreads() { intra_task_threads_now = prev_; }
  IntraTaskThreads(const IntraTaskThreads&) = delete;
  IntraTaskThreads& operator=(const IntraTaskThreads&) = delete;

 private:
  int prev_;
};

// f(i) for i in [0, n): on up to intra_task_threads() threads, or in order on this thread.
template <typename F>
void for_task_pieces(int64_t n, F f) {
  const int64_t threads = std::min<int64_t>(intra_task_threads(), n);
  if (threads <= 1) {
    for (int64_t i = 0; i < n; ++i) f(i);
    return;
  }
  parallel_for(static_cast<int>(threads), n, f);
}

// f(begin, end) over [0, n) in runs of `run` (the last one shorter), as for_task_pieces: for
// element-wise and per-example loops, whose results do not depend on where a run ends.
template <typename F>
void for_task_runs(int64_t n, int64_t run, F f) {
  for_task_pieces((n + run - 1) / run, [&](int64_t i) { f(i * run, std::min(n, (i + 1) * run)); });
}

}  // namespace mt
