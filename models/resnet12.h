// ResNet-12 as few-shot work uses it (MetaOptNet, learn2learn, LibFewShot; DESIGN §4): four
// residual blocks, each three conv 3×3–BN–LeakyReLU(0.1) (no activation before the sum), a 1×1
// conv + BN shortcut, LeakyReLU after the sum and a 2×2 max-pool; global mean-pool; linear head.
// Batch norm uses the statistics of the batch at hand, as in Conv-4. No DropBlock.
//
// Memory of a task's forward (float): each block of width w at H×W keeps 11·w·H·W values per
// example (5 main-branch activations, as bn1 and bn2 end in their activations
// (models/batch_norm.h); the shortcut conv's, z, and four batch-norm x̂; see
// models/residual.h): at 84×84×3 with the default widths 10.3 M values, 41 MB, per example,
// 3.1 GB for a 75-example query set; and the r_forward / r_backward scratch of the largest block
// per thread (15·w·H·W per example, 2.0 GB there).
#pragma once

#include <array>
#include <memory>

#include "models/relu.h"
#include "models/residual.h"
#include "models/sequential.h"

namespace mt {

struct ResNet12Spec {
  Shape input{3, 84, 84};
  std::array<int, 4> widths{64, 160, 320, 640};
  int ways = 5;
  Activation activation = Activation::kLeakyRelu;
};

// Layers "block1".."block4" (Residual, parameters "block<i>.conv1.weight", "block<i>.bn1.gamma",
// …, "block<i>.shortcut.conv.weight"), "pool1".."pool4", "gap", "head". Throws UsageError when
// the input is too small for four 2×2 max-pools (under 16×16).
template <typename T>
std::unique_ptr<Sequential<T>> make_resnet12(const ResNet12Spec& spec);

// One block of ResNet-12 from `in` to `width` channels at the same size, without the pool.
template <typename T>
std::unique_ptr<Residual<T>> make_resnet12_block(Shape in, int width, Activation activation);

}  // namespace mt
