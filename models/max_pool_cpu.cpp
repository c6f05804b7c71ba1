// CPU kernels of MaxPool2 (models/max_pool.h). Every pass walks input and output forward in
// memory: forward one pair of input rows after another with branch-free selects (vectorised),
// the R-pass gathers and the adjoint scatters one channel plane after another, zeroing each
// plane of dx just before scattering into it (one sweep over dx, not a fill and then a scatter).
#include <algorithm>

#include "core/cpu_kernels.h"
#include "core/parallel_for.h"
#include "models/max_pool.h"

namespace mt {

namespace {
// Where the windows lie: row(c, oy) is the index, in one example's input, of the top-left value
// of the first window of output row oy of channel c; out_row(c, oy) that output row's index in
// one example's output.
struct Windows {
  Shape in, out;
  int64_t row(int c, int oy) const { return (static_cast<int64_t>(c) * in.h + 2 * oy) * in.w; }
  int64_t out_row(int c, int oy) const { return (static_cast<int64_t>(c) * out.h + oy) * out.w; }
};

// y = the window maximum, index = its position in the example (the first maximum in the order
// (0,0), (0,1), (1,0), (1,1) wins ties).
template <typename T>
MT_DISPATCH_CLONES void pool_forward(int m, Windows g, const T* x, T* y, int32_t* index) {
  const int W = g.in.w;
  for (int i = 0; i < m; ++i) {
    const T* xi = x + i * g.in.size();
    for (int c = 0; c < g.in.c; ++c)
      for (int oy = 0; oy < g.out.h; ++oy) {
        const int32_t row = static_cast<int32_t>(g.row(c, oy));
        const T* r0 = xi + row;
        const T* r1 = r0 + W;
        const int64_t j0 = i * g.out.size() + g.out_row(c, oy);
        T* yj = y + j0;
        int32_t* idx = index + j0;
#pragma omp simd
        for (int ox = 0; ox < g.out.w; ++ox) {
          const int32_t k0 = row + 2 * ox;
          int32_t best = k0;
          T v = r0[2 * ox];
          const T b = r0[2 * ox + 1], d = r1[2 * ox], e = r1[2 * ox + 1];
          best = b > v ? k0 + 1 : best;
          v = b > v ? b : v;
          best = d > v ? k0 + W : best;
          v = d > v ? d : v;
          best = e > v ? k0 + W + 1 : best;
          v = e > v ? e : v;
          idx[ox] = best;
          yj[ox] = v;
        }
      }
  }
}

// out[j] = src[index[j]] per example: the value routing of forward, for R_x.
template <typename T>
MT_DISPATCH_CLONES void pool_gather(int m, Windows g, const int32_t* index, const T* src, T* out) {
  const int64_t n_in = g.in.size(), n_out = g.out.size();
  for (int i = 0; i < m; ++i) {
    const T* si = src + i * n_in;
    const int32_t* idx = index + i * n_out;
    T* oi = out + i * n_out;
    for (int64_t j = 0; j < n_out; ++j) oi[j] = si[idx[j]];
  }
}

// dst = the adjoint of pool_gather: zero, then each window's argmax += src. A few channel planes
// (about 4096 values) at a time, so the scatter lands in values just zeroed, still in L1, and dst
// is swept once rather than filled and then scattered into.
template <typename T>
MT_DISPATCH_CLONES void pool_scatter(int m, Windows g, const int32_t* index, const T* src, T* dst) {
  const int64_t plane = static_cast<int64_t>(g.in.h) * g.in.w;
  const int64_t plane_out = static_cast<int64_t>(g.out.h) * g.out.w;
  const int per =
      static_cast<int>(std::clamp<int64_t>(4096 / std::max<int64_t>(plane, 1), 1, g.in.c));
  for (int i = 0; i < m; ++i) {
    T* di = dst + i * g.in.size();
    const int32_t* idx = index + i * g.out.size();
    const T* si = src + i * g.out.size();
    for (int c0 = 0; c0 < g.in.c; c0 += per) {
      const int c1 = std::min(g.in.c, c0 + per);
      std::fill(di + c0 * plane, di + c1 * plane, T(0));
      for (int64_t j = c0 * plane_out; j < c1 * plane_out; ++j) di[idx[j]] += si[j];
    }
  }
}

// pass(first example, examples) over runs of examples a lone task may spread over its threads
// (each pass above works example by example, with indices local to the example).
template <typename P>
void over_examples(int m, P pass) {
  for_task_runs(m, 4,
                [&](int64_t b, int64_t e) { pass(static_cast<int>(b), static_cast<int>(e - b)); });
}

template <typename T>
void gather(int m, Windows g, const int32_t* index, const T* src, T* out) {
  over_examples(m, [&](int i, int k) {
    pool_gather(k, g, index + i * g.out.size(), src + i * g.in.size(), out + i * g.out.size());
  });
}

template <typename T>
void scatter(int m, Windows g, const int32_t* index, const T* src, T* dst) {
  over_examples(m, [&](int i, int k) {
    pool_scatter(k, g, index + i * g.out.size(), src + i * g.out.size(), dst + i * g.in.size());
  });
}
}  // namespace

template <typename T>
void MaxPool2<T>::forward(int m, const T*, const T* x, T* y, LayerContext<T>& ctx) const {
  ensure_size(ctx.index, static_cast<size_t>(m) * out_.size());
  int32_t* index = ctx.index.data();
  const int64_t n_in = in_.size(), n_out = out_.size();
  over_examples(m, [&](int i, int k) {
    pool_forward(k, Windows{in_, out_}, x + i * n_in, y + i * n_out, index + i * n_out);
  });
}

template <typename T>
void MaxPool2<T>::backward(int m, const T*, const T*, const LayerContext<T>& ctx, const T* dy,
                           T* dx, T*) const {
  if (dx) scatter(m, Windows{in_, out_}, ctx.index.data(), dy, dx);
}

template <typename T>
void MaxPool2<T>::r_forward(int m, const T*, const T*, const T*, const T* R_x,
                            const LayerContext<T>& ctx, T* R_y) const {
  if (R_x)
    gather(m, Windows{in_, out_}, ctx.index.data(), R_x, R_y);
  else
    std::fill(R_y, R_y + m * out_.size(), T(0));
}

template <typename T>
void MaxPool2<T>::r_backward(int m, const T*, const T*, const T*, const T*,
                             const LayerContext<T>& ctx, const T*, const T* R_dy, T* R_dx,
                             T*) const {
  if (R_dx) scatter(m, Windows{in_, out_}, ctx.index.data(), R_dy, R_dx);
}

template class MaxPool2<float>;
template class MaxPool2<double>;

}  // namespace mt
