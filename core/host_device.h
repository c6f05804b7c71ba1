// MT_HD marks arithmetic shared by CUDA kernels and their host twins: `__host__ __device__`
// under nvcc, nothing for the host compiler. A kernel's per-element body is one MT_HD function;
// the device launcher and the host loop that CI tests both call it (DESIGN §5.1).
#pragma once

#if defined(__CUDACC__)
#define MT_HD __host__ __device__
#else
#define MT_HD
#endif
