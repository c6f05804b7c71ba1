// Memory that knows where it lives (DESIGN §5.1): a Buffer<T> owns `size` elements in host or
// device memory and frees them with the deleter of the backend that allocated it. Algorithm
// code holds Buffers and passes their pointers to VecOps (core/vec_ops.h) and to the batched
// model; it never dereferences them itself, so the same code runs on either backend.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

namespace mt {

enum class Memory { kHost, kDevice };

template <typename T>
class Buffer {
 public:
  using Deleter = std::function<void(T*)>;
  Buffer() = default;
  Buffer(T* data, int64_t size, Memory where, Deleter deleter)
      : data_(data, std::move(deleter)), size_(size), where_(where) {}

  T* data() { return data_.get(); }
  const T* data() const { return data_.get(); }
  int64_t size() const { return size_; }
  Memory where() const { return where_; }

 private:
  std::unique_ptr<T, Deleter> data_{nullptr, [](T*) {}};
  int64_t size_ = 0;
  Memory where_ = Memory::kHost;
};

}  // namespace mt
