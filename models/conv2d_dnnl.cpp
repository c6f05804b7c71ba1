// oneDNN implementation of models/conv2d_dnnl.h. Each thread owns an engine, a stream, a cache
// of primitives with their memory objects (only the data handles change per call) and the
// scratch for blocked layouts, so threads share nothing. oneDNN runs one thread per call.
#include "models/conv2d_dnnl.h"

#include <omp.h>

#include <algorithm>
#include <oneapi/dnnl/dnnl.hpp>
#include <set>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/blas.h"
#include "core/check.h"
#include "core/cpu_kernels.h"
#include "core/layer.h"
#include "core/parallel_for.h"

namespace mt::dnnl_conv {

namespace {

using dnnl::memory;
using Tag = memory::format_tag;

enum class Pass : int { kForward, kBackwardData, kBackwardWeights };
const char* pass_name(Pass p) {
  switch (p) {
    case Pass::kForward:
      return "fwd";
    case Pass::kBackwardData:
      return "bwd_d";
    case Pass::kBackwardWeights:
      return "bwd_w";
  }
  return "?";
}

// dst_c: the channel count of the caller's output-side activation buffer (y, dy); more than
// g.out_c when the call is one channel piece of a wider layer (see backward_weights).
struct Key {
  Geometry g;
  int m;
  Pass pass;
  bool accumulate;
  int dst_c;
  bool operator==(const Key& o) const {
    return g.in_c == o.g.in_c && g.in_h == o.g.in_h && g.in_w == o.g.in_w && g.out_c == o.g.out_c &&
           g.stride == o.g.stride && g.kernel == o.g.kernel && m == o.m && pass == o.pass &&
           accumulate == o.accumulate && dst_c == o.dst_c;
  }
};
struct KeyHash {
  size_t operator()(const Key& k) const {
    size_t h = 0;
    for (int v : {k.g.in_c, k.g.in_h, k.g.in_w, k.g.out_c, k.g.stride, k.g.kernel, k.m,
                  static_cast<int>(k.pass), static_cast<int>(k.accumulate), k.dst_c})
      h = h * 1000003u + static_cast<size_t>(v);
    return h;
  }
};

// Blocked layouts (nChw16c & co.) pay for their reorders from 16 channels in and out on: about
// 1.6–3.5× over the plain-layout GEMM form per pass, reorders included, for 64 → 64 channels
// at 3..14 px; with 1 input channel the plain form is faster and needs no reorders.
bool use_blocked(const Geometry& g) { return g.in_c >= 16 && g.out_c >= 16; }

// Winograd F(4×4, 3×3) (oneDNN's jit_wino_4x3, AVX-512) does a 3×3 stride-1 pass with 2.25×
// fewer multiplications on 4×4 output tiles, plus transforms per tile. Measured on one core of
// the 2-core Xeon (ResNet-12 shapes, 64..640 channels): 1.7–2.1× faster than the direct kernel
// from about 240 tiles per call, 1.2–1.3× at 72–121, 1.0× at 36 and 0.3–0.6× below 20; so it
// is taken from kMinWinogradTiles tiles. It rounds differently from the direct kernel (norm-wise
// 1–3e-6 relative on those shapes, tests/models/conv2d_dnnl_test.cpp), but the choice follows
// the call's shape alone, so the bits do not depend on threads, ranks or runs. Where oneDNN
// has no such kernel (no AVX-512), the direct one runs.
constexpr int64_t kMinWinogradTiles = 100;
int64_t winograd_tiles(const Geometry& g, int m) {
  return static_cast<int64_t>(m) * ((g.out_h + 3) / 4) * ((g.out_w + 3) / 4);
}
bool winograd_shape(const Geometry& g) { return use_blocked(g) && g.kernel == 3 && g.stride == 1; }
bool want_winograd(const Geometry& g, int m) {
  return winograd_shape(g) && winograd_tiles(g, m) >= kMinWinogradTiles;
}

// One pass: the convolution on its own layouts ("inner"), reorders from the caller's plain
// buffers into them, and from its output back (adding when accumulating). Slots: 0 and 1 the
// inputs, 2 the output. Inner buffers needing reorders live in the thread's scratch.
struct Entry {
  dnnl::primitive conv;
  int args[3];
  memory user[3], inner[3];
  bool reorder[3] = {false, false, false};
  dnnl::primitive to_inner[2], to_user;
  bool sum_post_op = false;  // accumulation done by the convolution itself (plain forward)
};

struct ThreadState {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  std::unordered_map<Key, Entry, KeyHash> cache;
  std::vector<float> scratch[3];  // grow-only, shared by this thread's entries
  std::vector<float> partials;    // the weight pass's per-piece dW (backward_weights_by_examples)
  std::set<std::string> impls;
  int64_t created = 0;
};

ThreadState& state() {
  thread_local ThreadState s;
  return s;
}

// oneDNN's OpenMP runtime takes its thread count from omp_get_max_threads() when a primitive
// is built and when it runs. Inside an active parallel region it runs serially anyway, but a
// one-thread team (threads = 1) is not active, and a caller outside any region would get every
// core: so the calling task's thread count is 1 for the duration of each call (this ICV is per
// task, so other threads are unaffected) and restored afterwards.
class OneThread {
 public:
  OneThread() : prev_(omp_get_max_threads()) { omp_set_num_threads(1); }
  ~OneThread() { omp_set_num_threads(prev_); }
  OneThread(const OneThread&) = delete;
  OneThread& operator=(const OneThread&) = delete;

 private:
  int prev_;
};

struct Descs {
  memory::desc src, weights, dst;
  memory::dims strides, pad_l, pad_r;
};

// The caller's plain layouts (any = false) or oneDNN's choice (any = true). A plain output
// side with dst_c > out_c is a channel slice of a [m, dst_c, out_h, out_w] buffer.
Descs descs(const Geometry& g, int m, bool any, int dst_c) {
  const memory::dim s = g.stride, k = g.kernel, p = g.kernel / 2;
  // Right/bottom padding that makes the output exactly out_h × out_w (0 or 1).
  const memory::dim pr_h = (g.out_h - 1) * s + k - g.in_h - p;
  const memory::dim pr_w = (g.out_w - 1) * s + k - g.in_w - p;
  const auto act = any ? Tag::any : Tag::nchw;
  const memory::dims out_dims = {m, g.out_c, g.out_h, g.out_w};
  const memory::dim plane = static_cast<memory::dim>(g.out_h) * g.out_w;
  const memory::desc out = any ? memory::desc(out_dims, memory::data_type::f32, Tag::any)
                               : memory::desc(out_dims, memory::data_type::f32,
                                              memory::dims{dst_c * plane, plane, g.out_w, 1});
  return {memory::desc({m, g.in_c, g.in_h, g.in_w}, memory::data_type::f32, act),
          memory::desc({g.out_c, g.in_c, k, k}, memory::data_type::f32, any ? Tag::any : Tag::oihw),
          out,
          {s, s},
          {p, p},
          {pr_h, pr_w}};
}

dnnl::primitive_attr strict_attr() {
  dnnl::primitive_attr attr;
  attr.set_fpmath_mode(dnnl::fpmath_mode::strict);  // plain fp32, no bf16/f16 down-conversion
  return attr;
}

dnnl::convolution_forward::primitive_desc forward_pd(const Descs& d, dnnl::algorithm alg,
                                                     const dnnl::engine& eng, bool sum) {
  dnnl::primitive_attr attr = strict_attr();
  if (sum) {
    dnnl::post_ops ops;
    ops.append_sum(1.0f);
    attr.set_post_ops(ops);
  }
  dnnl::convolution_forward::desc desc(dnnl::prop_kind::forward_training, alg, d.src, d.weights,
                                       d.dst, d.strides, d.pad_l, d.pad_r);
  return {desc, attr, eng};
}

Entry build(ThreadState& st, const Key& k, dnnl::algorithm alg) {
  const bool blocked = use_blocked(k.g);
  const Descs plain = descs(k.g, k.m, false, k.dst_c), d = descs(k.g, k.m, blocked, k.dst_c);
  const dnnl::engine& eng = st.engine;
  Entry e;
  std::string impl;
  memory::desc user_md[3], inner_md[3];
  switch (k.pass) {
    case Pass::kForward: {
      e.sum_post_op = k.accumulate && !blocked;
      auto pd = forward_pd(d, alg, eng, e.sum_post_op);
      e.conv = dnnl::convolution_forward(pd);
      impl = pd.impl_info_str();
      e.args[0] = DNNL_ARG_SRC, e.args[1] = DNNL_ARG_WEIGHTS, e.args[2] = DNNL_ARG_DST;
      user_md[0] = plain.src, user_md[1] = plain.weights, user_md[2] = plain.dst;
      inner_md[0] = pd.src_desc(), inner_md[1] = pd.weights_desc(), inner_md[2] = pd.dst_desc();
      break;
    }
    case Pass::kBackwardData: {
      dnnl::convolution_backward_data::desc desc(alg, d.src, d.weights, d.dst, d.strides, d.pad_l,
                                                 d.pad_r);
      dnnl::convolution_backward_data::primitive_desc pd(desc, strict_attr(), eng,
                                                         forward_pd(d, alg, eng, false));
      e.conv = dnnl::convolution_backward_data(pd);
      impl = pd.impl_info_str();
      e.args[0] = DNNL_ARG_DIFF_DST, e.args[1] = DNNL_ARG_WEIGHTS, e.args[2] = DNNL_ARG_DIFF_SRC;
      user_md[0] = plain.dst, user_md[1] = plain.weights, user_md[2] = plain.src;
      inner_md[0] = pd.diff_dst_desc(), inner_md[1] = pd.weights_desc();
      inner_md[2] = pd.diff_src_desc();
      break;
    }
    case Pass::kBackwardWeights: {
      dnnl::convolution_backward_weights::desc desc(alg, d.src, d.weights, d.dst, d.strides,
                                                    d.pad_l, d.pad_r);
      dnnl::convolution_backward_weights::primitive_desc pd(desc, strict_attr(), eng,
                                                            forward_pd(d, alg, eng, false));
      e.conv = dnnl::convolution_backward_weights(pd);
      impl = pd.impl_info_str();
      e.args[0] = DNNL_ARG_SRC, e.args[1] = DNNL_ARG_DIFF_DST, e.args[2] = DNNL_ARG_DIFF_WEIGHTS;
      user_md[0] = plain.src, user_md[1] = plain.dst, user_md[2] = plain.weights;
      inner_md[0] = pd.src_desc(), inner_md[1] = pd.diff_dst_desc();
      inner_md[2] = pd.diff_weights_desc();
      break;
    }
  }
  for (int i = 0; i < 3; ++i) {
    e.user[i] = memory(user_md[i], eng, DNNL_MEMORY_NONE);
    e.reorder[i] = inner_md[i] != user_md[i] || (i == 2 && k.accumulate && !e.sum_post_op);
    e.inner[i] = e.reorder[i] ? memory(inner_md[i], eng, DNNL_MEMORY_NONE) : e.user[i];
  }
  for (int i = 0; i < 2; ++i)
    if (e.reorder[i])
      e.to_inner[i] = dnnl::reorder(dnnl::reorder::primitive_desc(e.user[i], e.inner[i]));
  if (e.reorder[2]) {
    dnnl::primitive_attr attr = strict_attr();
    if (k.accumulate) {
      dnnl::post_ops ops;
      ops.append_sum(1.0f);  // user += inner
      attr.set_post_ops(ops);
    }
    e.to_user = dnnl::reorder(dnnl::reorder::primitive_desc(e.inner[2], e.user[2], attr));
  }
  st.impls.insert(std::string(pass_name(k.pass)) + "=" + impl);
  ++st.created;
  return e;
}

// Winograd where the shape asks for it and oneDNN has the kernel, the direct kernel otherwise.
Entry build(ThreadState& st, const Key& k) {
  if (want_winograd(k.g, k.m)) {
    try {
      return build(st, k, dnnl::algorithm::convolution_winograd);
    } catch (const dnnl::error& err) {
      if (err.status != dnnl_unimplemented) throw;  // run() reports it with the shape
    }
  }
  return build(st, k, dnnl::algorithm::convolution_direct);
}

// n floats of v starting on a 64-byte boundary: oneDNN's Winograd kernels load whole cache
// lines with aligned instructions (its own allocations are aligned; ours must be too).
float* aligned_scratch(std::vector<float>& v, size_t n) {
  constexpr size_t kAlignFloats = 64 / sizeof(float);
  ensure_size(v, n + kAlignFloats - 1);
  const auto at = reinterpret_cast<uintptr_t>(v.data());
  const size_t skip = (kAlignFloats - (at / sizeof(float)) % kAlignFloats) % kAlignFloats;
  return v.data() + skip;
}

// Runs pass k reading a and b and writing c (slots 0, 1, 2 of Entry).
void run(const Key& k, const float* a, const float* b, float* c) {
  MT_CHECK(k.m >= 1, "conv batch size must be >= 1, got ", k.m);
  OneThread one;
  ThreadState& st = state();
  auto it = st.cache.find(k);
  if (it == st.cache.end()) {
    try {
      it = st.cache.emplace(k, build(st, k)).first;
    } catch (const dnnl::error& err) {
      MT_CHECK(false, "oneDNN could not build the ", pass_name(k.pass), " convolution for [", k.m,
               ",", k.g.in_c, ",", k.g.in_h, ",", k.g.in_w, "] -> ", k.g.out_c,
               " channels, kernel ", k.g.kernel, ", stride ", k.g.stride, ": ", err.what());
    }
  }
  Entry& e = it->second;
  e.user[0].set_data_handle(const_cast<float*>(a));
  e.user[1].set_data_handle(const_cast<float*>(b));
  e.user[2].set_data_handle(c);
  for (int i = 0; i < 3; ++i)
    if (e.reorder[i]) {
      const size_t n = e.inner[i].get_desc().get_size() / sizeof(float);
      e.inner[i].set_data_handle(aligned_scratch(st.scratch[i], n));
    }
  for (int i = 0; i < 2; ++i)
    if (e.reorder[i])
      e.to_inner[i].execute(st.stream, {{DNNL_ARG_FROM, e.user[i]}, {DNNL_ARG_TO, e.inner[i]}});
  e.conv.execute(st.stream,
                 {{e.args[0], e.inner[0]}, {e.args[1], e.inner[1]}, {e.args[2], e.inner[2]}});
  if (e.reorder[2])
    e.to_user.execute(st.stream, {{DNNL_ARG_FROM, e.inner[2]}, {DNNL_ARG_TO, e.user[2]}});
  st.stream.wait();
}

}  // namespace

namespace {
// Values per example of the input and of the output (the strides of example pieces).
int64_t in_values(const Geometry& g) { return static_cast<int64_t>(g.in_c) * g.in_h * g.in_w; }
int64_t out_values(const Geometry& g) { return static_cast<int64_t>(g.out_c) * g.out_h * g.out_w; }

// Every pass does the arithmetic of its GEMM: 2·m·O·(C·k²)·P.
void count_flops(const Geometry& g, int m) {
  const unsigned long long taps = static_cast<unsigned long long>(g.kernel) * g.kernel;
  add_dense_flops(2ull * m * g.out_c * g.in_c * taps * g.out_h * g.out_w);
}

// Pieces: a pass is cut by its shape alone into single-threaded oneDNN calls, which run on the
// threads intra_task_threads() grants (core/parallel_for.h), or in order. As the cut never
// depends on the thread count, neither do the bits. Forward and backward-data take runs of
// about kPieceExamples examples, or enough for kWinogradPieceTiles Winograd tiles where the
// layer could take Winograd on outputs of 9×9 or more (on 10×10, 19 examples: 1.45× faster
// than 8, whose 72 tiles stay direct), and a small batch (a support set) at least kMinPieces runs
// (independent outputs); backward-weights takes runs of kPieceChannels output channels of the
// blocked layouts (independent rows of dW, so no piece sums another's partial result).
constexpr int kPieceExamples = 8;
constexpr int kWinogradPieceTiles = 168;
constexpr int kMinWinogradTilesPerExample = 9;  // smaller outputs keep kPieceExamples
constexpr int kMinPieces = 4;
constexpr int kPieceChannels = 32;

// Piece i of n near-equal runs of `total` examples: {first, count}.
std::pair<int, int> piece(int total, int n, int64_t i) {
  const int base = total / n, extra = total % n, k = static_cast<int>(i);
  return {k * base + std::min(k, extra), base + (k < extra ? 1 : 0)};
}

int example_pieces(const Geometry& g, int m) {
  int per = kPieceExamples;
  const int64_t tiles = winograd_tiles(g, 1);
  if (winograd_shape(g) && tiles >= kMinWinogradTilesPerExample)
    per = std::max<int>(per, static_cast<int>((kWinogradPieceTiles + tiles - 1) / tiles));
  return std::max((m + per - 1) / per, std::min(m, kMinPieces));
}
int channel_pieces(const Geometry& g) {
  return use_blocked(g) ? std::max(1, g.out_c / kPieceChannels) : 1;
}

// Runs pass(m0, mk) over the example pieces of an m-example batch.
template <typename F>
void over_examples(const Geometry& g, int m, F pass) {
  const int n = example_pieces(g, m);
  for_task_pieces(n, [&](int64_t i) {
    const auto [m0, mk] = piece(m, n, i);
    pass(m0, mk);
  });
}

// Winograd's weight pass transforms all of x for every channel piece (measured on ResNet-12:
// 1.6× the forward's time, plus the reorder of x per piece); it is cut into example pieces
// instead, each writing its own dW, summed in piece order afterwards: fixed by the shape, so
// the bits still do not depend on the thread count.
bool weights_by_examples(const Geometry& g, int m) {
  return want_winograd(g, piece(m, example_pieces(g, m), 0).second);
}

// dW[j] = (dW[j] if accumulating, else 0) + parts[j] + parts[stride + j] + … over the n
// pieces in order, for j < count: piece by piece over a run of j (vectorised, compiled per
// instruction set, core/cpu_kernels.h), each j's additions in the same order.
MT_DISPATCH_CLONES void add_pieces(int64_t count, int n, int64_t stride, const float* parts,
                                   bool accumulate, float* dW) {
  for (int64_t j = 0; j < count; ++j) dW[j] = (accumulate ? dW[j] : 0.0f) + parts[j];
  for (int i = 1; i < n; ++i)
    for (int64_t j = 0; j < count; ++j) dW[j] += parts[i * stride + j];
}

void backward_weights_by_examples(const Geometry& g, int m, const float* x, const float* dy,
                                  float* dW, bool accumulate) {
  const int n = example_pieces(g, m);
  const int64_t in = in_values(g), out = out_values(g);
  const int64_t size = static_cast<int64_t>(g.out_c) * g.in_c * g.kernel * g.kernel;
  std::vector<float>& partial = state().partials;
  ensure_size(partial, static_cast<size_t>(n * size));
  float* parts = partial.data();
  for_task_pieces(n, [&](int64_t i) {
    const auto [m0, mk] = piece(m, n, i);
    run({g, mk, Pass::kBackwardWeights, false, g.out_c}, x + m0 * in, dy + m0 * out,
        parts + i * size);
  });
  for_task_runs(size, 4096, [&](int64_t b, int64_t e) {
    add_pieces(e - b, n, size, parts + b, accumulate, dW + b);
  });
}
}  // namespace

void forward(const Geometry& g, int m, const float* W, const float* x, float* y, bool accumulate) {
  count_flops(g, m);
  const int64_t in = in_values(g), out = out_values(g);
  over_examples(g, m, [&](int m0, int mk) {
    run({g, mk, Pass::kForward, accumulate, g.out_c}, x + m0 * in, W, y + m0 * out);
  });
}

void backward_data(const Geometry& g, int m, const float* W, const float* dy, float* dx,
                   bool accumulate) {
  count_flops(g, m);
  const int64_t in = in_values(g), out = out_values(g);
  over_examples(g, m, [&](int m0, int mk) {
    run({g, mk, Pass::kBackwardData, accumulate, g.out_c}, dy + m0 * out, W, dx + m0 * in);
  });
}

void backward_weights(const Geometry& g, int m, const float* x, const float* dy, float* dW,
                      bool accumulate) {
  count_flops(g, m);
  if (weights_by_examples(g, m)) return backward_weights_by_examples(g, m, x, dy, dW, accumulate);
  // Runs of kPieceChannels, the last one taking the remainder (so every piece stays blocked).
  const int n = channel_pieces(g);
  const int64_t plane = static_cast<int64_t>(g.out_h) * g.out_w;
  const int64_t filter = static_cast<int64_t>(g.in_c) * g.kernel * g.kernel;
  for_task_pieces(n, [&](int64_t i) {
    const int o0 = static_cast<int>(i) * kPieceChannels;
    Geometry slice = g;
    slice.out_c = i == n - 1 ? g.out_c - o0 : kPieceChannels;
    run({slice, m, Pass::kBackwardWeights, accumulate, g.out_c}, x, dy + o0 * plane,
        dW + o0 * filter);
  });
}

void add_scratch(const Geometry& g, int m, Scratch& need) {
  if (!use_blocked(g) || m < 1) return;
  auto raise = [&](int slot, int64_t floats) {
    need.slot[slot] = std::max(need.slot[slot], floats);
  };
  auto blocked = [](int c, int h, int w) { return int64_t{(c + 15) / 16 * 16} * h * w; };
  const int64_t in = blocked(g.in_c, g.in_h, g.in_w), out = blocked(g.out_c, g.out_h, g.out_w);
  const int64_t weights = int64_t{g.out_c} * g.in_c * g.kernel * g.kernel;
  const int pieces = example_pieces(g, m);
  const int64_t per = piece(m, pieces, 0).second;
  raise(0, per * std::max(in, out));  // forward / backward-data: a piece's input,
  raise(1, weights);                  // the weights,
  raise(2, per * std::max(in, out));  // a piece's output
  if (weights_by_examples(g, m)) {
    raise(0, per * in);
    raise(1, per * out);
    raise(2, weights);
    raise(3, pieces * weights);
  } else {
    const int widest = g.out_c - (channel_pieces(g) - 1) * kPieceChannels;
    raise(0, m * in);
    raise(1, m * blocked(widest, g.out_h, g.out_w));
    raise(2, weights);
  }
}

bool winograd_available() { return dnnl::get_effective_cpu_isa() >= dnnl::cpu_isa::avx512_core; }

int64_t primitives_created() { return state().created; }

size_t scratch_bytes() {
  size_t n = 0;
  for (const auto& v : state().scratch) n += v.capacity() * sizeof(float);
  return n + state().partials.capacity() * sizeof(float);
}

std::string implementations() {
  std::string s;
  for (const std::string& i : state().impls) s += (s.empty() ? "" : ", ") + i;
  return s;
}

}  // namespace mt::dnnl_conv
