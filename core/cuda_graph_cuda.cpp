// GraphRunner of the CUDA build (core/cuda_graph.h): stream capture, instantiation and replay
// of one cudaGraphExec_t per key, every status checked and capture failures named by pass.
#include <cuda_runtime.h>

#include <cstdio>
#include <exception>
#include <unordered_map>
#include <unordered_set>

#include "core/cuda_check.h"
#include "core/cuda_graph.h"

namespace mt {

struct GraphRunner::Impl {
  std::unordered_map<const void*, cudaGraphExec_t> execs;
  std::unordered_set<const void*> eager;  // keys whose capture failed: run eagerly
};

namespace {

std::string describe_pass(const void* key, const std::string& pass) {
  return detail::concat("pass '", pass.empty() ? "(unnamed)" : pass, "' (key ", key, ")");
}

// Captures enqueue() on stream and instantiates it. On any failure the capture is ended (the
// stream must not stay in capture mode) and the error is rethrown naming the pass.
cudaGraphExec_t capture(cudaStream_t stream, const void* key, const std::function<void()>& enqueue,
                        const std::string& pass) {
  cudaGraph_t graph = nullptr;
  try {
    MT_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    try {
      enqueue();
    } catch (...) {
      cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
      if (cudaStreamIsCapturing(stream, &status) == cudaSuccess &&
          status != cudaStreamCaptureStatusNone) {
        cudaGraph_t partial = nullptr;
        if (cudaStreamEndCapture(stream, &partial) == cudaSuccess && partial)
          cudaGraphDestroy(partial);
      }
      cudaGetLastError();  // the capture errors above are not sticky; do not let them linger
      throw;
    }
    MT_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t instantiated = cudaGraphInstantiate(&exec, graph, 0);
    const cudaError_t destroyed = cudaGraphDestroy(graph);
    graph = nullptr;
    MT_CUDA_CHECK(instantiated);
    MT_CUDA_CHECK(destroyed);
    return exec;
  } catch (const std::exception& e) {
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();
    throw Error(
        ExitCode::kRuntime,
        detail::concat("CUDA graph capture of ", describe_pass(key, pass), " failed: ", e.what()));
  }
}

}  // namespace

GraphRunner::GraphRunner(CUstream_st* stream, bool enabled)
    : stream_(stream), enabled_(enabled), impl_(std::make_unique<Impl>()) {
  MT_CHECK(!enabled || stream,
           "CUDA graph capture needs a stream of its own, not the legacy "
           "default stream (null)");
}

GraphRunner::~GraphRunner() {
  for (const auto& entry : impl_->execs) {
    const cudaError_t e = cudaGraphExecDestroy(entry.second);
    if (e != cudaSuccess)
      std::fprintf(stderr, "mt::GraphRunner: cudaGraphExecDestroy failed: %s (%s)\n",
                   cudaGetErrorName(e), cudaGetErrorString(e));
  }
}

void GraphRunner::run(const void* key, const std::function<void()>& enqueue,
                      const std::string& pass) {
  if (!enabled_) {
    enqueue();
    return;
  }
  if (impl_->eager.count(key)) {
    enqueue();
    return;
  }
  auto it = impl_->execs.find(key);
  if (it == impl_->execs.end()) {
    cudaGraphExec_t exec = nullptr;
    try {
      exec = capture(stream_, key, enqueue, pass);
    } catch (const Error& e) {
      // Degrade loudly, once: this pass runs eagerly from now on (the captured work never ran).
      std::fprintf(stderr, "warning: %s; this pass runs without CUDA Graphs from now on\n",
                   e.what());
      impl_->eager.insert(key);
      enqueue();
      return;
    }
    it = impl_->execs.emplace(key, exec).first;
  }
  const cudaError_t e = cudaGraphLaunch(it->second, stream_);
  if (e != cudaSuccess)
    throw Error(ExitCode::kRuntime,
                detail::concat("CUDA graph launch of ", describe_pass(key, pass),
                               " failed: ", detail::cuda_message(e)));
}

int GraphRunner::graphs() const { return static_cast<int>(impl_->execs.size()); }
int GraphRunner::eager_passes() const { return static_cast<int>(impl_->eager.size()); }

}  // namespace mt
