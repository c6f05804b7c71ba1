// CPU kernels of Relu and LeakyReLU (models/relu.h).
#include <algorithm>

#include "core/cpu_kernels.h"
#include "core/parallel_for.h"
#include "models/relu.h"

namespace mt {

namespace {
// out[k] = act.through(x[k], in[k]): every pass of (leaky) ReLU (models/relu.h), compiled per
// instruction set and picked at run time (virtual functions cannot be multi-versioned
// themselves).
template <typename A, typename T>
MT_DISPATCH_CLONES void pass_where_positive(A act, int64_t n, const T* x, const T* in, T* out) {
  for (int64_t k = 0; k < n; ++k) out[k] = act.through(x[k], in[k]);
}

// The pass over n values, in runs a lone task may spread over its threads.
template <typename T>
void where_positive(int64_t n, const T* x, const T* in, T slope, T* out) {
  with_act(true, slope, [&](auto act) {
    for_task_runs(n, int64_t{1} << 16, [&](int64_t b, int64_t e) {
      pass_where_positive(act, e - b, x + b, in + b, out + b);
    });
  });
}
}  // namespace

template <typename T>
void Relu<T>::forward(int m, const T*, const T* x, T* y, LayerContext<T>&) const {
  const int64_t n = m * shape_.size();
  where_positive(n, x, x, slope_, y);
}

template <typename T>
void Relu<T>::backward(int m, const T*, const T* x, const LayerContext<T>&, const T* dy, T* dx,
                       T*) const {
  if (!dx) return;
  const int64_t n = m * shape_.size();
  where_positive(n, x, dy, slope_, dx);
}

template <typename T>
void Relu<T>::r_forward(int m, const T*, const T*, const T* x, const T* R_x, const LayerContext<T>&,
                        T* R_y) const {
  const int64_t n = m * shape_.size();
  if (R_x)
    where_positive(n, x, R_x, slope_, R_y);
  else
    std::fill(R_y, R_y + n, T(0));
}

template <typename T>
void Relu<T>::r_backward(int m, const T*, const T*, const T* x, const T*, const LayerContext<T>&,
                         const T*, const T* R_dy, T* R_dx, T*) const {
  if (!R_dx) return;
  const int64_t n = m * shape_.size();
  where_positive(n, x, R_dy, slope_, R_dx);
}

template class Relu<float>;
template class Relu<double>;

}  // namespace mt
