// Host twins of the task-batched CUDA kernels (models/batched_kernels.h): each launcher of
// batched_kernels_cuda.cu as a serial loop over the same index ranges, calling the same MT_HD
// bodies in the same order of kernels, so that CPU tests judge the GPU's arithmetic. A batch-norm
// reduction block (one per channel on the device) runs its kBnReduceThreads lanes one after
// another through HostBlock, then the same tree levels.
#include "models/batched_kernels.h"

namespace mt {

namespace {
// The host counterpart of one grid-stride kernel: f(k) for k in [0, count).
template <typename F>
void for_each_index(int64_t count, F f) {
  for (int64_t k = 0; k < count; ++k) f(k);
}
int64_t count_of(int n, int tasks, int C, int HW) {
  return static_cast<int64_t>(n) * tasks * C * HW;
}

// The block policy of batched_kernels.h for one reduction block run serially: a sweep calls every
// lane in order (that the lanes write disjoint partials makes this equal to the device's
// concurrent sweep), a tree level runs every lane < half before the next level.
class HostBlock {
 public:
  double* partials() { return partials_; }
  template <typename F>
  void sweep(F f) {
    for (int lane = 0; lane < kBnReduceThreads; ++lane) f(lane);
  }
  void tree(double* v, int m) {
    for (int half = kBnReduceThreads / 2; half > 0; half /= 2)
      for (int lane = 0; lane < half; ++lane) bn_tree_level(v, m, lane, half);
  }
  bool lead() const { return true; }

 private:
  double partials_[kBnSlots * kBnReduceThreads];
};

// The host counterpart of a one-block-per-channel kernel: body(block, tc) for tc in [0, TC).
template <typename F>
void for_each_block(int TC, F body) {
  HostBlock block;
  for (int tc = 0; tc < TC; ++tc) body(block, tc);
}
}  // namespace

template <typename T>
void bn_forward_host(int n, int tasks, int C, int HW, const T* x, const T* gamma, const T* beta,
                     T* y, T* xhat, T* sigma) {
  const int TC = tasks * C;
  for_each_block(
      TC, [&](HostBlock& b, int tc) { bn_forward_stats_block(b, tc, n, TC, HW, x, xhat, sigma); });
  for_each_index(count_of(n, tasks, C, HW),
                 [&](int64_t k) { bn_forward_body(k, TC, HW, gamma, beta, sigma, xhat, y); });
}

template <typename T>
void bn_backward_host(int n, int tasks, int C, int HW, const T* gamma, const T* xhat,
                      const T* sigma, const T* dy, T* dx, T* dgamma, T* dbeta) {
  const int TC = tasks * C;
  for_each_block(TC, [&](HostBlock& b, int tc) {
    bn_backward_stats_block(b, tc, n, TC, HW, xhat, dy, dgamma, dbeta);
  });
  if (!dx) return;
  for_each_index(count_of(n, tasks, C, HW), [&](int64_t k) {
    bn_backward_dx_body(k, n, TC, HW, gamma, xhat, sigma, dy, dgamma, dbeta, dx);
  });
}

template <typename T>
void bn_r_forward_host(int n, int tasks, int C, int HW, const T* gamma, const T* R_gamma,
                       const T* R_beta, const T* xhat, const T* sigma, const T* R_x, T* R_y,
                       T* work) {
  const int TC = tasks * C;
  if (R_x)
    for_each_block(TC, [&](HostBlock& b, int tc) {
      bn_r_forward_stats_block(b, tc, n, TC, HW, xhat, R_x, work);
    });
  for_each_index(count_of(n, tasks, C, HW), [&](int64_t k) {
    bn_r_forward_body(k, TC, HW, gamma, R_gamma, R_beta, xhat, sigma, R_x, work, R_y);
  });
}

template <typename T>
void bn_r_backward_host(int n, int tasks, int C, int HW, const T* gamma, const T* R_gamma,
                        const T* xhat, const T* sigma, const T* R_x, const T* dy, const T* R_dy,
                        T* R_dx, T* R_dgamma, T* R_dbeta, T* work) {
  const int TC = tasks * C;
  for_each_block(TC, [&](HostBlock& b, int tc) {
    bn_r_backward_stats_block(b, tc, n, TC, HW, xhat, sigma, R_x, dy, R_dy, R_dgamma, R_dbeta,
                              work);
  });
  if (!R_dx) return;
  for_each_index(count_of(n, tasks, C, HW), [&](int64_t k) {
    bn_r_backward_dx_body(k, n, TC, HW, gamma, R_gamma, xhat, sigma, R_x, dy, R_dy, R_dbeta, work,
                          R_dx);
  });
}

template <typename T>
void relu_forward_host(int64_t count, T slope, const T* x, T* y) {
  for_each_index(count, [&](int64_t k) { relu_forward_body(k, slope, x, y); });
}
template <typename T>
void relu_backward_host(int64_t count, T slope, const T* x, const T* dy, T* dx) {
  if (dx) for_each_index(count, [&](int64_t k) { relu_backward_body(k, slope, x, dy, dx); });
}
template <typename T>
void relu_r_forward_host(int64_t count, T slope, const T* x, const T* R_x, T* R_y) {
  for_each_index(count, [&](int64_t k) { relu_r_forward_body(k, slope, x, R_x, R_y); });
}
template <typename T>
void relu_r_backward_host(int64_t count, T slope, const T* x, const T* R_dy, T* R_dx) {
  // The R-pass of a piecewise-linear map routes R_dy through the same mask.
  if (R_dx) for_each_index(count, [&](int64_t k) { relu_backward_body(k, slope, x, R_dy, R_dx); });
}

template <typename T>
void add_host(int64_t count, const T* a, const T* b, T* y) {
  for_each_index(count, [&](int64_t k) { add_body(k, a, b, y); });
}

template <typename T>
void max_pool_forward_host(int n, int tasks, int C, int H, int W, const T* x, T* y,
                           int32_t* index) {
  const int TC = tasks * C;
  for_each_index(count_of(n, tasks, C, (H / 2) * (W / 2)),
                 [&](int64_t j) { max_pool_forward_body(j, TC, H, W, x, y, index); });
}
template <typename T>
void max_pool_backward_host(int n, int tasks, int C, int H, int W, const int32_t* index,
                            const T* dy, T* dx) {
  if (!dx) return;
  const int TC = tasks * C;
  for_each_index(count_of(n, tasks, C, H * W),
                 [&](int64_t k) { max_pool_scatter_body(k, TC, H, W, index, dy, dx); });
}
template <typename T>
void max_pool_r_forward_host(int n, int tasks, int C, int H, int W, const int32_t* index,
                             const T* R_x, T* R_y) {
  const int TC = tasks * C;
  for_each_index(count_of(n, tasks, C, (H / 2) * (W / 2)),
                 [&](int64_t j) { max_pool_gather_body(j, TC, H, W, index, R_x, R_y); });
}
template <typename T>
void max_pool_r_backward_host(int n, int tasks, int C, int H, int W, const int32_t* index,
                              const T* R_dy, T* R_dx) {
  max_pool_backward_host(n, tasks, C, H, W, index, R_dy, R_dx);
}

template <typename T>
void mean_pool_forward_host(int n, int tasks, int C, int HW, const T* x, T* y) {
  for_each_index(count_of(n, tasks, C, 1), [&](int64_t k) { mean_pool_average_body(k, HW, x, y); });
}
template <typename T>
void mean_pool_backward_host(int n, int tasks, int C, int HW, const T* dy, T* dx) {
  if (dx)
    for_each_index(count_of(n, tasks, C, HW),
                   [&](int64_t k) { mean_pool_spread_body(k, HW, dy, dx); });
}
template <typename T>
void mean_pool_r_forward_host(int n, int tasks, int C, int HW, const T* R_x, T* R_y) {
  if (R_x) {
    mean_pool_forward_host(n, tasks, C, HW, R_x, R_y);
    return;
  }
  for_each_index(count_of(n, tasks, C, 1), [&](int64_t k) { R_y[k] = T(0); });
}
template <typename T>
void mean_pool_r_backward_host(int n, int tasks, int C, int HW, const T* R_dy, T* R_dx) {
  mean_pool_backward_host(n, tasks, C, HW, R_dy, R_dx);
}

template <typename T>
void softmax_xent_forward_host(int n, int tasks, int K, const T* z, const int32_t* labels, T* prob,
                               T* loss, int32_t* correct) {
  for (int t = 0; t < tasks; ++t)
    softmax_forward_task_body(t, n, tasks, K, z, labels, prob, loss, correct);
}
template <typename T>
void softmax_xent_backward_host(int n, int tasks, int K, const T* prob, const int32_t* labels,
                                T* dz) {
  for_each_index(count_of(n, tasks, K, 1),
                 [&](int64_t k) { softmax_backward_body(k, n, K, prob, labels, dz); });
}
template <typename T>
void softmax_xent_r_backward_host(int n, int tasks, int K, const T* prob, const T* R_z, T* R_dz) {
  for_each_index(static_cast<int64_t>(n) * tasks,
                 [&](int64_t row) { softmax_r_backward_row_body(row, n, K, prob, R_z, R_dz); });
}

#define MT_INSTANTIATE_BATCHED_HOST(T)                                                             \
  template void bn_forward_host<T>(int, int, int, int, const T*, const T*, const T*, T*, T*, T*);  \
  template void bn_backward_host<T>(int, int, int, int, const T*, const T*, const T*, const T*,    \
                                    T*, T*, T*);                                                   \
  template void bn_r_forward_host<T>(int, int, int, int, const T*, const T*, const T*, const T*,   \
                                     const T*, const T*, T*, T*);                                  \
  template void bn_r_backward_host<T>(int, int, int, int, const T*, const T*, const T*, const T*,  \
                                      const T*, const T*, const T*, T*, T*, T*, T*);               \
  template void relu_forward_host<T>(int64_t, T, const T*, T*);                                    \
  template void relu_backward_host<T>(int64_t, T, const T*, const T*, T*);                         \
  template void relu_r_forward_host<T>(int64_t, T, const T*, const T*, T*);                        \
  template void relu_r_backward_host<T>(int64_t, T, const T*, const T*, T*);                       \
  template void add_host<T>(int64_t, const T*, const T*, T*);                                      \
  template void max_pool_forward_host<T>(int, int, int, int, int, const T*, T*, int32_t*);         \
  template void max_pool_backward_host<T>(int, int, int, int, int, const int32_t*, const T*, T*);  \
  template void max_pool_r_forward_host<T>(int, int, int, int, int, const int32_t*, const T*, T*); \
  template void max_pool_r_backward_host<T>(int, int, int, int, int, const int32_t*, const T*,     \
                                            T*);                                                   \
  template void mean_pool_forward_host<T>(int, int, int, int, const T*, T*);                       \
  template void mean_pool_backward_host<T>(int, int, int, int, const T*, T*);                      \
  template void mean_pool_r_forward_host<T>(int, int, int, int, const T*, T*);                     \
  template void mean_pool_r_backward_host<T>(int, int, int, int, const T*, T*);                    \
  template void softmax_xent_forward_host<T>(int, int, int, const T*, const int32_t*, T*, T*,      \
                                             int32_t*);                                            \
  template void softmax_xent_backward_host<T>(int, int, int, const T*, const int32_t*, T*);        \
  template void softmax_xent_r_backward_host<T>(int, int, int, const T*, const T*, T*);

MT_INSTANTIATE_BATCHED_HOST(float)
MT_INSTANTIATE_BATCHED_HOST(double)
#undef MT_INSTANTIATE_BATCHED_HOST

}  // namespace mt
