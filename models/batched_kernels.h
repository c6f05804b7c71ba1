// Task-batched kernels of the element-wise layers (DESIGN §3.2, §5.1): batch norm, (leaky) ReLU,
// 2×2 max-pool, global mean-pool and softmax cross-entropy, four passes each, and the sum of two
// tensors (residual blocks, gradient fan-in), on T tasks at once.
// Each MT_HD body below computes one output element, one per-(task, channel) block reduction or
// one softmax row; the CUDA kernels (batched_kernels_cuda.cu) and the host twins declared at the
// end (batched_kernels_host.cpp) call the same bodies in the same decomposition, so CI can check
// the GPU arithmetic against the CPU layers without a GPU. No CUDA header is included here.
//
// Layout (fixed): activations [n, T·C, H, W] row-major, example i, task t, channel c, pixel p at
// ((i·T + t)·C + c)·H·W + p, so one "batched channel" tc = t·C + c. Batch-norm γ, β and their
// gradients are [T·C]. Logits and probabilities [n, T·K], row r = i·T + t; labels int32 [n·T].
// Per-(task, channel) sums: one block of kBnReduceThreads lanes per channel (see "Batch norm").
#pragma once

#include <cmath>
#include <cstdint>

#include "core/host_device.h"
#include "core/vec_ops_kernels.h"
#include "models/batch_norm.h"

namespace mt {

// Scratch values per batched channel that the batch-norm R-passes keep between their reduction
// and their element kernel; the R-passes take `work` of bn_work_size(tasks, C) elements.
constexpr int kBnWorkPerChannel = 6;
inline int64_t bn_work_size(int tasks, int C) {
  return static_cast<int64_t>(kBnWorkPerChannel) * tasks * C;
}

// ---------------------------------------------------------------------------------------------
// Batch norm. TC = T·C batched channels; the values of channel tc are x[(i·TC + tc)·HW + p].
//
// Decomposition of every per-(task, channel) sum: one block of L = kBnReduceThreads lanes per
// channel tc. Number the channel's n·HW values by j = i·HW + p; lane k accumulates, in double and
// in increasing j, the terms of the values with j ≡ k (mod L) (a product term is formed in T
// first, as the CPU layer forms it); lanes with k ≥ n·HW keep 0. The L partials are then combined
// by the fixed pairwise tree of tree_reduce_step (core/vec_ops_kernels.h): for half = L/2, …, 1,
// lane k < half adds partial k + half into partial k; partial 0 is the sum, rounded to T where
// the CPU layer has a T. The same run, identical every time, on device and host.
//
// A reduction body is written once against a block policy B, which owns the partials:
//   b.partials()      kBnSlots·L doubles; "slot" s is partials [s·L, (s+1)·L)
//   b.sweep(f)        f(lane) for every lane, then a barrier
//   b.tree(v, m)      the tree over the m slots from v (bn_tree_level); slot s's sum is v[s·L]
//   b.lead()          true in exactly one lane: the one that writes the channel's results
// The CUDA policy runs one thread per lane with __syncthreads (batched_kernels_cuda.cu); the host
// twin's runs the lanes one after another (batched_kernels_host.cpp). Every phase of a body uses
// fresh slots, so a lane never overwrites a partial another lane may still read.
constexpr int kBnReduceThreads = 256;
constexpr int kBnSlots = 7;  // the most a body uses: bn_r_backward_stats_block, 2 + 5
static_assert((kBnReduceThreads & (kBnReduceThreads - 1)) == 0, "the tree needs a power of two");

MT_HD inline int64_t bn_value_index(int TC, int HW, int64_t tc, int i, int p) {
  return (static_cast<int64_t>(i) * TC + tc) * HW + p;
}
MT_HD inline int64_t bn_channel_of(int TC, int HW, int64_t k) { return (k / HW) % TC; }

// f(k) for the elements k of channel tc that lane `lane` owns, in increasing j = i·HW + p.
template <typename F>
MT_HD inline void bn_for_lane(int lane, int n, int TC, int HW, int64_t tc, F f) {
  const int64_t count = static_cast<int64_t>(n) * HW;
  const int di = kBnReduceThreads / HW, dp = kBnReduceThreads % HW;
  int i = lane / HW, p = lane % HW;
  for (int64_t j = lane; j < count; j += kBnReduceThreads) {
    f(bn_value_index(TC, HW, tc, i, p));
    i += di;
    p += dp;
    if (p >= HW) {
      p -= HW;
      ++i;
    }
  }
}

// One level of the tree on the m slots from v: lane < half adds partial lane + half.
MT_HD inline void bn_tree_level(double* v, int m, int lane, int half) {
  for (int s = 0; s < m; ++s) tree_reduce_step(v + s * kBnReduceThreads, lane, half);
}

// Statistics of channel tc: μ (slot 0: Σ x), then σ = sqrt(var + ε) (slot 1: Σ (x − μ)²). Writes
// sigma[tc] and x − μ into xhat (the element body divides by σ in place, which rounds exactly as
// the CPU's (x − μ)/σ).
template <typename T, typename B>
MT_HD inline void bn_forward_stats_block(B& b, int64_t tc, int n, int TC, int HW, const T* x,
                                         T* xhat, T* sigma) {
  constexpr int L = kBnReduceThreads;
  const double N = static_cast<double>(n) * HW;
  double* v = b.partials();
  b.sweep([&](int lane) {
    double s = 0;
    bn_for_lane(lane, n, TC, HW, tc, [&](int64_t k) { s += x[k]; });
    v[lane] = s;
  });
  b.tree(v, 1);
  const T mu = static_cast<T>(static_cast<T>(v[0]) / N);
  b.sweep([&](int lane) {
    double s = 0;
    bn_for_lane(lane, n, TC, HW, tc, [&](int64_t k) {
      const T d = x[k] - mu;
      xhat[k] = d;
      s += d * d;
    });
    v[L + lane] = s;
  });
  b.tree(v + L, 1);
  if (b.lead()) {
    const double var = static_cast<T>(v[L]) / N;
    sigma[tc] = static_cast<T>(std::sqrt(var + BatchNorm<T>::kEps));
  }
}

// Element k: x̂ = (x − μ)/σ (xhat holds x − μ on entry), y = γ x̂ + β.
template <typename T>
MT_HD inline void bn_forward_body(int64_t k, int TC, int HW, const T* gamma, const T* beta,
                                  const T* sigma, T* xhat, T* y) {
  const int64_t tc = bn_channel_of(TC, HW, k);
  const T xh = xhat[k] / sigma[tc];
  xhat[k] = xh;
  y[k] = gamma[tc] * xh + beta[tc];
}

// Reduction of channel tc: dβ = Σ dy (slot 0), dγ = Σ dy x̂ (slot 1).
template <typename T, typename B>
MT_HD inline void bn_backward_stats_block(B& b, int64_t tc, int n, int TC, int HW, const T* xhat,
                                          const T* dy, T* dgamma, T* dbeta) {
  constexpr int L = kBnReduceThreads;
  double* v = b.partials();
  b.sweep([&](int lane) {
    double s_dy = 0, s_dy_xhat = 0;
    bn_for_lane(lane, n, TC, HW, tc, [&](int64_t k) {
      s_dy += dy[k];
      s_dy_xhat += dy[k] * xhat[k];
    });
    v[lane] = s_dy;
    v[L + lane] = s_dy_xhat;
  });
  b.tree(v, 2);
  if (b.lead()) {
    dgamma[tc] = static_cast<T>(v[L]);
    dbeta[tc] = static_cast<T>(v[0]);
  }
}

// Element k: dx = (γ dy − mean(γ dy) − x̂ mean(γ dy x̂)) / σ, the means read from dγ, dβ.
template <typename T>
MT_HD inline void bn_backward_dx_body(int64_t k, int n, int TC, int HW, const T* gamma,
                                      const T* xhat, const T* sigma, const T* dy, const T* dgamma,
                                      const T* dbeta, T* dx) {
  const int64_t tc = bn_channel_of(TC, HW, k);
  const T N = static_cast<T>(n) * HW;
  const T g = gamma[tc];
  const T mean_g = g * dbeta[tc] / N, mean_g_xhat = g * dgamma[tc] / N;
  dx[k] = (g * dy[k] - mean_g - xhat[k] * mean_g_xhat) / sigma[tc];
}

// Reduction of channel tc for r_forward (R_x non-null): work[tc] = mean(R_x) (slot 0),
// work[TC + tc] = mean(x̂ R_x) (slot 1).
template <typename T, typename B>
MT_HD inline void bn_r_forward_stats_block(B& b, int64_t tc, int n, int TC, int HW, const T* xhat,
                                           const T* R_x, T* work) {
  constexpr int L = kBnReduceThreads;
  const T N = static_cast<T>(n) * HW;
  double* v = b.partials();
  b.sweep([&](int lane) {
    double s_rx = 0, s_xhat_rx = 0;
    bn_for_lane(lane, n, TC, HW, tc, [&](int64_t k) {
      s_rx += R_x[k];
      s_xhat_rx += xhat[k] * R_x[k];
    });
    v[lane] = s_rx;
    v[L + lane] = s_xhat_rx;
  });
  b.tree(v, 2);
  if (b.lead()) {
    work[tc] = static_cast<T>(v[0]) / N;
    work[TC + tc] = static_cast<T>(v[L]) / N;
  }
}

// Element k: R_y = R_γ x̂ + γ R{x̂} + R_β, R{x̂} = (R_x − mean(R_x) − x̂ mean(x̂ R_x)) / σ
// (zero when R_x is null; work is then not read).
template <typename T>
MT_HD inline void bn_r_forward_body(int64_t k, int TC, int HW, const T* gamma, const T* R_gamma,
                                    const T* R_beta, const T* xhat, const T* sigma, const T* R_x,
                                    const T* work, T* R_y) {
  const int64_t tc = bn_channel_of(TC, HW, k);
  const T R_xhat = R_x ? (R_x[k] - work[tc] - xhat[k] * work[TC + tc]) / sigma[tc] : T(0);
  R_y[k] = R_gamma[tc] * xhat[k] + gamma[tc] * R_xhat + R_beta[tc];
}

// R{x̂} of element k from the per-channel mean(R_x) and s = mean(x̂ R_x).
template <typename T>
MT_HD inline T bn_r_xhat(int64_t k, const T* xhat, const T* R_x, T sigma, T mean_rx, T s) {
  return R_x ? (R_x[k] - mean_rx - xhat[k] * s) / sigma : T(0);
}

// Reduction of channel tc for r_backward. Work slots (each [TC]): 0 mean(R_x), 1 s = mean(x̂ R_x),
// 2 Σ dy, 3 Σ dy x̂, 4 Σ R_dy x̂, 5 Σ dy R{x̂}. Overwrites R_dγ[tc] = Σ(R_dy x̂ + dy R{x̂}) and
// R_dβ[tc] = Σ R_dy. Two sweeps: the means that R{x̂} needs (partial slots 0, 1; skipped when R_x
// is null), then the five sums (partial slots 2..6: Σ dy, Σ dy x̂, Σ R_dy, Σ R_dy x̂, Σ dy R{x̂}).
template <typename T, typename B>
MT_HD inline void bn_r_backward_stats_block(B& b, int64_t tc, int n, int TC, int HW, const T* xhat,
                                            const T* sigma, const T* R_x, const T* dy,
                                            const T* R_dy, T* R_dgamma, T* R_dbeta, T* work) {
  constexpr int L = kBnReduceThreads;
  const T N = static_cast<T>(n) * HW;
  double* v = b.partials();
  T mean_rx = 0, s = 0;
  if (R_x) {
    b.sweep([&](int lane) {
      double a = 0, c = 0;
      bn_for_lane(lane, n, TC, HW, tc, [&](int64_t k) {
        a += R_x[k];
        c += xhat[k] * R_x[k];
      });
      v[lane] = a;
      v[L + lane] = c;
    });
    b.tree(v, 2);
    mean_rx = static_cast<T>(v[0]) / N;
    s = static_cast<T>(v[L]) / N;
  }
  const T s_c = sigma[tc];
  double* w = v + 2 * L;
  b.sweep([&](int lane) {
    double a = 0, c = 0, d = 0, e = 0, f = 0;
    bn_for_lane(lane, n, TC, HW, tc, [&](int64_t k) {
      a += dy[k];
      c += dy[k] * xhat[k];
      d += R_dy[k];
      e += R_dy[k] * xhat[k];
      f += dy[k] * bn_r_xhat(k, xhat, R_x, s_c, mean_rx, s);
    });
    w[lane] = a;
    w[L + lane] = c;
    w[2 * L + lane] = d;
    w[3 * L + lane] = e;
    w[4 * L + lane] = f;
  });
  b.tree(w, 5);
  if (b.lead()) {
    const T sum_rdy_xhat = static_cast<T>(w[3 * L]), sum_dy_rxhat = static_cast<T>(w[4 * L]);
    R_dgamma[tc] = sum_rdy_xhat + sum_dy_rxhat;
    R_dbeta[tc] = static_cast<T>(w[2 * L]);
    work[tc] = mean_rx;
    work[TC + tc] = s;
    work[2 * TC + tc] = static_cast<T>(w[0]);
    work[3 * TC + tc] = static_cast<T>(w[L]);
    work[4 * TC + tc] = sum_rdy_xhat;
    work[5 * TC + tc] = sum_dy_rxhat;
  }
}

// Element k of R{dx} = −(s/σ) dx + (R{g} − mean(R{g}) − R{x̂} mean(g x̂) − x̂ mean(R{g} x̂ +
// g R{x̂})) / σ with g = γ dy, R{g} = R_γ dy + γ R_dy (models/batch_norm_cpu.cpp).
template <typename T>
MT_HD inline void bn_r_backward_dx_body(int64_t k, int n, int TC, int HW, const T* gamma,
                                        const T* R_gamma, const T* xhat, const T* sigma,
                                        const T* R_x, const T* dy, const T* R_dy, const T* R_dbeta,
                                        const T* work, T* R_dx) {
  const int64_t tc = bn_channel_of(TC, HW, k);
  const T N = static_cast<T>(n) * HW;
  const T g_c = gamma[tc], Rg_c = R_gamma[tc], s_c = sigma[tc];
  const T mean_rx = work[tc], s = work[TC + tc];
  const T sum_dy = work[2 * TC + tc], sum_dy_xhat = work[3 * TC + tc];
  const T sum_rdy = R_dbeta[tc], sum_rdy_xhat = work[4 * TC + tc];
  const T sum_dy_rxhat = work[5 * TC + tc];
  const T a1 = g_c * sum_dy / N, a2 = g_c * sum_dy_xhat / N;
  const T b1 = (Rg_c * sum_dy + g_c * sum_rdy) / N;
  const T b2 = (Rg_c * sum_dy_xhat + g_c * sum_rdy_xhat + g_c * sum_dy_rxhat) / N;
  const T g = g_c * dy[k];
  const T Rg = Rg_c * dy[k] + g_c * R_dy[k];
  const T dx = (g - a1 - xhat[k] * a2) / s_c;
  const T R_xhat = bn_r_xhat(k, xhat, R_x, s_c, mean_rx, s);
  R_dx[k] = -(s / s_c) * dx + (Rg - b1 - R_xhat * a2 - xhat[k] * b2) / s_c;
}

// ---------------------------------------------------------------------------------------------
// ReLU and LeakyReLU, element k of any layout, as Relu<T>: every pass routes its input v through
// the mask x > 0 and scales it by the negative slope off the mask. Slope 0 (ReLU) writes +0 off
// the mask, never 0·v (which is −0, or NaN for v = ±inf), as the CPU layer does.

template <typename T>
MT_HD inline T relu_route(T x, T v, T slope) {
  return x > T(0) ? v : (slope == T(0) ? T(0) : slope * v);
}
template <typename T>
MT_HD inline void relu_forward_body(int64_t k, T slope, const T* x, T* y) {
  y[k] = relu_route(x[k], x[k], slope);
}
template <typename T>
MT_HD inline void relu_backward_body(int64_t k, T slope, const T* x, const T* dy, T* dx) {
  dx[k] = relu_route(x[k], dy[k], slope);
}
template <typename T>
MT_HD inline void relu_r_forward_body(int64_t k, T slope, const T* x, const T* R_x, T* R_y) {
  R_y[k] = R_x ? relu_route(x[k], R_x[k], slope) : T(0);
}

// ---------------------------------------------------------------------------------------------
// Sum of two tensors of the same layout, element k (a residual block's sum, and the routing and
// accumulation of gradients where a tensor fans out): y = a + b, a null operand meaning zero.
// y may be a or b (each element is read before it is written).
template <typename T>
MT_HD inline void add_body(int64_t k, const T* a, const T* b, T* y) {
  y[k] = a ? (b ? a[k] + b[k] : a[k]) : (b ? b[k] : T(0));
}

// ---------------------------------------------------------------------------------------------
// 2×2 max-pool, stride 2, floor output size (H/2, W/2) as MaxPool2<T>. TC = T·C channels per
// example. index[j] is the argmax of output j as an offset into ITS EXAMPLE's input slab
// [TC, H, W] (task t's channel c at (t·C + c)·H·W), i.e. t·C·H·W + MaxPool2's per-task index.

// Output j: the first maximum in the order (0,0), (0,1), (1,0), (1,1) wins ties.
template <typename T>
MT_HD inline void max_pool_forward_body(int64_t j, int TC, int H, int W, const T* x, T* y,
                                        int32_t* index) {
  const int OH = H / 2, OW = W / 2;
  const int ox = static_cast<int>(j % OW);
  const int oy = static_cast<int>((j / OW) % OH);
  const int64_t ch = (j / (static_cast<int64_t>(OW) * OH)) % TC;
  const int64_t i = j / (static_cast<int64_t>(OW) * OH * TC);
  const T* xi = x + i * TC * H * W;
  const int32_t k0 = static_cast<int32_t>(ch * H * W + 2 * oy * W + 2 * ox);
  int32_t best = k0;
  if (xi[k0 + 1] > xi[best]) best = k0 + 1;
  if (xi[k0 + W] > xi[best]) best = k0 + W;
  if (xi[k0 + W + 1] > xi[best]) best = k0 + W + 1;
  index[j] = best;
  y[j] = xi[best];
}

// Output j of the gather src[index] (r_forward); zero when src is null.
template <typename T>
MT_HD inline void max_pool_gather_body(int64_t j, int TC, int H, int W, const int32_t* index,
                                       const T* src, T* dst) {
  const int64_t per_example_out = static_cast<int64_t>(TC) * (H / 2) * (W / 2);
  const int64_t i = j / per_example_out;
  dst[j] = src ? src[i * TC * H * W + index[j]] : T(0);
}

// Input element k of the scatter (backward, r_backward): windows do not overlap, so element k
// receives src of its own window if it is that window's argmax, else 0 (also for the dropped
// odd trailing row / column).
template <typename T>
MT_HD inline void max_pool_scatter_body(int64_t k, int TC, int H, int W, const int32_t* index,
                                        const T* src, T* dst) {
  const int OH = H / 2, OW = W / 2;
  const int64_t per_example = static_cast<int64_t>(TC) * H * W;
  const int64_t i = k / per_example;
  const int64_t r = k % per_example;  // offset in the example's slab
  const int64_t ch = r / (static_cast<int64_t>(H) * W);
  const int py = static_cast<int>((r / W) % H), px = static_cast<int>(r % W);
  const int oy = py / 2, ox = px / 2;
  T v = 0;
  if (oy < OH && ox < OW) {
    const int64_t j = ((i * TC + ch) * OH + oy) * OW + ox;
    if (index[j] == r) v = src[j];
  }
  dst[k] = v;
}

// ---------------------------------------------------------------------------------------------
// Global mean-pool [n, TC, H, W] -> [n, TC] (as GlobalMeanPool<T>): output k averages
// x[k·HW .. (k+1)·HW); the adjoint spreads dy[k]/HW back.

template <typename T>
MT_HD inline void mean_pool_average_body(int64_t k, int HW, const T* x, T* y) {
  T s = 0;
  for (int p = 0; p < HW; ++p) s += x[k * HW + p];
  y[k] = s / HW;
}
template <typename T>
MT_HD inline void mean_pool_spread_body(int64_t k, int HW, const T* dy, T* dx) {
  dx[k] = dy[k / HW] / HW;
}

// ---------------------------------------------------------------------------------------------
// Softmax cross-entropy per task (as SoftmaxCrossEntropy<T>, unweighted). K classes; row
// r = i·T + t holds task t's logits of example i.

// One row: writes p (max-subtracted exponentials in T, normalised), returns ℓ = −log p[y] in
// double, sets *hit when the first maximum of z is the label.
template <typename T>
MT_HD inline double softmax_row_body(int K, const T* z, int32_t label, T* p, bool* hit) {
  int best = 0;
  for (int j = 1; j < K; ++j)
    if (z[j] > z[best]) best = j;
  T sum = 0;
  for (int j = 0; j < K; ++j) sum += (p[j] = std::exp(z[j] - z[best]));
  for (int j = 0; j < K; ++j) p[j] /= sum;
  *hit = best == label;
  return -(static_cast<double>(z[label] - z[best]) - std::log(static_cast<double>(sum)));
}

// Task t: its n rows, loss[t] = mean of ℓ over them (summed in double), correct[t] = hits.
template <typename T>
MT_HD inline void softmax_forward_task_body(int t, int n, int tasks, int K, const T* z,
                                            const int32_t* labels, T* prob, T* loss,
                                            int32_t* correct) {
  double total = 0;
  int32_t hits = 0;
  for (int i = 0; i < n; ++i) {
    const int64_t row = static_cast<int64_t>(i) * tasks + t;
    bool hit = false;
    total += softmax_row_body(K, z + row * K, labels[row], prob + row * K, &hit);
    hits += hit ? 1 : 0;
  }
  loss[t] = static_cast<T>(n > 0 ? total / n : 0.0);
  correct[t] = hits;
}

// Element k of dz = (p − onehot(y)) / n.
template <typename T>
MT_HD inline void softmax_backward_body(int64_t k, int n, int K, const T* prob,
                                        const int32_t* labels, T* dz) {
  const int64_t row = k / K;
  const int j = static_cast<int>(k % K);
  const T d = prob[k] - (j == labels[row] ? T(1) : T(0));
  dz[k] = d / n;
}

// Row r of R{dz} = (p ⊙ R_z − p (pᵀ R_z)) / n, computed as p (R_z − pᵀR_z) / n.
template <typename T>
MT_HD inline void softmax_r_backward_row_body(int64_t row, int n, int K, const T* prob,
                                              const T* R_z, T* R_dz) {
  const T* p = prob + row * K;
  const T* rz = R_z + row * K;
  T p_dot = 0;
  for (int j = 0; j < K; ++j) p_dot += p[j] * rz[j];
  for (int j = 0; j < K; ++j) R_dz[row * K + j] = p[j] * (rz[j] - p_dot) / n;
}

// ---------------------------------------------------------------------------------------------
// Host twins (batched_kernels_host.cpp, T = float, double): the decomposition of the CUDA
// launchers (batched_kernels_cuda.h) run as serial loops (a batch-norm reduction block as its
// lanes one after another, then the same tree). Every named output is OVERWRITTEN;
// an optional output may be null and is then not written; a null R_x means zero.

// x, y, xhat [n, T·C, H·W]; gamma, beta, sigma [T·C]. Overwrites y, xhat, sigma (xhat holds
// x − μ between the reduction and the element kernel).
template <typename T>
void bn_forward_host(int n, int tasks, int C, int HW, const T* x, const T* gamma, const T* beta,
                     T* y, T* xhat, T* sigma);
// Overwrites dgamma, dbeta [T·C] and dx (optional) [n, T·C, H·W].
template <typename T>
void bn_backward_host(int n, int tasks, int C, int HW, const T* gamma, const T* xhat,
                      const T* sigma, const T* dy, T* dx, T* dgamma, T* dbeta);
// Overwrites R_y; work [bn_work_size(tasks, C)] is scratch (untouched when R_x is null, which
// means R_x = 0).
template <typename T>
void bn_r_forward_host(int n, int tasks, int C, int HW, const T* gamma, const T* R_gamma,
                       const T* R_beta, const T* xhat, const T* sigma, const T* R_x, T* R_y,
                       T* work);
// Overwrites R_dgamma, R_dbeta [T·C], R_dx (optional) and the scratch work
// [bn_work_size(tasks, C)]; R_x may be null.
template <typename T>
void bn_r_backward_host(int n, int tasks, int C, int HW, const T* gamma, const T* R_gamma,
                        const T* xhat, const T* sigma, const T* R_x, const T* dy, const T* R_dy,
                        T* R_dx, T* R_dgamma, T* R_dbeta, T* work);

// (Leaky) ReLU of negative slope `slope` over count = n·T·C·H·W elements. Overwrites y / dx
// (optional) / R_y / R_dx (optional).
template <typename T>
void relu_forward_host(int64_t count, T slope, const T* x, T* y);
template <typename T>
void relu_backward_host(int64_t count, T slope, const T* x, const T* dy, T* dx);
template <typename T>
void relu_r_forward_host(int64_t count, T slope, const T* x, const T* R_x, T* R_y);
template <typename T>
void relu_r_backward_host(int64_t count, T slope, const T* x, const T* R_dy, T* R_dx);

// y = a + b over count elements (a or b null: zero). Overwrites y, which may alias a or b.
template <typename T>
void add_host(int64_t count, const T* a, const T* b, T* y);

// Max-pool: x [n, T·C, H, W] -> y, index [n, T·C, H/2, W/2]. Overwrites y and index / dx
// (optional, [n, T·C, H, W]) / R_y / R_dx (optional).
template <typename T>
void max_pool_forward_host(int n, int tasks, int C, int H, int W, const T* x, T* y, int32_t* index);
template <typename T>
void max_pool_backward_host(int n, int tasks, int C, int H, int W, const int32_t* index,
                            const T* dy, T* dx);
template <typename T>
void max_pool_r_forward_host(int n, int tasks, int C, int H, int W, const int32_t* index,
                             const T* R_x, T* R_y);
template <typename T>
void max_pool_r_backward_host(int n, int tasks, int C, int H, int W, const int32_t* index,
                              const T* R_dy, T* R_dx);

// Global mean-pool: x [n, T·C, H·W] -> y [n, T·C]. Overwrites y / dx (optional) / R_y /
// R_dx (optional).
template <typename T>
void mean_pool_forward_host(int n, int tasks, int C, int HW, const T* x, T* y);
template <typename T>
void mean_pool_backward_host(int n, int tasks, int C, int HW, const T* dy, T* dx);
template <typename T>
void mean_pool_r_forward_host(int n, int tasks, int C, int HW, const T* R_x, T* R_y);
template <typename T>
void mean_pool_r_backward_host(int n, int tasks, int C, int HW, const T* R_dy, T* R_dx);

// Softmax cross-entropy: z, prob, dz, R_z, R_dz [n, T·K]; labels [n·T]; loss [T] (mean over the
// task's n examples), correct [T]. Overwrites prob, loss, correct / dz / R_dz.
template <typename T>
void softmax_xent_forward_host(int n, int tasks, int K, const T* z, const int32_t* labels, T* prob,
                               T* loss, int32_t* correct);
template <typename T>
void softmax_xent_backward_host(int n, int tasks, int K, const T* prob, const int32_t* labels,
                                T* dz);
template <typename T>
void softmax_xent_r_backward_host(int n, int tasks, int K, const T* prob, const T* R_z, T* R_dz);

}  // namespace mt
