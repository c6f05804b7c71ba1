// The float32 passes of Conv2d (models/conv2d.h) on oneDNN: k×k convolution (k = 3, padding 1; or
// k = 1, padding 0), on the caller's NCHW activations and OIHW weights (reordered to blocked
// layouts inside a call where that pays). Primitives are built once per (geometry, batch size,
// pass) and kept per thread; each runs on one thread.
#pragma once

#include <cstdint>
#include <string>

namespace mt::dnnl_conv {

struct Geometry {
  int in_c, in_h, in_w, out_c, out_h, out_w, stride;
  int kernel = 3;  // k of the k×k kernel; padding k / 2
};

// y = conv(x, W) over m examples; overwrites y, or adds to it when accumulate is true.
void forward(const Geometry& g, int m, const float* W, const float* x, float* y, bool accumulate);
// dx = convᵀ(dy, W). Overwrites dx, or adds to it.
void backward_data(const Geometry& g, int m, const float* W, const float* dy, float* dx,
                   bool accumulate);
// dW = Σ over the batch of dy ⋆ x. Overwrites dW, or adds to it.
void backward_weights(const Geometry& g, int m, const float* x, const float* dy, float* dW,
                      bool accumulate);
// How a pass is cut into single-threaded pieces, which a lone task may run on several threads
// (core/parallel_for.h); the cut depends on the shape only, so results do not depend on the
// thread count. The most examples in one piece of forward and backward-data over m examples:
int piece_examples(int m);
// The widest channel piece of backward-weights over out_c output channels (all of them unless
// the layer takes the blocked layouts).
int widest_channel_piece(const Geometry& g);

// Per-thread scratch held for blocked layouts (bytes), the high-water mark over calls.
size_t scratch_bytes();

// Primitives this thread has built so far (a cache hit builds none).
int64_t primitives_created();
// The implementations oneDNN picked for this thread's primitives, one "pass=impl" per distinct
// pair (e.g. "fwd=jit:avx512_core, bwd_w=gemm:jit"), for logs and tests.
std::string implementations();

}  // namespace mt::dnnl_conv
