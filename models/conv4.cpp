// Builds the Conv-4 backbones (models/conv4.h) out of the layers in models/.
#include "models/conv4.h"

#include "core/check.h"
#include "models/batch_norm.h"
#include "models/conv2d.h"
#include "models/linear.h"
#include "models/max_pool.h"
#include "models/mean_pool.h"
#include "models/relu.h"

namespace mt {

template <typename T>
std::unique_ptr<Sequential<T>> make_conv4(const Conv4Spec& spec) {
  auto net = std::make_unique<Sequential<T>>(spec.input, spec.ways);
  const bool strided = spec.pool == Conv4Pool::kStride;
  Shape s = spec.input;
  for (int i = 1; i <= 4; ++i) {
    const std::string block = "block" + std::to_string(i);
    net->add(block + ".conv", std::make_unique<Conv2d<T>>(s, spec.filters, strided ? 2 : 1));
    s = net->layers().back()->out_shape();
    // The activation runs inside the batch norm's passes (models/batch_norm.h).
    net->add(block + ".bn", std::make_unique<BatchNorm<T>>(s, negative_slope(spec.activation)));
    if (!strided) {
      MT_REQUIRE(s.h >= 2 && s.w >= 2, "model: input ", spec.input.h, "x", spec.input.w,
                 " is too small for Conv-4 with max-pooling");
      net->add(block + ".pool", std::make_unique<MaxPool2<T>>(s));
      s = net->layers().back()->out_shape();
    }
  }
  if (strided) {
    net->add("gap", std::make_unique<GlobalMeanPool<T>>(s));
    s = net->layers().back()->out_shape();
  }
  net->add("head", std::make_unique<Linear<T>>(s, spec.ways));
  return net;
}

template std::unique_ptr<Sequential<float>> make_conv4<float>(const Conv4Spec&);
template std::unique_ptr<Sequential<double>> make_conv4<double>(const Conv4Spec&);

}  // namespace mt
