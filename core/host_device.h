// MT_HD marks arithmetic shared by CUDA kernels and their host twins: `__host__ __device__`
// under nvcc, nothing for the host compiler. A kernel's per-element body is one MT_HD function;
// the device launcher and the host loop that CI tests both call it (DESIGN §5.1).
#pragma once

#if defined(__CUDACC__)
#define MT_HD __host__ __device__
#else
#define MT_HD
#endif

#include <math.h>

namespace mt {

// a·b + c rounded once, the same bits in host code (glibc's correctly rounded fma) and device
// code: an explicit fused multiply-add leaves no contraction choice to either compiler.
MT_HD inline float fused_multiply_add(float a, float b, float c) { return fmaf(a, b, c); }
MT_HD inline double fused_multiply_add(double a, double b, double c) { return fma(a, b, c); }

}  // namespace mt
