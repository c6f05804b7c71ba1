// Exact, order-independent sums of task gradients (dist.reduce = exact, DESIGN §6). Each element
// g of a task's gradient becomes the integer round(g·2^64) (ties to even) and is added into a
// signed 128-bit accumulator per element. Integer addition is associative, so the sum has the
// same bits for any order of tasks, threads, chunks and ranks. For the collective each
// accumulator is split into two int64 limbs (split_limbs) that an int64 sum-allreduce adds
// without overflow; the limb sums are joined (join_limbs) and rounded once (fixed_to_real).
//
// Accuracy: with S the exact real sum of B task values, each conversion errs by at most 2^-65
// (none for float32 |g| ≥ 2^-41, float64 |g| ≥ 2^-12), the integer sum is exact and the final
// conversion rounds once to nearest:  |result − S| ≤ ½ ulp(result) + B·2^-65.
// Range: |g| < 2^kRangeBits = 2^31, at most kMaxTasks = 2^20 − 1 tasks per step and kMaxRanks =
// 2^11 − 1 ranks. Then a task's value is below 2^95, a rank's accumulator of B_k tasks below
// B_k·2^95 < 2^115 (fits __int128), its high limb floor(v / 2^52) at most B_k·2^43 + 1 in
// magnitude, so Σ over ranks |hi_k| ≤ B·2^43 + N < 2^63; the low limbs lie in [0, 2^52) and their
// sum over N ranks below 2^63. No partial sum of the allreduce can overflow int64.
// Values outside the range, NaN and ±Inf are refused (to_fixed returns false), never wrapped.
//
// The arithmetic is MT_HD: the CUDA kernel (exact_sum_cuda.cu) runs exact_sum_tasks_element, the
// host loop (exact_sum_cpu.cpp) the same to_fixed and integer adds in a cache-friendlier order
// (integer sums do not depend on it); exact_sum_cuda_test compares the two bit for bit.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>

#include "core/buffer.h"
#include "core/host_device.h"
#include "core/vec_ops.h"
#include "core/vec_ops_kernels.h"

namespace mt {

__extension__ typedef __int128 Fixed;            // value·2^64, the accumulator of one element
__extension__ typedef unsigned __int128 UFixed;  // its magnitude

constexpr int kFixedFracBits = 64;   // resolution 2^-64
constexpr int kFixedRangeBits = 31;  // |g| < 2^31
constexpr int kFixedLoBits = 52;     // the low limb: bits 0..51, non-negative
constexpr int64_t kExactMaxTasks = (int64_t{1} << 20) - 1;
constexpr int kExactMaxRanks = (1 << 11) - 1;
// 2^31 as a double, for messages.
constexpr double kFixedRange = 2147483648.0;

template <typename T>
struct RealBits;
template <>
struct RealBits<float> {
  static constexpr int kMant = 23, kBias = 127, kExpBits = 8;
};
template <>
struct RealBits<double> {
  static constexpr int kMant = 52, kBias = 1023, kExpBits = 11;
};

MT_HD inline uint64_t bits_of(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
#endif
}
MT_HD inline uint64_t bits_of(double x) {
#if defined(__CUDA_ARCH__)
  return static_cast<uint64_t>(__double_as_longlong(x));
#else
  uint64_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
#endif
}

// 2^e as T for e in T's normal range.
MT_HD inline float pow2(int e, float) {
  const uint32_t u = static_cast<uint32_t>(e + RealBits<float>::kBias) << RealBits<float>::kMant;
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float r;
  std::memcpy(&r, &u, sizeof r);
  return r;
#endif
}
MT_HD inline double pow2(int e, double) {
  const uint64_t u = static_cast<uint64_t>(e + RealBits<double>::kBias) << RealBits<double>::kMant;
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(static_cast<long long>(u));
#else
  double r;
  std::memcpy(&r, &u, sizeof r);
  return r;
#endif
}

// Index of the leading one bit of a > 0.
MT_HD inline int highest_bit(UFixed a) {
  const uint64_t hi = static_cast<uint64_t>(a >> 64), lo = static_cast<uint64_t>(a);
#if defined(__CUDA_ARCH__)
  return hi ? 127 - __clzll(static_cast<long long>(hi)) : 63 - __clzll(static_cast<long long>(lo));
#else
  return hi ? 127 - __builtin_clzll(hi) : 63 - __builtin_clzll(lo);
#endif
}

// *out = round(g·2^64), ties to even. False, *out untouched, when g is NaN, ±Inf or |g| ≥ 2^31.
template <typename T>
MT_HD inline bool to_fixed(T g, Fixed* out) {
  using B = RealBits<T>;
  const uint64_t u = bits_of(g);
  const bool negative = (u >> (B::kMant + B::kExpBits)) & 1;
  const int exp_field = static_cast<int>((u >> B::kMant) & ((uint64_t{1} << B::kExpBits) - 1));
  if (exp_field - B::kBias >= kFixedRangeBits) return false;  // also NaN and ±Inf
  uint64_t m = u & ((uint64_t{1} << B::kMant) - 1);
  int e;  // |g| = m·2^e
  if (exp_field == 0) {
    e = 1 - B::kBias - B::kMant;  // zero or subnormal
  } else {
    m |= uint64_t{1} << B::kMant;
    e = exp_field - B::kBias - B::kMant;
  }
  const int shift = e + kFixedFracBits;
  UFixed mag;
  if (shift >= 0) {
    mag = static_cast<UFixed>(m) << shift;  // < 2^95
  } else if (-shift >= B::kMant + 2) {
    mag = 0;  // m < 2^(kMant+1) ≤ half of the dropped range
  } else {
    const int s = -shift;
    uint64_t q = m >> s;
    const uint64_t r = m & ((uint64_t{1} << s) - 1), half = uint64_t{1} << (s - 1);
    if (r > half || (r == half && (q & 1))) ++q;
    mag = q;
  }
  *out = negative ? -static_cast<Fixed>(mag) : static_cast<Fixed>(mag);
  return true;
}

// v = hi·2^52 + lo with 0 ≤ lo < 2^52 (|v| < 2^115 keeps hi in int64).
MT_HD inline void split_limbs(Fixed v, int64_t* lo, int64_t* hi) {
  *lo = static_cast<int64_t>(static_cast<uint64_t>(v) & ((uint64_t{1} << kFixedLoBits) - 1));
  *hi = static_cast<int64_t>(v >> kFixedLoBits);  // arithmetic shift: floor(v / 2^52)
}
MT_HD inline Fixed join_limbs(int64_t lo, int64_t hi) {
  return static_cast<Fixed>(hi) * (static_cast<Fixed>(1) << kFixedLoBits) + lo;
}

// v·2^-64 rounded once to the nearest T, ties to even (|v| < 2^127).
template <typename T>
MT_HD inline T fixed_to_real(Fixed v) {
  constexpr int p = RealBits<T>::kMant + 1;  // significand bits
  const bool negative = v < 0;
  const UFixed a = negative ? UFixed(0) - static_cast<UFixed>(v) : static_cast<UFixed>(v);
  if (a == 0) return T(0);
  const int top = highest_bit(a);
  int exponent = -kFixedFracBits;
  uint64_t m;
  if (top < p) {
    m = static_cast<uint64_t>(a);
  } else {
    const int s = top - p + 1;  // bits dropped
    UFixed q = a >> s;
    const UFixed r = a & ((UFixed(1) << s) - 1), half = UFixed(1) << (s - 1);
    if (r > half || (r == half && (q & 1))) ++q;  // q may become 2^p: still exact in T
    m = static_cast<uint64_t>(q);
    exponent += s;
  }
  const T r = static_cast<T>(m) * pow2(exponent, T());  // m ≤ 2^p and 2^-64 ≤ |r| < 2^63: exact
  return negative ? -r : r;
}

// acc[j] += Σ_t round(x_t[j]·2^64) for t = 0 … T−1 (one thread per j). Returns −1, or the first
// task whose element is out of range (acc[j] is then left unchanged).
template <typename T>
MT_HD inline int exact_sum_tasks_element(const LayoutArgs& l, int64_t j, const T* x, Fixed* acc) {
  const int64_t first = l.index(0, j);
  const int64_t stride = l.index(l.tasks > 1 ? 1 : 0, j) - first;
  Fixed s = acc[j];
  for (int t = 0; t < l.tasks; ++t) {
    Fixed v;
    if (!to_fixed(x[first + t * stride], &v)) return t;
    s += v;
  }
  acc[j] = s;
  return -1;
}

// The first element a sum_tasks refused: θ index j of task `task` (of the batch), its value.
struct FixedFault {
  int64_t index = -1;  // −1: none
  int task = 0;
  double value = 0;
  explicit operator bool() const { return index >= 0; }
};

// The exact accumulation on one backend's memory (host, or the device of the VecOps it was made
// from, on that VecOps' stream). Accumulators are Buffers of Fixed in that memory.
template <typename T>
class ExactSumOps {
 public:
  virtual ~ExactSumOps() = default;
  virtual Buffer<Fixed> alloc(int64_t n) const = 0;
  virtual void upload(int64_t n, const Fixed* host, Fixed* acc) const = 0;
  virtual void download(int64_t n, const Fixed* acc, Fixed* host) const = 0;  // waits
  // Accumulates acc[j] += Σ_t round(x_t[j]·2^64), t in 0 … l.tasks()−1 (x in layout l, acc in
  // θ layout). Returns the refused element of smallest (j, task) if any (waits for the result);
  // acc is then unspecified.
  virtual FixedFault sum_tasks(const BatchedLayout& l, const T* x, Fixed* acc) const = 0;
};

// Host loops on `threads` OpenMP threads (the result does not depend on the count).
template <typename T>
std::unique_ptr<ExactSumOps<T>> make_host_exact_sum_ops(int threads);
// The CUDA kernels on `stream` (CUDA builds; elsewhere a UsageError).
template <typename T>
std::unique_ptr<ExactSumOps<T>> make_cuda_exact_sum_ops(CUstream_st* stream);
// The exact ops for the memory of `ops`: host, or the CUDA kernels on ops.stream().
template <typename T>
std::unique_ptr<ExactSumOps<T>> make_exact_sum_ops(const VecOps<T>& ops, int threads);

}  // namespace mt
