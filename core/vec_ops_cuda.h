// The CUDA implementation of VecOps (core/vec_ops.h): kernels built from the MT_HD bodies of
// core/vec_ops_kernels.h, all enqueued on one stream. No CUDA header is included here, so CPU
// code may include this file; make_cuda_vec_ops links only in the CUDA build.
#pragma once

#include <memory>

#include "core/vec_ops.h"

struct CUstream_st;  // cudaStream_t is CUstream_st*

namespace mt {

class DevicePool;

// Every op runs asynchronously on `stream` (null: the legacy default stream) on the device
// current at the call, except download and task_sq_norms / task_sq_dists, which wait for the
// stream because their results are host memory. upload from pageable host memory returns once
// the data is staged (from pinned memory: keep it unchanged until the stream is done). The
// element-wise ops, copy, fill, broadcast, sum_tasks, gather and scatter pass all their arguments
// by value (no host→device copy), so they can be captured in a CUDA Graph (core/cuda_graph.h);
// download and the norms cannot. alloc() takes a slice of `pool` (freed all together by
// pool->reset(), which the Buffer must not outlive) or, with pool null, a cudaMalloc of its own
// that the Buffer frees. scatter refuses repeated task indices (the writes would race). An ops
// object keeps device scratch for the norms: one thread at a time.
std::unique_ptr<VecOps<float>> make_cuda_vec_ops(CUstream_st* stream, DevicePool* pool);
std::unique_ptr<VecOps<double>> make_cuda_vec_ops_double(CUstream_st* stream, DevicePool* pool);

}  // namespace mt
