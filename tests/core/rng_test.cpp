// The counter-based RNG: Philox4x32-10 known-answer vectors (Random123's kat_vectors), and the
// key properties the framework relies on (pure function of the keys, streams independent).
#include "core/rng.h"

#include <gtest/gtest.h>

#include <set>

namespace mt {
namespace {

TEST(Rng, Philox4x32x10KnownAnswers) {
  struct Kat {
    uint32_t ctr[4], key[2], out[4];
  } kats[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
       {0xffffffff, 0xffffffff},
       {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
       {0xa4093822, 0x299f31d0},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  for (const Kat& k : kats) {
    uint32_t c[4] = {k.ctr[0], k.ctr[1], k.ctr[2], k.ctr[3]};
    Rng::philox(c, k.key[0], k.key[1]);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(c[i], k.out[i]) << "word " << i;
  }
}

TEST(Rng, StreamsArePureFunctionsOfTheirKeys) {
  Rng a(5, 7, 9, Stream::kEpisode), b(5, 7, 9, Stream::kEpisode);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(a.next_u32(), b.next_u32());
  std::set<uint64_t> firsts;
  for (uint64_t seed : {0ull, 1ull}) {
    for (uint64_t step : {0ull, 1ull, 1ull << 32}) {
      for (uint64_t task : {0ull, 1ull, 1ull << 32}) {
        for (Stream s : {Stream::kEpisode, Stream::kUfom})
          firsts.insert(Rng(seed, step, task, s).next_u64());
      }
    }
  }
  EXPECT_EQ(firsts.size(), 2u * 3 * 3 * 2) << "distinct keys must give distinct streams";
}

TEST(Rng, UniformAndBelowAreInRangeWithTheRightMean) {
  Rng r(1, 2, 3, Stream::kTest);
  double sum = 0;
  const int n = 100000;
  for (int i = 0; i < n; ++i) {
    const double u = r.uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
    ASSERT_LT(r.below(7), 7u);
  }
  // Mean of U(0,1) over 1e5 draws: sd 0.00091; 5 sd.
  EXPECT_NEAR(sum / n, 0.5, 0.0046);
}

}  // namespace
}  // namespace mt
