// GraphRunner of the CPU-only build: only the eager (disabled) runner exists, so code that
// runs its passes through a runner needs no #ifdef.
#include "core/check.h"
#include "core/cuda_graph.h"

namespace mt {

struct GraphRunner::Impl {};

GraphRunner::GraphRunner(CUstream_st* stream, bool enabled)
    : stream_(stream), enabled_(enabled), impl_(std::make_unique<Impl>()) {
  MT_REQUIRE(!enabled,
             "CUDA graphs requested, but this binary was built without CUDA: set "
             "device=cpu (graphs off), or rebuild with nvcc on the PATH (cmake "
             "-DMT_ENABLE_CUDA=ON)");
}

GraphRunner::~GraphRunner() = default;

void GraphRunner::run(const void*, const std::function<void()>& enqueue, const std::string&) {
  enqueue();
}

int GraphRunner::graphs() const { return 0; }
int GraphRunner::eager_passes() const { return 0; }

}  // namespace mt
