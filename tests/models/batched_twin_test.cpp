// The CUDA backend's layouts and pass sequence, checked without a GPU: the host twin backend
// (models/batched_twin.h, the batched net over the host twins of the CUDA kernels) against the
// CPU backend (the per-task layers) in float64, pass by pass and for whole meta-steps, with T ≥ 3
// tasks whose episodes differ, on both Conv-4 variants (ResNet-12: batched_resnet_test.cpp).
#include <gtest/gtest.h>

#include "models/conv4.h"
#include "tests/support/twin_check.h"

namespace mt {
namespace {

const Conv4Spec kMax{{2, 16, 16}, 4, 3, Conv4Pool::kMax};
const Conv4Spec kStride{{1, 14, 14}, 3, 4, Conv4Pool::kStride};

TEST(BatchedTwin, PassesMatchTheCpuBackendMaxPoolVariant) {
  testing::expect_passes_agree(make_conv4<double>(kMax));
}
TEST(BatchedTwin, PassesMatchTheCpuBackendStrideVariant) {
  testing::expect_passes_agree(make_conv4<double>(kStride));
}

TEST(BatchedTwin, MamlStepMatchesTheCpuBackend) {
  testing::expect_meta_steps_agree(make_conv4<double>(kMax), 5, Algo::kMaml, 1,
                                   {TrajectoryMode::kStore, 1});
}
TEST(BatchedTwin, UfomStepMatchesTheCpuBackendRecompute) {
  testing::expect_meta_steps_agree(make_conv4<double>(kMax), 5, Algo::kUfom, 0.5,
                                   {TrajectoryMode::kRecompute, 1});
}
TEST(BatchedTwin, FomamlStepMatchesTheCpuBackendStrideVariant) {
  testing::expect_meta_steps_agree(make_conv4<double>(kStride), 5, Algo::kFomaml, 0,
                                   {TrajectoryMode::kStore, 1});
}

}  // namespace
}  // namespace mt
