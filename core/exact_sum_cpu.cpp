// The host implementation of core/exact_sum.h: to_fixed and integer adds over blocks of
// contiguous elements on OpenMP threads, and the choice of implementation by a VecOps' memory.
#include <algorithm>
#include <cstring>

#include "core/check.h"
#include "core/exact_sum.h"
#include "core/parallel_for.h"

namespace mt {

namespace {

template <typename T>
class HostExactSumOps final : public ExactSumOps<T> {
 public:
  explicit HostExactSumOps(int threads) : threads_(std::max(threads, 1)) {}

  Buffer<Fixed> alloc(int64_t n) const override {
    MT_CHECK(n >= 0, "buffer of ", n, " elements");
    return Buffer<Fixed>(new Fixed[static_cast<size_t>(n)], n, Memory::kHost,
                         [](Fixed* p) { delete[] p; });
  }
  void upload(int64_t n, const Fixed* host, Fixed* acc) const override {
    if (n > 0 && host != acc) std::memcpy(acc, host, static_cast<size_t>(n) * sizeof(Fixed));
  }
  void download(int64_t n, const Fixed* acc, Fixed* host) const override { upload(n, acc, host); }

  // Tensor by tensor, task by task over contiguous elements (the kernel's body, to_fixed and an
  // integer add, in a cache-friendly order: integer sums do not depend on it), in blocks of
  // elements on the threads. A refused element is skipped and the smallest (element, task)
  // refused is reported (the accumulators are then meaningless: the caller raises an error).
  FixedFault sum_tasks(const BatchedLayout& l, const T* x, Fixed* acc) const override {
    constexpr int64_t kBlock = 8192;
    struct Range {
      int tensor;
      int64_t begin, end;  // elements of the tensor
    };
    std::vector<Range> ranges;
    for (int k = 0; k < l.tensors(); ++k) {
      const int64_t size = l.ends()[k + 1] - l.ends()[k];
      for (int64_t b = 0; b < size; b += kBlock)
        ranges.push_back({k, b, std::min(size, b + kBlock)});
    }
    std::vector<FixedFault> faults(ranges.size());
    const int64_t n = static_cast<int64_t>(ranges.size());
    parallel_for(static_cast<int>(std::min<int64_t>(threads_, std::max<int64_t>(n, 1))), n,
                 [&](int64_t r) {
                   const Range& range = ranges[r];
                   const int64_t offset = l.ends()[range.tensor];
                   Fixed* out = acc + offset;
                   for (int t = 0; t < l.tasks(); ++t) {
                     const T* in = x + l.tensor_start(range.tensor, t);
                     for (int64_t e = range.begin; e < range.end; ++e) {
                       Fixed v;
                       if (to_fixed(in[e], &v)) {
                         out[e] += v;
                       } else if (!faults[r] || offset + e < faults[r].index) {
                         faults[r] = {offset + e, t, static_cast<double>(in[e])};
                       }
                     }
                   }
                 });
    FixedFault first;
    for (const FixedFault& f : faults)
      if (f && (!first || f.index < first.index)) first = f;
    return first;
  }

 private:
  int threads_;
};

}  // namespace

template <typename T>
std::unique_ptr<ExactSumOps<T>> make_host_exact_sum_ops(int threads) {
  return std::make_unique<HostExactSumOps<T>>(threads);
}

template <typename T>
std::unique_ptr<ExactSumOps<T>> make_exact_sum_ops(const VecOps<T>& ops, int threads) {
  if (ops.memory() == Memory::kHost) return make_host_exact_sum_ops<T>(threads);
  return make_cuda_exact_sum_ops<T>(ops.stream());
}

template std::unique_ptr<ExactSumOps<float>> make_host_exact_sum_ops<float>(int);
template std::unique_ptr<ExactSumOps<double>> make_host_exact_sum_ops<double>(int);
template std::unique_ptr<ExactSumOps<float>> make_exact_sum_ops<float>(const VecOps<float>&, int);
template std::unique_ptr<ExactSumOps<double>> make_exact_sum_ops<double>(const VecOps<double>&,
                                                                         int);

}  // namespace mt
