// Builds ResNet-12 (models/resnet12.h) out of residual blocks and the layers in models/.
#include "models/resnet12.h"

#include <string>

#include "core/check.h"
#include "models/batch_norm.h"
#include "models/conv2d.h"
#include "models/linear.h"
#include "models/max_pool.h"
#include "models/mean_pool.h"

namespace mt {

template <typename T>
std::unique_ptr<Residual<T>> make_resnet12_block(Shape in, int width, Activation activation) {
  const double slope = negative_slope(activation);
  auto block = std::make_unique<Residual<T>>(in);
  const Shape out{width, in.h, in.w};
  Shape s = in;
  for (int i = 1; i <= 3; ++i) {
    const std::string k = std::to_string(i);
    block->add_main("conv" + k, std::make_unique<Conv2d<T>>(s, width, 1));
    s = out;
    // bn1 and bn2 end in the activation (models/batch_norm.h); bn3's comes after the sum.
    if (i < 3)
      block->add_main("bn" + k, std::make_unique<BatchNorm<T>>(s, slope));
    else
      block->add_main("bn" + k, std::make_unique<BatchNorm<T>>(s));
  }
  block->add_shortcut("conv", std::make_unique<Conv2d<T>>(in, width, 1, /*kernel=*/1));
  block->add_shortcut("bn", std::make_unique<BatchNorm<T>>(out));
  block->set_post("act", std::make_unique<Relu<T>>(out, slope));
  return block;
}

template <typename T>
std::unique_ptr<Sequential<T>> make_resnet12(const ResNet12Spec& spec) {
  auto net = std::make_unique<Sequential<T>>(spec.input, spec.ways);
  Shape s = spec.input;
  for (int i = 1; i <= 4; ++i) {
    const std::string k = std::to_string(i);
    MT_REQUIRE(s.h >= 2 && s.w >= 2, "model: input ", spec.input.h, "x", spec.input.w,
               " is too small for ResNet-12's four 2x2 max-pools (at least 16x16)");
    net->add("block" + k, make_resnet12_block<T>(s, spec.widths[i - 1], spec.activation));
    s = net->layers().back()->out_shape();
    net->add("pool" + k, std::make_unique<MaxPool2<T>>(s));
    s = net->layers().back()->out_shape();
  }
  net->add("gap", std::make_unique<GlobalMeanPool<T>>(s));
  s = net->layers().back()->out_shape();
  net->add("head", std::make_unique<Linear<T>>(s, spec.ways));
  return net;
}

template std::unique_ptr<Sequential<float>> make_resnet12<float>(const ResNet12Spec&);
template std::unique_ptr<Sequential<double>> make_resnet12<double>(const ResNet12Spec&);
template std::unique_ptr<Residual<float>> make_resnet12_block<float>(Shape, int, Activation);
template std::unique_ptr<Residual<double>> make_resnet12_block<double>(Shape, int, Activation);

}  // namespace mt
