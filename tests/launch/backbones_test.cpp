// Both backbones through metatrain on the CPU, every algorithm and trajectory mode: a small
// ResNet-12 trains under MAML, FOMAML, UFOM (fixed and adaptive q) and each of store /
// recompute / checkpoint:C, and the three modes give the same parameters bit for bit (they
// compute the same gradients in the same order; only what is kept differs).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "tests/support/checkpoints.h"
#include "tests/support/programs.h"

namespace mt {
namespace {

// Final parameters of a 2-step run of a 4,4,8,8-wide ResNet-12 with 3 inner steps.
std::vector<float> train_resnet12(const std::string& algo, const std::string& trajectory) {
  const std::string dir = testing::temp_dir("backbones_" + algo.substr(0, algo.find(' ')) + "_" +
                                            trajectory.substr(0, trajectory.find(':')));
  const testing::ProgramResult r =
      testing::run_program("metatrain",
                           "model.name=resnet12 model.widths=4,4,8,8 steps=2 meta_batch=2 "
                           "task.queries=2 inner.steps=3 eval.every=0 eval.episodes=2 threads=1 " +
                               algo + " inner.trajectory=" + trajectory + " checkpoint.dir=" + dir);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return testing::checkpoint_params(dir + "/latest.h5");
}

TEST(Backbones, ResNet12RunsEveryAlgorithmAndTrajectoryModeOnTheCpu) {
  const std::vector<std::string> algos = {"algo=maml", "algo=fomaml", "algo=ufom ufom.q=0.5",
                                          "algo=ufom ufom.q=adaptive"};
  std::vector<std::vector<float>> stored;
  for (const std::string& algo : algos) {
    const std::vector<float> store = train_resnet12(algo, "store");
    ASSERT_FALSE(store.empty()) << algo;
    for (float v : store) ASSERT_TRUE(std::isfinite(v)) << algo;
    EXPECT_EQ(train_resnet12(algo, "recompute"), store) << algo << ": recompute differs";
    EXPECT_EQ(train_resnet12(algo, "checkpoint:2"), store) << algo << ": checkpoint:2 differs";
    stored.push_back(store);
  }
  // The algorithms are not the same computation under four names.
  EXPECT_NE(stored[0], stored[1]) << "MAML and FOMAML trained the same parameters";
  EXPECT_NE(stored[1], stored[2]) << "UFOM q=0.5 and FOMAML trained the same parameters";
}

}  // namespace
}  // namespace mt
