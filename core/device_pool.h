// Device memory pool (DESIGN §5.1): one cudaMalloc of a size fixed at start-up, handed out as
// 256-byte-aligned slices by bump allocation, so that the steady-state loop allocates nothing.
// PoolArithmetic is the bookkeeping alone (no CUDA), testable on any machine.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "core/check.h"

namespace mt {

// Offsets of slices in [0, capacity): each slice starts at the next multiple of kAlignment.
class PoolArithmetic {
 public:
  static constexpr size_t kAlignment = 256;
  explicit PoolArithmetic(size_t capacity) : capacity_(capacity) {}

  // The offset of a new slice of `bytes` bytes, or nothing (and no change) when it does not
  // fit. A request of 0 bytes gets an aligned offset too.
  std::optional<size_t> take(size_t bytes) {
    const size_t pad = (kAlignment - used_ % kAlignment) % kAlignment;  // used_ ≤ capacity_
    if (pad > capacity_ - used_ || bytes > capacity_ - used_ - pad) return std::nullopt;
    const size_t start = used_ + pad;
    used_ = start + bytes;
    if (used_ > peak_) peak_ = used_;
    return start;
  }
  void reset() { used_ = 0; }  // frees every slice; peak() is kept

  size_t used() const { return used_; }  // end of the last slice
  size_t capacity() const { return capacity_; }
  size_t peak() const { return peak_; }  // largest used() since construction

 private:
  size_t capacity_;
  size_t used_ = 0;
  size_t peak_ = 0;
};

// The message of a pool that cannot serve a request (`what` says which: the start-up
// allocation or a slice), with the device's free/total bytes and what to change.
inline std::string pool_exhausted_message(const std::string& what, size_t asked, size_t used,
                                          size_t capacity, size_t device_free,
                                          size_t device_total) {
  return detail::concat("device memory pool: ", what, " of ", asked,
                        " bytes does not fit (pool: ", used, " of ", capacity,
                        " bytes used; device: ", device_free, " bytes free of ", device_total,
                        "): lower meta_batch per rank (or inner.trajectory=recompute)");
}

// Throws mt::Error (ExitCode::kRuntime) for a failed device allocation of `asked` bytes: what
// it was for, the device's free/total bytes and what to change. CUDA build only.
[[noreturn]] void throw_device_out_of_memory(const std::string& what, size_t asked);

// The pool proper. Construct it with the GPU that will use it current. allocate() throws
// mt::Error (ExitCode::kRuntime, message from pool_exhausted_message) when a slice does not
// fit, as does the constructor when the one cudaMalloc fails for lack of memory. Slices stay
// valid until reset() or destruction; nothing is freed one by one. The CPU-only build's
// constructor throws UsageError (device=cuda needs the CUDA build). Not thread-safe.
class DevicePool {
 public:
  explicit DevicePool(size_t capacity_bytes);
  ~DevicePool();  // cudaFree; a failure is logged, never thrown
  DevicePool(const DevicePool&) = delete;
  DevicePool& operator=(const DevicePool&) = delete;

  void* allocate(size_t bytes);
  template <typename T>
  T* allocate_array(int64_t count) {
    MT_CHECK(count >= 0, "pool slice of ", count, " elements");
    return static_cast<T*>(allocate(static_cast<size_t>(count) * sizeof(T)));
  }
  void reset() { arithmetic_.reset(); }

  size_t used() const { return arithmetic_.used(); }
  size_t capacity() const { return arithmetic_.capacity(); }
  size_t peak() const { return arithmetic_.peak(); }

 private:
  char* base_ = nullptr;
  PoolArithmetic arithmetic_;
};

}  // namespace mt
