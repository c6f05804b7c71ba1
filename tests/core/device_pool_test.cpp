// Host checks of the GPU runtime helpers: the device pool's bump arithmetic and out-of-memory
// message, the CPU-only build's refusals, and the eager (disabled) GraphRunner. No GPU needed;
// the real pool and graph capture are checked in vec_ops_cuda_test.
#include "core/device_pool.h"

#include <gtest/gtest.h>

#include <string>

#include "core/cuda_graph.h"
#include "core/device.h"

namespace mt {
namespace {

constexpr size_t kAlign = PoolArithmetic::kAlignment;

TEST(PoolArithmetic, SlicesStartAlignedAndFollowOneAnother) {
  EXPECT_EQ(kAlign, 256u);
  PoolArithmetic pool(4096);
  EXPECT_EQ(pool.take(10), std::optional<size_t>(0));
  EXPECT_EQ(pool.used(), 10u);
  EXPECT_EQ(pool.take(1), std::optional<size_t>(256));
  EXPECT_EQ(pool.take(256), std::optional<size_t>(512));
  EXPECT_EQ(pool.take(300), std::optional<size_t>(768));
  EXPECT_EQ(pool.used(), 1068u);
  EXPECT_EQ(pool.take(0), std::optional<size_t>(1280));  // aligned like any other
  EXPECT_EQ(pool.used(), 1280u);
  for (size_t bytes : {1u, 7u, 255u, 257u, 1000u}) {
    const std::optional<size_t> offset = pool.take(bytes);
    ASSERT_TRUE(offset);
    EXPECT_EQ(*offset % kAlign, 0u) << bytes;
    EXPECT_GE(*offset, pool.used() - bytes);
  }
}

TEST(PoolArithmetic, ExhaustionLeavesThePoolUnchangedAndResetFreesAll) {
  PoolArithmetic pool(1024);
  ASSERT_TRUE(pool.take(700));
  EXPECT_FALSE(pool.take(257)) << "768 + 257 > 1024";
  EXPECT_EQ(pool.used(), 700u);
  EXPECT_EQ(pool.take(256), std::optional<size_t>(768)) << "exactly up to the capacity";
  EXPECT_EQ(pool.used(), 1024u);
  EXPECT_FALSE(pool.take(1));
  EXPECT_EQ(pool.take(0), std::optional<size_t>(1024)) << "an empty slice at the very end";
  EXPECT_FALSE(pool.take(static_cast<size_t>(-1)));  // must not wrap around
  EXPECT_EQ(pool.peak(), 1024u);
  pool.reset();
  EXPECT_EQ(pool.used(), 0u);
  EXPECT_EQ(pool.peak(), 1024u) << "peak survives a reset";
  EXPECT_EQ(pool.take(1024), std::optional<size_t>(0));
  EXPECT_FALSE(PoolArithmetic(100).take(101));
  PoolArithmetic huge(static_cast<size_t>(-1) - 10);  // aligning used() must not wrap around
  ASSERT_TRUE(huge.take(static_cast<size_t>(-1) - 100));
  EXPECT_FALSE(huge.take(1));
}

TEST(PoolArithmetic, ExhaustionMessageGivesTheBytesAndTheHint) {
  const std::string m = pool_exhausted_message("a slice", 123456789, 1000, 4096, 555, 8888);
  for (const char* part :
       {"a slice", "123456789 bytes", "1000 of 4096 bytes used", "555 bytes free", "8888",
        "lower meta_batch per rank (or inner.trajectory=recompute)"})
    EXPECT_NE(m.find(part), std::string::npos) << "missing '" << part << "' in: " << m;
}

TEST(DevicePool, CpuOnlyBuildRefusesWithUsageError) {
  if (cuda_built()) GTEST_SKIP() << "CUDA build: the real pool is tested in vec_ops_cuda_test";
  try {
    DevicePool pool(1 << 20);
    ADD_FAILURE() << "a CPU-only build made a device pool";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("device=cuda"), std::string::npos) << e.what();
  }
  EXPECT_THROW(GraphRunner(nullptr, true), UsageError);
}

TEST(GraphRunner, DisabledRunsTheCallbackEagerlyEveryTime) {
  GraphRunner runner(nullptr, false);
  EXPECT_FALSE(runner.enabled());
  int calls = 0;
  const int key = 0;
  for (int i = 0; i < 3; ++i)
    runner.run(
        &key, [&] { ++calls; }, "eager pass");
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(runner.graphs(), 0);
}

}  // namespace
}  // namespace mt
