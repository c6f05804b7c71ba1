// CPU kernels of BatchNorm (models/batch_norm.h). Derivation of the R-passes (per channel,
// means over the N = m·h·w values, s = mean(x̂ R_x)):
//   R{x̂} = (R_x − mean(R_x) − x̂ s) / σ,  R{σ}/σ = s / σ
//   dx = (g − mean(g) − x̂ mean(g x̂)) / σ with g = γ dy
//   R{dx} = −(s/σ) dx + (R{g} − mean(R{g}) − R{x̂} mean(g x̂) − x̂ mean(R{g} x̂ + g R{x̂})) / σ,
//   R{g} = R_γ dy + γ R{dy};  R{dγ} = Σ(R{dy} x̂ + dy R{x̂});  R{dβ} = Σ R{dy}.
//
// Memory: every pass takes all the channel sums it can in ONE sweep, then writes its output in
// a second (forward: mean, then variance (two-pass, for accuracy), then the write; r_backward:
// six sums, then Σ dy R{x̂}, which needs their means, then the write). Channels go in blocks
// small enough that a block's values of every array the pass touches stay in L2 between its
// sweeps; inside a block a sweep visits the examples in order and each example's channels of the
// block together, so it walks memory forward. Every sum keeps its own accumulator and order of
// accumulation (per example a T partial over the h·w values, vectorised, added in double across
// the examples in order), so fusing changes no sum's elements or order; what can change is how
// GCC spreads a partial over the vector lanes in a loop carrying several reductions, which
// reassociates it: results agree with the one-sum-per-sweep form to a few ulps
// (tests/models/elementwise_fused_test.cpp bounds it).
#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include "core/cpu_kernels.h"
#include "core/parallel_for.h"
#include "models/batch_norm.h"
#include "models/relu.h"

namespace mt {

namespace {
// Channels [c0, c1) of an [m, C, HW] tensor.
struct Block {
  int m, C, HW, c0, c1;
  int64_t base(int i, int c) const { return (static_cast<int64_t>(i) * C + c) * HW; }
};

// Channels per block: as many as keep `arrays` arrays of T of the block within half of a 1 MiB
// L2, and at least one.
template <typename T>
int channels_per_block(int m, int C, int HW, int arrays) {
  constexpr int64_t kBudget = 512 << 10;
  const int64_t per_channel = static_cast<int64_t>(m) * HW * arrays * sizeof(T);
  return static_cast<int>(std::clamp<int64_t>(kBudget / std::max<int64_t>(per_channel, 1), 1, C));
}

// Calls pass(Block) for consecutive blocks covering all C channels. Blocks touch only their own
// channels, so they may run on the threads a lone task is granted (core/parallel_for.h).
template <typename T, typename P>
void for_blocks(int m, int C, int HW, int arrays, P pass) {
  const int per = channels_per_block<T>(m, C, HW, arrays);
  for_task_pieces((C + per - 1) / per, [&](int64_t i) {
    const int c0 = static_cast<int>(i) * per;
    pass(Block{m, C, HW, c0, std::min(C, c0 + per)});
  });
}

// The two sweeps below carry every pass; each is compiled per instruction set and picked at
// run time (MT_DISPATCH_CLONES), with the per-value functions inlined into it. f(c) returns
// channel c's per-value function, capturing everything by value (pointers included: captured
// by reference, GCC vectorised these loops 2-3× slower).

// The terms of up to six sums at one value, as named scalars: GCC 12 vectorises channel_sums
// only when the per-value function returns plain scalars and captures no other closure (a
// returned std::array or a captured lambda made it privatise them per SIMD lane in memory, and
// the sums ran scalar: 4× slower for batch norm's backward).
template <typename T>
struct Terms {
  T t0 = 0, t1 = 0, t2 = 0, t3 = 0, t4 = 0, t5 = 0;
};

// K sums at once (K ≤ 6): sum[q][c] += Σ of term q of f(c)(k) over the values k of channel c,
// for the block's channels.
template <int K, typename T, typename F>
MT_DISPATCH_CLONES void channel_sums(const Block& b, F f, std::array<double*, K> sum) {
  static_assert(1 <= K && K <= 6, "channel_sums takes 1 to 6 sums");
  for (int i = 0; i < b.m; ++i)
    for (int c = b.c0; c < b.c1; ++c) {
      const auto value = f(c);
      const int64_t base = b.base(i, c);
      T s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0;  // the first K are used
#pragma omp simd reduction(+ : s0, s1, s2, s3, s4, s5)
      for (int p = 0; p < b.HW; ++p) {
        const Terms<T> v = value(base + p);
        s0 += v.t0;
        if constexpr (K > 1) s1 += v.t1;
        if constexpr (K > 2) s2 += v.t2;
        if constexpr (K > 3) s3 += v.t3;
        if constexpr (K > 4) s4 += v.t4;
        if constexpr (K > 5) s5 += v.t5;
      }
      const T s[6] = {s0, s1, s2, s3, s4, s5};
      for (int q = 0; q < K; ++q) sum[q][c] += s[q];
    }
}

// Calls f(c)(k) for every value k of the block's channels.
template <typename F>
MT_DISPATCH_CLONES void for_values(const Block& b, F f) {
  for (int i = 0; i < b.m; ++i)
    for (int c = b.c0; c < b.c1; ++c) {
      const auto at = f(c);
      const int64_t base = b.base(i, c);
      for (int p = 0; p < b.HW; ++p) at(base + p);
    }
}

// Per-channel double accumulators, zeroed: K rows of C.
template <int K>
struct Sums {
  explicit Sums(int C) : C_(C), data_(static_cast<size_t>(K) * C, 0.0) {}
  double* operator[](int q) { return data_.data() + static_cast<int64_t>(q) * C_; }
  template <int... Q>
  std::array<double*, sizeof...(Q)> rows() {
    return {(*this)[Q]...};
  }
  int C_;
  std::vector<double> data_;
};
}  // namespace

template <typename T>
void BatchNorm<T>::init(T* W, Rng& rng) const {
  (void)rng;
  for (int c = 0; c < shape_.c; ++c) {
    W[c] = T(1);
    W[shape_.c + c] = T(0);
  }
}

template <typename T>
void BatchNorm<T>::forward(int m, const T* W, const T* x, T* y, LayerContext<T>& ctx) const {
  with_act(act_, slope_, [&](auto act) { forward_pass(act, m, W, x, y, ctx); });
}

template <typename T>
template <typename A>
void BatchNorm<T>::forward_pass(A act, int m, const T* W, const T* x, T* y,
                                LayerContext<T>& ctx) const {
  const int C = shape_.c, HW = shape_.h * shape_.w;
  const double N = static_cast<double>(m) * HW;
  const T* gamma = W;
  const T* beta = W + C;
  ensure_size(ctx.saved, static_cast<size_t>(m) * shape_.size() + C);
  T* xhat = ctx.saved.data();
  T* sigma = xhat + static_cast<int64_t>(m) * shape_.size();
  Sums<2> sums(C);  // Σ x, Σ (x − μ)²
  std::vector<T> mean(C);
  // Two passes over the data for the moments (the mean first, then the squared deviations from
  // it) for accuracy; the second and the write find the block in cache.
  for_blocks<T>(m, C, HW, 3, [&](const Block& b) {
    channel_sums<1, T>(
        b, [&](int) { return [=](int64_t k) { return Terms<T>{x[k]}; }; }, sums.rows<0>());
    for (int c = b.c0; c < b.c1; ++c) mean[c] = static_cast<T>(static_cast<T>(sums[0][c]) / N);
    channel_sums<1, T>(
        b,
        [&](int c) {
          const T mu = mean[c];
          return [=](int64_t k) { return Terms<T>{(x[k] - mu) * (x[k] - mu)}; };
        },
        sums.rows<1>());
    for (int c = b.c0; c < b.c1; ++c) {
      const double var = static_cast<T>(sums[1][c]) / N;
      sigma[c] = static_cast<T>(std::sqrt(var + kEps));
    }
    for_values(b, [&](int c) {
      const T mu = mean[c], s = sigma[c], g = gamma[c], be = beta[c];
      return [=](int64_t k) {
        xhat[k] = (x[k] - mu) / s;
        y[k] = act.out(g * xhat[k] + be);
      };
    });
  });
}

template <typename T>
void BatchNorm<T>::backward(int m, const T* W, const T* x, const LayerContext<T>& ctx, const T* dy,
                            T* dx, T* dW) const {
  (void)x;
  with_act(act_, slope_, [&](auto act) { backward_pass(act, m, W, ctx, dy, dx, dW); });
}

// With an activation, dy is the gradient at its output and d = through(u, dy) the batch norm's.
template <typename T>
template <typename A>
void BatchNorm<T>::backward_pass(A act, int m, const T* W, const LayerContext<T>& ctx, const T* dy,
                                 T* dx, T* dW) const {
  const int C = shape_.c, HW = shape_.h * shape_.w;
  const T N = static_cast<T>(m) * HW;
  const T* gamma = W;
  const T* beta = W + C;
  const T* xhat = ctx.saved.data();
  const T* sigma = xhat + static_cast<int64_t>(m) * shape_.size();
  Sums<2> sums(C);  // Σ d, Σ d x̂
  for_blocks<T>(m, C, HW, dx ? 3 : 2, [&](const Block& b) {
    channel_sums<2, T>(
        b,
        [&](int c) {
          const T g_c = gamma[c], b_c = beta[c];
          return [=](int64_t k) {
            const T d = act.through(g_c * xhat[k] + b_c, dy[k]);
            return Terms<T>{d, d * xhat[k]};
          };
        },
        sums.rows<0, 1>());
    if (dW)
      for (int c = b.c0; c < b.c1; ++c) {
        dW[c] = static_cast<T>(sums[1][c]);
        dW[C + c] = static_cast<T>(sums[0][c]);
      }
    if (!dx) return;
    for_values(b, [&](int c) {
      const T g_c = gamma[c], b_c = beta[c], s_c = sigma[c];
      const T mean_g = g_c * static_cast<T>(sums[0][c]) / N;
      const T mean_g_xhat = g_c * static_cast<T>(sums[1][c]) / N;
      return [=](int64_t k) {
        const T d = act.through(g_c * xhat[k] + b_c, dy[k]);
        dx[k] = (g_c * d - mean_g - xhat[k] * mean_g_xhat) / s_c;
      };
    });
  });
}

template <typename T>
void BatchNorm<T>::r_forward(int m, const T* W, const T* R_W, const T* x, const T* R_x,
                             const LayerContext<T>& ctx, T* R_y) const {
  (void)x;
  with_act(act_, slope_, [&](auto act) { r_forward_pass(act, m, W, R_W, R_x, ctx, R_y); });
}

template <typename T>
template <typename A>
void BatchNorm<T>::r_forward_pass(A act, int m, const T* W, const T* R_W, const T* R_x,
                                  const LayerContext<T>& ctx, T* R_y) const {
  const int C = shape_.c, HW = shape_.h * shape_.w;
  const T N = static_cast<T>(m) * HW;
  const T* gamma = W;
  const T* beta = W + C;
  const T* xhat = ctx.saved.data();
  const T* sigma = xhat + static_cast<int64_t>(m) * shape_.size();
  Sums<2> sums(C);  // Σ R_x, Σ x̂ R_x (zero when R_x is null)
  for_blocks<T>(m, C, HW, R_x ? 3 : 2, [&](const Block& b) {
    if (R_x)
      channel_sums<2, T>(
          b, [&](int) { return [=](int64_t k) {
                          return Terms<T>{R_x[k], xhat[k] * R_x[k]};
                        }; },
          sums.rows<0, 1>());
    for_values(b, [&](int c) {
      const T mean_rx = R_x ? static_cast<T>(sums[0][c]) / N : T(0);
      const T mean_xhat_rx = R_x ? static_cast<T>(sums[1][c]) / N : T(0);
      const T s_c = sigma[c], g_c = gamma[c], b_c = beta[c], Rg_c = R_W[c], Rb_c = R_W[C + c];
      return [=](int64_t k) {
        const T R_xhat = R_x ? (R_x[k] - mean_rx - xhat[k] * mean_xhat_rx) / s_c : T(0);
        R_y[k] = act.through(g_c * xhat[k] + b_c, Rg_c * xhat[k] + g_c * R_xhat + Rb_c);
      };
    });
  });
}

template <typename T>
void BatchNorm<T>::r_backward(int m, const T* W, const T* R_W, const T* x, const T* R_x,
                              const LayerContext<T>& ctx, const T* dy, const T* R_dy, T* R_dx,
                              T* R_dW) const {
  (void)x;
  with_act(act_, slope_,
           [&](auto act) { r_backward_pass(act, m, W, R_W, R_x, ctx, dy, R_dy, R_dx, R_dW); });
}

// With an activation, dy and R_dy are at its output; the batch norm's own, d and R{d}, are
// through(u, ·) of them (the activation is piecewise linear: its mask has no tangent).
template <typename T>
template <typename A>
void BatchNorm<T>::r_backward_pass(A act, int m, const T* W, const T* R_W, const T* R_x,
                                   const LayerContext<T>& ctx, const T* dy, const T* R_dy, T* R_dx,
                                   T* R_dW) const {
  const int C = shape_.c, HW = shape_.h * shape_.w;
  const T N = static_cast<T>(m) * HW;
  const T* gamma = W;
  const T* beta = W + C;
  const T* xhat = ctx.saved.data();
  const T* sigma = xhat + static_cast<int64_t>(m) * shape_.size();
  // Σ d, Σ d x̂, Σ R{d}, Σ R{d} x̂, Σ R_x, Σ x̂ R_x, then Σ d R{x̂}.
  Sums<7> sums(C);
  std::vector<std::array<T, 4>> coef(C);  // a1, a2, b1, b2 = mean(g), mean(g x̂), mean(R{g}), …
  auto sum = [&](int q, int c) { return static_cast<T>(sums[q][c]); };
  // R{x̂} of channel c as a function of the value index (mean(R_x) and s from sums 4 and 5).
  auto R_xhat_of = [&](int c) {
    const T mean_rx = R_x ? sum(4, c) / N : T(0), s = R_x ? sum(5, c) / N : T(0);
    const T s_c = sigma[c];
    return [=](int64_t k) { return R_x ? (R_x[k] - mean_rx - xhat[k] * s) / s_c : T(0); };
  };
  for_blocks<T>(m, C, HW, R_dx ? 5 : 4, [&](const Block& b) {
    if (R_x)
      channel_sums<6, T>(
          b,
          [&](int c) {
            const T g_c = gamma[c], b_c = beta[c];
            return [=](int64_t k) {
              const T u = g_c * xhat[k] + b_c;
              const T d = act.through(u, dy[k]), Rd = act.through(u, R_dy[k]);
              return Terms<T>{d, d * xhat[k], Rd, Rd * xhat[k], R_x[k], xhat[k] * R_x[k]};
            };
          },
          sums.rows<0, 1, 2, 3, 4, 5>());
    else
      channel_sums<4, T>(
          b,
          [&](int c) {
            const T g_c = gamma[c], b_c = beta[c];
            return [=](int64_t k) {
              const T u = g_c * xhat[k] + b_c;
              const T d = act.through(u, dy[k]), Rd = act.through(u, R_dy[k]);
              return Terms<T>{d, d * xhat[k], Rd, Rd * xhat[k]};
            };
          },
          sums.rows<0, 1, 2, 3>());
    if (R_x)  // else R{x̂} = 0 and so is this sum
      channel_sums<1, T>(
          b,
          [&](int c) {
            const T g_c = gamma[c], b_c = beta[c];
            const T mean_rx = sum(4, c) / N, s = sum(5, c) / N, s_c = sigma[c];
            return [=](int64_t k) {
              const T d = act.through(g_c * xhat[k] + b_c, dy[k]);
              return Terms<T>{d * ((R_x[k] - mean_rx - xhat[k] * s) / s_c)};
            };
          },
          sums.rows<6>());
    // The coefficients of R_dx here, not inside the dispatched loop, which may contract them
    // into fused multiply-adds: the same rounding as the one-sum-per-sweep form.
    for (int c = b.c0; c < b.c1; ++c) {
      R_dW[c] = sum(3, c) + sum(6, c);
      R_dW[C + c] = sum(2, c);
      const T g_c = gamma[c], Rg_c = R_W[c];
      coef[c] = {g_c * sum(0, c) / N, g_c * sum(1, c) / N, (Rg_c * sum(0, c) + g_c * sum(2, c)) / N,
                 (Rg_c * sum(1, c) + g_c * sum(3, c) + g_c * sum(6, c)) / N};
    }
    if (!R_dx) return;
    for_values(b, [&](int c) {
      const T g_c = gamma[c], b_c = beta[c], Rg_c = R_W[c], s_c = sigma[c];
      const T s = R_x ? sum(5, c) / N : T(0);
      const T a1 = coef[c][0], a2 = coef[c][1], b1 = coef[c][2], b2 = coef[c][3];
      const auto R_xhat = R_xhat_of(c);
      return [=](int64_t k) {
        const T u = g_c * xhat[k] + b_c;
        const T d = act.through(u, dy[k]), Rd = act.through(u, R_dy[k]);
        const T g = g_c * d;
        const T Rg = Rg_c * d + g_c * Rd;
        const T dx = (g - a1 - xhat[k] * a2) / s_c;
        R_dx[k] = -(s / s_c) * dx + (Rg - b1 - R_xhat(k) * a2 - xhat[k] * b2) / s_c;
      };
    });
  });
}

template class BatchNorm<float>;
template class BatchNorm<double>;

}  // namespace mt
