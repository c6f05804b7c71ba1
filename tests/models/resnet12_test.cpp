// ResNet-12 and its parts in float64 through the generic checker (tests/support/grad_check.h):
// LeakyReLU, the 1×1 convolution, residual blocks (1×1 + BN shortcut, identity shortcut) and a
// small ResNet-12 to second order; exact MAML through it against finite differences of the outer
// loss; trajectory modes bit-identical; the default net's shapes, names and parameter count;
// Sequential::activation_bytes against what a task's passes really allocate (Conv-4, ResNet-12);
// an HVP without its gradient, and a block's HVP passes with kept state, keep their bits.
#include "models/resnet12.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "core/meta_gradient.h"
#include "models/batch_norm.h"
#include "models/conv2d.h"
#include "models/conv4.h"
#include "models/relu.h"
#include "tests/support/episodes.h"
#include "tests/support/grad_check.h"

// Every operator new of this binary, counted on the thread that sets alloc_counting: the bytes
// asked for (kept in a 16-byte header, so that delete knows them) and their high-water mark.
// Aligned new/delete keep their defaults (aligned_alloc / free) and are not counted.
namespace {
thread_local bool alloc_counting = false;
thread_local int64_t alloc_live = 0, alloc_peak = 0;
constexpr size_t kHeader = 16;  // keeps malloc's 16-byte alignment
}  // namespace

void* operator new(size_t n) {
  auto* p = static_cast<char*>(std::malloc(n + kHeader));
  if (!p) throw std::bad_alloc();
  const int64_t counted = alloc_counting ? static_cast<int64_t>(n) : 0;
  std::memcpy(p, &counted, sizeof counted);
  alloc_live += counted;
  alloc_peak = std::max(alloc_peak, alloc_live);
  return p + kHeader;
}
void* operator new[](size_t n) { return operator new(n); }
void operator delete(void* q) noexcept {
  if (!q) return;
  char* p = static_cast<char*>(q) - kHeader;
  int64_t counted;
  std::memcpy(&counted, p, sizeof counted);
  if (alloc_counting) alloc_live -= counted;  // blocks made while counting, freed while counting
  std::free(p);
}
void operator delete[](void* p) noexcept { operator delete(p); }
void operator delete(void* p, size_t) noexcept { operator delete(p); }
void operator delete[](void* p, size_t) noexcept { operator delete(p); }

namespace mt {
namespace {

using testing::Vec;

TEST(Layers, LeakyRelu) {
  const Relu<double> leaky({2, 3, 3}, kLeakySlope);
  EXPECT_EQ(leaky.kind(), "leaky_relu");
  EXPECT_EQ(Relu<double>({2, 3, 3}).kind(), "relu");
  const double x[2] = {-2.0, 3.0};
  double y[2];
  LayerContext<double> ctx;
  Relu<double>({2, 1, 1}, kLeakySlope).forward(1, nullptr, x, y, ctx);
  EXPECT_EQ(y[0], -0.2);
  EXPECT_EQ(y[1], 3.0);
  EXPECT_TRUE(testing::check_layer(leaky, 3, 21));
}

TEST(Layers, Conv1x1Stride1) {
  const Conv2d<double> conv({3, 5, 5}, 4, 1, 1);
  EXPECT_EQ(conv.param_shapes()[0].shape, (std::vector<int64_t>{4, 3, 1, 1}));
  EXPECT_TRUE(conv.out_shape() == (Shape{4, 5, 5}));
  EXPECT_TRUE(testing::check_layer(conv, 3, 22));
}

TEST(Layers, Conv1x1Stride2) {
  const Conv2d<double> conv({3, 6, 5}, 4, 2, 1);
  EXPECT_TRUE(conv.out_shape() == (Shape{4, 3, 3}));
  EXPECT_TRUE(testing::check_layer(conv, 3, 23));
}

// The block of ResNet-12: three conv–BN(–LeakyReLU), 1×1 conv + BN shortcut, LeakyReLU after.
TEST(Layers, ResidualBlockWithConvShortcut) {
  const auto block = make_resnet12_block<double>({2, 6, 6}, 3, Activation::kLeakyRelu);
  EXPECT_TRUE(testing::check_layer(*block, 4, 24));
}

TEST(Layers, ResidualBlockWithReluAndConvShortcut) {
  const auto block = make_resnet12_block<double>({3, 5, 4}, 2, Activation::kRelu);
  EXPECT_TRUE(testing::check_layer(*block, 3, 25));
}

// An empty shortcut is the identity: x enters the sum (and dx, R_dx) directly.
TEST(Layers, ResidualBlockWithIdentityShortcut) {
  const Shape s{3, 5, 5};
  Residual<double> block(s);
  block.add_main("conv1", std::make_unique<Conv2d<double>>(s, 3, 1));
  block.add_main("bn1", std::make_unique<BatchNorm<double>>(s));
  block.add_main("act1", std::make_unique<Relu<double>>(s, kLeakySlope));
  block.add_main("conv2", std::make_unique<Conv2d<double>>(s, 3, 1));
  block.add_main("bn2", std::make_unique<BatchNorm<double>>(s));
  block.set_post("act", std::make_unique<Relu<double>>(s, kLeakySlope));
  EXPECT_TRUE(testing::check_layer(block, 4, 26));
  // Without post either: y = main(x) + x.
  Residual<double> bare(s);
  bare.add_main("conv1", std::make_unique<Conv2d<double>>(s, 3, 1));
  bare.add_main("bn1", std::make_unique<BatchNorm<double>>(s));
  EXPECT_TRUE(testing::check_layer(bare, 3, 27));
}

TEST(Layers, ResidualBlockNamesItsParameters) {
  const auto block = make_resnet12_block<double>({2, 6, 6}, 3, Activation::kLeakyRelu);
  std::vector<std::string> names;
  for (const ParamShape& p : block->param_shapes()) names.push_back(p.name);
  const std::vector<std::string> want = {
      "conv1.weight",      "bn1.gamma",       "bn1.beta",  "conv2.weight", "bn2.gamma",
      "bn2.beta",          "conv3.weight",    "bn3.gamma", "bn3.beta",     "shortcut.conv.weight",
      "shortcut.bn.gamma", "shortcut.bn.beta"};
  EXPECT_EQ(names, want);
  // Kept per example: 5 main activations (conv1, bn1 with its activation, conv2, bn2 with its
  // activation, conv3) + the shortcut conv's + z, each 3×6×6.
  EXPECT_EQ(block->saved_per_example(), 7 * 3 * 6 * 6);
}

ResNet12Spec small_spec() {
  ResNet12Spec spec;
  spec.input = {3, 16, 16};
  spec.widths = {2, 3, 4, 5};
  spec.ways = 5;
  return spec;
}

// Finite differences of a piecewise-linear net are only meaningful where no LeakyReLU sign or
// max-pool argmax flips within a step, for any of the thousands of such sites; the seeds below are
// ones where none does, as for Conv-4 in layers_test.cpp and meta_gradient_test.cpp (a flip shows
// as an O(1e-3) error for a kink, O(1) for the jump it makes in MAML's inner gradient; other seeds
// pass to 1e-10 or hit a flip).

// loss_grad and hvp of a small ResNet-12 against finite differences in the flat parameters.
TEST(Model, ResNet12GradientAndHvp) {
  const ResNet12Spec spec = small_spec();
  auto net = make_resnet12<double>(spec);
  const uint64_t seed = 3;
  Rng rng(seed, 0, 0, Stream::kTest);
  Batch<double> b;
  b.resize(spec.input, 10);
  for (double& v : b.x) v = rng.uniform();
  for (int i = 0; i < b.n; ++i) b.y[i] = i % spec.ways;
  Vec theta(net->layout().total());
  net->init(theta.data(), seed);
  auto ws = net->make_workspace();
  const testing::DiffFunction f = testing::model_function(*net, b, *ws);
  EXPECT_TRUE(testing::check_function(f, theta, rng, "resnet12"));
}

// Exact MAML (r = 2) through the small ResNet-12 against central differences of the
// meta-objective L_Q(φ_r(θ)); tolerance 1e-6 relative as in tests/core/meta_gradient_test.cpp.
TEST(Model, ResNet12ExactMetaGradientMatchesFiniteDifferences) {
  const ResNet12Spec spec = small_spec();
  auto net = make_resnet12<double>(spec);
  const int r = 2;
  const auto ep = testing::noise_episode<double>(spec.input, spec.ways, 1, 2, 7);
  InnerLoop inner;
  inner.steps = r;
  inner.lr = 0.3;
  MetaGradient<double> mg(*net, inner);
  auto s = mg.make_scratch();
  Vec theta(net->layout().total()), g_fo(theta.size()), g_exact(theta.size());
  net->init(theta.data(), 7);
  mg.compute(theta.data(), ep, g_fo.data(), g_exact.data(), s);
  const Vec fd = testing::fd_gradient(
      [&](const Vec& t) { return mg.adapt_and_evaluate(t.data(), ep, r, s).loss; }, theta);
  EXPECT_LT(testing::rel_err(g_exact, fd), 1e-6);
  EXPECT_GT(testing::rel_err(g_fo, fd), 1e-3);  // the first-order gradient differs: not vacuous
}

// ANIL's passes from the head (Model::features, loss_grad_from) give loss_grad's loss and head
// gradient bit for bit and zeros before the head, in float (oneDNN) and double, on ResNet-12
// (the features are global-average-pooled) and Conv-4.
template <typename T>
void expect_head_passes_match(const Sequential<T>& net, const Shape& input, int ways) {
  Rng rng(11, 0, 0, Stream::kTest);
  Batch<T> b;
  b.resize(input, 10);
  for (T& v : b.x) v = static_cast<T>(rng.uniform());
  for (int i = 0; i < b.n; ++i) b.y[i] = i % ways;
  std::vector<T> theta(net.layout().total()), full(theta.size()), head(theta.size(), T(7));
  net.init(theta.data(), 11);
  auto ws = net.make_workspace();
  const LossStats want = net.loss_grad(theta.data(), b, full.data(), *ws);
  const int tensor = static_cast<int>(net.layout().tensors().size()) - 2;  // head.weight
  ASSERT_EQ(net.layout().tensors()[static_cast<size_t>(tensor)].name, "head.weight");
  const int layer = net.split_layer(tensor);
  ASSERT_EQ(layer, static_cast<int>(net.layers().size()) - 1);
  std::vector<T> features(static_cast<size_t>(net.feature_count(layer, b.n)));
  net.features(layer, theta.data(), b, features.data(), *ws);
  const LossStats got =
      net.loss_grad_from(layer, theta.data(), features.data(), b, head.data(), *ws);
  EXPECT_EQ(got.loss, want.loss);
  EXPECT_EQ(got.acc, want.acc);
  const int64_t from = net.layout().tensors()[static_cast<size_t>(tensor)].offset;
  for (int64_t e = 0; e < net.layout().total(); ++e)
    ASSERT_EQ(head[e], e < from ? T(0) : full[e]) << "element " << e;
}

TEST(Model, HeadPassesFromKeptFeaturesMatchTheFullPasses) {
  ResNet12Spec spec = small_spec();
  expect_head_passes_match(*make_resnet12<double>(spec), spec.input, spec.ways);
  spec.widths = {4, 4, 8, 8};
  expect_head_passes_match(*make_resnet12<float>(spec), spec.input, spec.ways);
  Conv4Spec conv;
  conv.input = {1, 28, 28};
  conv.filters = 8;
  expect_head_passes_match(*make_conv4<float>(conv), conv.input, conv.ways);
}

// store, recompute and checkpoint:C give the same bits (DESIGN §3.3), in float on oneDNN.
std::vector<float> exact_gradient(TrajectoryMode mode) {
  ResNet12Spec spec = small_spec();
  spec.widths = {4, 4, 8, 8};
  auto net = make_resnet12<float>(spec);
  const auto ep = testing::noise_episode<float>(spec.input, spec.ways, 1, 2, 9);
  InnerLoop inner;
  inner.steps = 3;
  inner.lr = 0.2;
  inner.trajectory = mode;
  MetaGradient<float> mg(*net, inner);
  auto s = mg.make_scratch();
  std::vector<float> theta(net->layout().total()), g_fo(theta.size()), g_exact(theta.size());
  net->init(theta.data(), 9);
  mg.compute(theta.data(), ep, g_fo.data(), g_exact.data(), s);
  EXPECT_NE(g_exact, g_fo);
  return g_exact;
}

TEST(Model, ResNet12TrajectoryModesAreBitIdentical) {
  const std::vector<float> store = exact_gradient({TrajectoryMode::kStore, 1});
  EXPECT_EQ(exact_gradient({TrajectoryMode::kRecompute, 1}), store);
  EXPECT_EQ(exact_gradient({TrajectoryMode::kCheckpoint, 2}), store);
}

// The default net at Mini-ImageNet size: per block (c → w) 9wc + 18w² (convs) + 6w (BN) + wc
// (shortcut conv) + 2w (its BN); head 640·5 + 5.
TEST(Model, ResNet12ShapesNamesAndParameterCount) {
  auto net = make_resnet12<float>({{3, 84, 84}, {64, 160, 320, 640}, 5, Activation::kLeakyRelu});
  int64_t want = 640 * 5 + 5;
  int c = 3;
  for (int64_t w : {64, 160, 320, 640}) {
    want += 9 * w * c + 18 * w * w + 8 * w + w * c;
    c = static_cast<int>(w);
  }
  EXPECT_EQ(net->layout().total(), want);
  EXPECT_EQ(want, 12427525);
  const ParamLayout& l = net->layout();
  ASSERT_NE(l.find("block1.conv1.weight"), nullptr);
  EXPECT_EQ(l.find("block1.conv1.weight")->shape, (std::vector<int64_t>{64, 3, 3, 3}));
  ASSERT_NE(l.find("block2.shortcut.conv.weight"), nullptr);
  EXPECT_EQ(l.find("block2.shortcut.conv.weight")->shape, (std::vector<int64_t>{160, 64, 1, 1}));
  ASSERT_NE(l.find("block4.bn3.gamma"), nullptr);
  EXPECT_EQ(l.find("head.weight")->shape, (std::vector<int64_t>{5, 640}));
  EXPECT_THROW(make_resnet12<float>({{3, 15, 15}, {2, 2, 2, 2}, 5, Activation::kRelu}), UsageError);
}

// ---- activation memory ----------------------------------------------------------------------

// Peak bytes allocated by a task's passes on a fresh thread (so the thread-local scratch of
// residual blocks and of oneDNN starts empty), as one MAML task on the CPU backend runs them:
// an inner step on the support set, the query loss and gradient, and with exact second order
// the HVPs on the support set of the adjoint sweep; twice, as the next meta-step reuses the
// thread's buffers. Parameters, gradients and batches are allocated before counting starts.
int64_t peak_allocated(const Sequential<float>& net, const Episode<float>& ep, bool hvp) {
  const int64_t d = net.layout().total();
  std::vector<float> theta(d), v(d, 1e-3f), grad(d), Hv(d);
  net.init(theta.data(), 5);
  int64_t peak = 0;
  std::thread worker([&] {
    alloc_live = alloc_peak = 0;
    alloc_counting = true;
    {
      const auto ws = net.make_workspace();
      for (int round = 0; round < 2; ++round) {
        alloc_peak = alloc_live;  // the second round's: buffers no longer grow (from old copies)
        net.loss_grad(theta.data(), ep.support, grad.data(), *ws);
        net.loss_grad(theta.data(), ep.query, grad.data(), *ws);
        if (hvp) net.hvp(theta.data(), ep.support, v.data(), nullptr, Hv.data(), *ws);
      }
      peak = alloc_peak;
    }
    alloc_counting = false;  // the thread-local scratch is freed after this, uncounted
  });
  worker.join();
  return peak;
}

// An HVP asked for no gradient (as the meta-gradient's adjoint sweep asks) skips the weight
// passes of its backward sweep, inside residual blocks too; Hv keeps its bits, and the gradient
// an HVP returns when asked is loss_grad's. float32 on oneDNN, the passes the engine runs.
void expect_hvp_without_gradient_same_bits(const Sequential<float>& net, int ways) {
  const auto ep = testing::noise_episode<float>(net.input_shape(), ways, 1, 2, 4);
  const int64_t d = net.layout().total();
  std::vector<float> theta(d), v(d), grad(d), grad_hvp(d), Hv(d), Hv_alone(d);
  net.init(theta.data(), 6);
  Rng rng(7, 0, 0, Stream::kTest);
  for (float& e : v) e = static_cast<float>(rng.normal());
  const auto ws = net.make_workspace();
  net.loss_grad(theta.data(), ep.support, grad.data(), *ws);
  net.hvp(theta.data(), ep.support, v.data(), grad_hvp.data(), Hv.data(), *ws);
  net.hvp(theta.data(), ep.support, v.data(), nullptr, Hv_alone.data(), *ws);
  EXPECT_EQ(grad_hvp, grad);
  EXPECT_EQ(Hv_alone, Hv);
  EXPECT_GT(*std::max_element(Hv.begin(), Hv.end()), 0.0f);  // not a trivially equal zero
}

TEST(Hvp, WithoutTheGradientHvKeepsItsBits) {
  ResNet12Spec spec;
  spec.input = {3, 20, 20};
  spec.widths = {16, 16, 32, 32};
  expect_hvp_without_gradient_same_bits(*make_resnet12<float>(spec), 5);
  expect_hvp_without_gradient_same_bits(
      *make_conv4<float>({{1, 28, 28}, 16, 5, Conv4Pool::kMax, Activation::kRelu}), 5);
}

// A residual block's HVP passes with kept state (what Sequential runs) give the bits of its
// passes that recompute it: R_y, dx, dW, R_dx and R_dW, in float32 on oneDNN and in float64,
// for a block with a 1×1 + BN shortcut and post activation (ResNet-12's second).
template <typename T>
void expect_kept_passes_same_bits() {
  ResNet12Spec spec;
  spec.input = {3, 20, 20};
  spec.widths = {16, 16, 32, 32};
  const auto net = make_resnet12<T>(spec);
  const auto* block = dynamic_cast<const Residual<T>*>(net->layers()[2].get());
  ASSERT_NE(block, nullptr);
  const int m = 3;
  const int64_t nx = m * block->in_shape().size(), ny = m * block->out_shape().size();
  const int64_t d = block->num_params(), kept = m * block->saved_per_example();
  Rng rng(9, 0, 0, Stream::kTest);
  auto random = [&](int64_t n) {
    std::vector<T> v(static_cast<size_t>(n));
    for (T& e : v) e = static_cast<T>(rng.normal());
    return v;
  };
  std::vector<T> W(static_cast<size_t>(d));
  block->init(W.data(), rng);
  for (T& w : W) w += static_cast<T>(0.1 * rng.normal());  // γ away from 1, β from 0
  const auto R_W = random(d), x = random(nx), R_x = random(nx), dy = random(ny), R_dy = random(ny);
  LayerContext<T> ctx;
  std::vector<T> y(static_cast<size_t>(ny));
  block->forward(m, W.data(), x.data(), y.data(), ctx);
  struct Out {
    std::vector<T> R_y, dx, dW, R_dx, R_dW;
  };
  auto fresh = [&] {
    return Out{std::vector<T>(ny), std::vector<T>(nx), std::vector<T>(d), std::vector<T>(nx),
               std::vector<T>(d)};
  };
  Out again = fresh(), keep = fresh();
  block->r_forward(m, W.data(), R_W.data(), x.data(), R_x.data(), ctx, again.R_y.data());
  block->backward(m, W.data(), x.data(), ctx, dy.data(), again.dx.data(), again.dW.data());
  block->r_backward(m, W.data(), R_W.data(), x.data(), R_x.data(), ctx, dy.data(), R_dy.data(),
                    again.R_dx.data(), again.R_dW.data());
  std::vector<T> kept_R(static_cast<size_t>(kept)), kept_d(static_cast<size_t>(kept));
  block->r_forward_keep(m, W.data(), R_W.data(), x.data(), R_x.data(), ctx, keep.R_y.data(),
                        kept_R.data());
  block->backward_keep(m, W.data(), x.data(), ctx, dy.data(), keep.dx.data(), keep.dW.data(),
                       kept_d.data());
  block->r_backward_kept(m, W.data(), R_W.data(), x.data(), R_x.data(), ctx, dy.data(), R_dy.data(),
                         keep.R_dx.data(), keep.R_dW.data(), kept_R.data(), kept_d.data());
  EXPECT_EQ(keep.R_y, again.R_y);
  EXPECT_EQ(keep.dx, again.dx);
  EXPECT_EQ(keep.dW, again.dW);
  EXPECT_EQ(keep.R_dx, again.R_dx);
  EXPECT_EQ(keep.R_dW, again.R_dW);
  EXPECT_GT(*std::max_element(keep.R_dW.begin(), keep.R_dW.end()), T(0));
}

TEST(Residual, KeptHvpPassesGiveTheRecomputedBits) {
  expect_kept_passes_same_bits<float>();
  expect_kept_passes_same_bits<double>();
}

// activation_bytes is bookkeeping of what the passes allocate: it must not miss a buffer that
// grows with the batch, size one at the wrong batch (the tangents at the support set's size
// rather than the query set's: 25% low here) or invent one. So, at two batch sizes (query 15
// and 30, support 5 and 10): the bytes per added example must agree to 0.1% (they agree
// exactly today: every growing buffer is counted); the total may exceed the prediction only by
// what it leaves out on purpose, which does not grow with the batch: this thread's oneDNN
// primitive objects and the per-call channel sums. Measured: 24–85 KB over a prediction of
// 6.4–26 MB; 256 KiB leaves a 3× margin (a buffer that grows with the batch is caught by the
// slope above, not by this bound).
void expect_activation_bytes_match(const Sequential<float>& net, int ways, bool hvp) {
  const Shape in = net.input_shape();
  const auto small = testing::noise_episode<float>(in, ways, 1, 3, 1);
  const auto large = testing::noise_episode<float>(in, ways, 2, 6, 2);
  // oneDNN's process-wide state (its primitive cache among it) is made on first use.
  peak_allocated(net, small, hvp);
  peak_allocated(net, large, hvp);
  const int64_t got[2] = {peak_allocated(net, small, hvp), peak_allocated(net, large, hvp)};
  const int64_t want[2] = {net.activation_bytes(small.query.n, small.support.n, hvp),
                           net.activation_bytes(large.query.n, large.support.n, hvp)};
  const std::string what = std::string(hvp ? "with" : "without") + " HVPs: allocated " +
                           std::to_string(got[0]) + " and " + std::to_string(got[1]) +
                           " bytes, predicted " + std::to_string(want[0]) + " and " +
                           std::to_string(want[1]);
  const double slope_ratio = static_cast<double>(got[1] - got[0]) / (want[1] - want[0]);
  EXPECT_NEAR(slope_ratio, 1.0, 1e-3) << what;
  const int64_t left_out = 256 << 10;
  for (int k = 0; k < 2; ++k) {
    EXPECT_GE(got[k], want[k]) << what;
    EXPECT_LE(got[k], want[k] + left_out) << what;
  }
}

TEST(Memory, ActivationBytesMatchesAllocationsConv4) {
  // 16 filters: every convolution but the first runs on oneDNN's blocked layouts.
  const auto net = make_conv4<float>({{1, 28, 28}, 16, 5, Conv4Pool::kMax, Activation::kRelu});
  expect_activation_bytes_match(*net, 5, true);
  expect_activation_bytes_match(*net, 5, false);
}

TEST(Memory, ActivationBytesMatchesAllocationsResNet12) {
  ResNet12Spec spec;
  spec.input = {3, 20, 20};
  spec.widths = {16, 16, 32, 32};
  const auto net = make_resnet12<float>(spec);
  expect_activation_bytes_match(*net, 5, true);
  expect_activation_bytes_match(*net, 5, false);
}

}  // namespace
}  // namespace mt
