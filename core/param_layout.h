// Flat parameter buffers (DESIGN §3.1): every model keeps all its parameters in one contiguous
// array described by this table of named, shaped slices. Inner-loop states, gradients, adjoint
// vectors and optimizer moments are arrays of the same layout.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/check.h"

namespace mt {

struct TensorSpec {
  std::string name;            // e.g. "block1.conv.weight"
  std::vector<int64_t> shape;  // conv weights OIHW, linear weights [out, in]
  int64_t offset = 0;          // first element in the flat buffer
  int64_t size() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

class ParamLayout {
 public:
  // Appends a tensor and returns its offset.
  int64_t add(const std::string& name, std::vector<int64_t> shape) {
    for (const auto& t : tensors_) MT_CHECK(t.name != name, "duplicate parameter name ", name);
    TensorSpec spec{name, std::move(shape), total_};
    total_ += spec.size();
    tensors_.push_back(std::move(spec));
    return tensors_.back().offset;
  }
  int64_t total() const { return total_; }
  const std::vector<TensorSpec>& tensors() const { return tensors_; }
  const TensorSpec* find(const std::string& name) const {
    for (const auto& t : tensors_)
      if (t.name == name) return &t;
    return nullptr;
  }
  // The tensor holding flat index i (null when out of range).
  const TensorSpec* at(int64_t i) const {
    for (const auto& t : tensors_)
      if (i >= t.offset && i < t.offset + t.size()) return &t;
    return nullptr;
  }
  bool operator==(const ParamLayout& o) const {
    if (tensors_.size() != o.tensors_.size()) return false;
    for (size_t i = 0; i < tensors_.size(); ++i)
      if (tensors_[i].name != o.tensors_[i].name || tensors_[i].shape != o.tensors_[i].shape)
        return false;
    return true;
  }

 private:
  std::vector<TensorSpec> tensors_;
  int64_t total_ = 0;
};

}  // namespace mt
