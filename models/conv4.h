// The Conv-4 backbone of Finn et al. (2017): 4 × [conv 3×3, batch norm, ReLU, 2×2 max-pool],
// then a linear head to `ways` logits; LeakyReLU in place of ReLU on request. The "stride"
// variant (Finn's Omniglot code) uses stride-2 convolutions without pooling and a global
// mean-pool before the head.
// Omniglot: 28×28×1, 64 filters; Mini-ImageNet: 84×84×3, 32 filters.
#pragma once

#include <memory>

#include "models/relu.h"
#include "models/sequential.h"

namespace mt {

enum class Conv4Pool { kMax, kStride };

struct Conv4Spec {
  Shape input{1, 28, 28};
  int filters = 64;
  int ways = 5;
  Conv4Pool pool = Conv4Pool::kMax;
  Activation activation = Activation::kRelu;
};

template <typename T>
std::unique_ptr<Sequential<T>> make_conv4(const Conv4Spec& spec);

}  // namespace mt
