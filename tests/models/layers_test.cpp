// Every layer's four passes, and the whole Sequential model's gradient and HVP, checked in
// float64 by the generic numerical checker (tests/support/grad_check.h).
#include <gtest/gtest.h>

#include "models/batch_norm.h"
#include "models/conv2d.h"
#include "models/conv4.h"
#include "models/linear.h"
#include "models/max_pool.h"
#include "models/mean_pool.h"
#include "models/relu.h"
#include "models/softmax_xent.h"
#include "tests/support/grad_check.h"

namespace mt {
namespace {

using testing::Vec;

TEST(Layers, Conv2dStride1) {
  EXPECT_TRUE(testing::check_layer(Conv2d<double>({2, 5, 5}, 3, 1), 3, 1));
}
TEST(Layers, Conv2dStride2) {
  EXPECT_TRUE(testing::check_layer(Conv2d<double>({2, 6, 5}, 3, 2), 3, 2));
}
TEST(Layers, BatchNorm) { EXPECT_TRUE(testing::check_layer(BatchNorm<double>({3, 4, 3}), 4, 3)); }
TEST(Layers, BatchNormNoSpatial) {
  EXPECT_TRUE(testing::check_layer(BatchNorm<double>({5, 1, 1}), 6, 4));
}
TEST(Layers, Relu) {
  // ReLU is piecewise linear: its Hessian is zero, so only gradient / r_forward carry signal;
  // the quadratic head still gives a non-zero Hv that must route through the mask.
  EXPECT_TRUE(testing::check_layer(Relu<double>({2, 3, 3}), 3, 5));
}
TEST(Layers, MaxPool) { EXPECT_TRUE(testing::check_layer(MaxPool2<double>({2, 5, 4}), 3, 6)); }
TEST(Layers, GlobalMeanPool) {
  EXPECT_TRUE(testing::check_layer(GlobalMeanPool<double>({3, 3, 4}), 2, 7));
}
TEST(Layers, Linear) { EXPECT_TRUE(testing::check_layer(Linear<double>({2, 2, 3}, 4), 5, 8)); }

TEST(Layers, SoftmaxCrossEntropy) {
  const int m = 4, n = 5;
  const std::vector<int32_t> y = {0, 3, 4, 3};
  testing::DiffFunction f;
  f.value = [&](const Vec& z) {
    Vec p(z.size());
    return SoftmaxCrossEntropy<double>::forward(m, n, z.data(), y.data(), p.data(), nullptr);
  };
  f.grad = [&](const Vec& z) {
    Vec p(z.size()), dz(z.size());
    SoftmaxCrossEntropy<double>::forward(m, n, z.data(), y.data(), p.data(), nullptr);
    SoftmaxCrossEntropy<double>::backward(m, n, p.data(), y.data(), dz.data());
    return dz;
  };
  f.hvp = [&](const Vec& z, const Vec& v) {
    Vec p(z.size()), Hv(z.size());
    SoftmaxCrossEntropy<double>::forward(m, n, z.data(), y.data(), p.data(), nullptr);
    SoftmaxCrossEntropy<double>::r_backward(m, n, p.data(), v.data(), Hv.data());
    return Hv;
  };
  Rng rng(9, 0, 0, Stream::kTest);
  EXPECT_TRUE(
      testing::check_function(f, testing::random_vec(m * n, rng, 2.0), rng, "softmax_xent"));
}

// The whole network: loss_grad and hvp of a small Conv-4 (both pooling variants) against
// finite differences in the flat parameter vector.
::testing::AssertionResult check_model(Conv4Pool pool, uint64_t seed) {
  Conv4Spec spec{{2, 16, 16}, 3, 3, pool};
  auto net = make_conv4<double>(spec);
  Rng rng(seed, 0, 0, Stream::kTest);
  Batch<double> b;
  b.resize(spec.input, 6);
  for (double& v : b.x) v = rng.uniform();
  for (int i = 0; i < b.n; ++i) b.y[i] = i % 3;
  Vec theta(net->layout().total());
  net->init(theta.data(), seed);
  auto ws = net->make_workspace();
  const testing::DiffFunction f = testing::model_function(*net, b, *ws);
  return testing::check_function(f, theta, rng, "conv4");
}

TEST(Model, Conv4MaxPoolGradientAndHvp) { EXPECT_TRUE(check_model(Conv4Pool::kMax, 11)); }
TEST(Model, Conv4StrideGradientAndHvp) { EXPECT_TRUE(check_model(Conv4Pool::kStride, 12)); }

TEST(Model, Conv4ShapesAndNames) {
  auto omni = make_conv4<float>({{1, 28, 28}, 64, 5, Conv4Pool::kMax});
  const TensorSpec* head = omni->layout().find("head.weight");
  ASSERT_NE(head, nullptr);
  EXPECT_EQ(head->shape, (std::vector<int64_t>{5, 64}));
  ASSERT_NE(omni->layout().find("block1.conv.weight"), nullptr);
  EXPECT_EQ(omni->layout().find("block1.conv.weight")->shape, (std::vector<int64_t>{64, 1, 3, 3}));
  auto strided = make_conv4<float>({{1, 28, 28}, 64, 5, Conv4Pool::kStride});
  EXPECT_EQ(strided->layout().find("head.weight")->shape, (std::vector<int64_t>{5, 64}));
  auto mini = make_conv4<float>({{3, 84, 84}, 32, 5, Conv4Pool::kMax});
  EXPECT_EQ(mini->layout().find("head.weight")->shape, (std::vector<int64_t>{5, 32 * 5 * 5}));
}

}  // namespace
}  // namespace mt
