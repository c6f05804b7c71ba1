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
// (core/parallel_for.h), depends on the shape only, so results do not depend on the thread
// count. What the pieces hold, per thread, in floats: the reorder buffers of the blocked
// layouts (slots 0–2: a pass's inputs and output) and the weight pass's per-piece results
// (slot 3). add_scratch raises `need` to what passes of geometry g over m examples take.
struct Scratch {
  int64_t slot[4] = {0, 0, 0, 0};
  int64_t floats() const { return slot[0] + slot[1] + slot[2] + slot[3]; }
};
void add_scratch(const Geometry& g, int m, Scratch& need);

// Whether oneDNN has its Winograd kernels on this CPU (AVX-512); where it has, 3×3 stride-1
// passes with enough output tiles per piece take them (conv2d_dnnl.cpp says when).
bool winograd_available();

// Per-thread scratch held (bytes, all four slots), the high-water mark over calls.
size_t scratch_bytes();

// Primitives this thread has built so far (a cache hit builds none).
int64_t primitives_created();
// The implementations oneDNN picked for this thread's primitives, one "pass=impl" per distinct
// pair (e.g. "fwd=jit:avx512_core, bwd_w=gemm:jit"), for logs and tests.
std::string implementations();

}  // namespace mt::dnnl_conv
