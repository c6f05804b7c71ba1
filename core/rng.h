// Counter-based random numbers (Philox4x32-10). A stream is keyed by (seed, step, task, purpose),
// so every draw is a pure function of those keys: episodes and UFOM coin flips never depend on
// the number of ranks, threads or the order in which tasks are processed.
#pragma once

#include <cmath>
#include <cstdint>

namespace mt {

// What a stream is used for; part of the key, so streams for different purposes never overlap.
enum class Stream : uint32_t {
  kEpisode = 1,  // classes, examples and label order of an episode
  kUfom = 2,     // the Bernoulli(q) draw deciding whether a task takes the exact path
  kInit = 3,     // parameter initialisation
  kGlyph = 4,    // synthetic glyph class shapes and renderings
  kSplit = 5,    // dataset splits chosen by packers (e.g. Omniglot alphabets)
  kTest = 99,    // tests only
};

class Rng {
 public:
  Rng(uint64_t seed, uint64_t step, uint64_t task, Stream purpose)
      : key0_(static_cast<uint32_t>(seed)),
        key1_(static_cast<uint32_t>(seed >> 32)),
        c1_(static_cast<uint32_t>(step)),
        c2_(static_cast<uint32_t>(task) ^ (static_cast<uint32_t>(step >> 32) << 16)),
        c3_(static_cast<uint32_t>(purpose) ^ (static_cast<uint32_t>(task >> 32) << 8)) {}

  uint32_t next_u32() {
    if (avail_ == 0) refill();
    return buf_[4 - avail_--];
  }
  uint64_t next_u64() { return (static_cast<uint64_t>(next_u32()) << 32) | next_u32(); }
  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  // Uniform integer in [0, n), unbiased (rejection sampling).
  uint64_t below(uint64_t n) {
    const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t r;
    do r = next_u64();
    while (r >= limit);
    return r % n;
  }
  bool bernoulli(double p) { return uniform() < p; }
  // Standard normal (Box-Muller; one value per call for simplicity).
  double normal() {
    const double u1 = 1.0 - uniform();  // (0, 1]
    const double u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

  // The Philox4x32-10 block function (Salmon et al., SC 2011): 4 counter words, 2 key words.
  static void philox(uint32_t c[4], uint32_t k0, uint32_t k1) {
    for (int round = 0; round < 10; ++round) {
      const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c[0];
      const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c[2];
      const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c[1] ^ k0;
      const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c[3] ^ k1;
      c[1] = static_cast<uint32_t>(p1);
      c[3] = static_cast<uint32_t>(p0);
      c[0] = n0;
      c[2] = n2;
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
  }

 private:
  void refill() {
    buf_[0] = counter_lo_++;
    buf_[1] = c1_;
    buf_[2] = c2_;
    buf_[3] = c3_;
    philox(buf_, key0_, key1_);
    avail_ = 4;
  }

  uint32_t key0_, key1_, c1_, c2_, c3_;
  uint32_t counter_lo_ = 0;
  uint32_t buf_[4] = {0, 0, 0, 0};
  int avail_ = 0;
};

}  // namespace mt
