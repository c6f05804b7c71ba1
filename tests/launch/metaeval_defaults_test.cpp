// metaeval as README runs it: 600 episodes (the standard protocol) unless eval.episodes= is
// given, whatever the training run's periodic evaluations used; and device= may change, so
// `metaeval CKPT device=cuda` evaluates a CPU-trained checkpoint on a GPU (here, without one,
// it is refused for the missing GPU, not as a key metaeval cannot change).
#include <gtest/gtest.h>

#include <string>

#include "core/device.h"
#include "tests/support/programs.h"

namespace mt {
namespace {

using Result = testing::ProgramResult;

std::string trained_checkpoint() {
  const std::string dir = testing::temp_dir("metaeval_defaults");
  const Result r =
      testing::run_program("metatrain",
                           "steps=1 eval.every=0 eval.episodes=20 model.filters=8 threads=1 "
                           "checkpoint.dir=" +
                               dir);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return dir + "/latest.h5";
}

TEST(MetaevalDefaults, StandardProtocolUnlessToldAndDeviceMayChange) {
  const std::string ckpt = trained_checkpoint();
  const Result standard =
      testing::run_program("metaeval", ckpt + " --json model.filters=8 threads=1");
  EXPECT_EQ(standard.exit_code, 2) << "model.filters is the checkpoint's: " << standard.output;
  const Result r = testing::run_program("metaeval", ckpt + " --json threads=1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("\"episodes\": 600"), std::string::npos) << r.output;
  const Result few = testing::run_program("metaeval", ckpt + " --json eval.episodes=30 threads=1");
  ASSERT_EQ(few.exit_code, 0) << few.output;
  EXPECT_NE(few.output.find("\"episodes\": 30"), std::string::npos) << few.output;
  const Result cuda =
      testing::run_program("metaeval", ckpt + " device=cuda eval.episodes=10 threads=1");
  EXPECT_EQ(cuda.output.find("cannot change this key"), std::string::npos) << cuda.output;
  if (gpu_count() == 0) {  // refused for the missing GPU (or CUDA backend), naming device
    EXPECT_EQ(cuda.exit_code, 2) << cuda.output;
    const char* why = cuda_built() ? "device=cuda, but" : "built without the CUDA backend";
    EXPECT_NE(cuda.output.find(why), std::string::npos) << cuda.output;
  } else {
    EXPECT_EQ(cuda.exit_code, 0) << cuda.output;
  }
}

}  // namespace
}  // namespace mt
