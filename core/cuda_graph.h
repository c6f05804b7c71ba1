// CUDA Graphs helper (DESIGN §5.1, CUDA_NOTES "CUDA Graphs"): GraphRunner captures the work a
// callback enqueues on a stream once per key and replays the instantiated graph afterwards,
// or, disabled, runs the callback eagerly. No CUDA header is included here.
#pragma once

#include <functional>
#include <memory>
#include <string>

struct CUstream_st;  // cudaStream_t is CUstream_st*

namespace mt {

// Enabled, run(key, enqueue) captures enqueue() on `stream` the first time it sees `key`
// (cudaStreamCaptureModeThreadLocal), instantiates the graph and launches it; later calls with
// that key only launch the graph, without calling enqueue. The caller guarantees that the
// captured work stays valid: same addresses, parameters updated in place (values passed by
// value, e.g. an axpy's scalar, are frozen at capture). enqueue must only enqueue on `stream`:
// no synchronisation, no allocation, no host-memory results. Disabled, run calls enqueue() on
// every call. A failed capture (cuDNN's legacy calls promise nothing about capture) leaves the
// stream out of capture mode, prints one warning naming the pass and the CUDA error, runs
// enqueue() eagerly, and that key runs eagerly from then on. A failing eager run or graph
// launch throws mt::Error naming the pass.
// One runner per thread; the stream must outlive it. The CPU-only build supports only a
// disabled runner (an enabled one throws UsageError at construction).
class GraphRunner {
 public:
  GraphRunner(CUstream_st* stream, bool enabled);
  ~GraphRunner();  // destroys the graphs; failures are logged, never thrown
  GraphRunner(const GraphRunner&) = delete;
  GraphRunner& operator=(const GraphRunner&) = delete;

  // `pass` names the captured work in error messages (e.g. "inner step 3 support forward").
  void run(const void* key, const std::function<void()>& enqueue, const std::string& pass = "");

  bool enabled() const { return enabled_; }
  int graphs() const;        // number of keys captured so far
  int eager_passes() const;  // number of keys whose capture failed (run eagerly)

 private:
  struct Impl;  // the instantiated graphs by key
  CUstream_st* stream_;
  bool enabled_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mt
