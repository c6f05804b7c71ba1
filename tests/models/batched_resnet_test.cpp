// ResNet-12 on the task-batched plan (models/batched_net.h), checked without a GPU: the plan's
// graph (nodes, the producers add nodes read, the fan-in rule, parameter numbering), the new
// host-twin kernels (sum, LeakyReLU, 1×1 conv) against the CPU layers, and the host twin backend
// (models/batched_twin.h) against the per-task CPU model in float64, pass by pass and for whole
// meta-steps, with ReLU and LeakyReLU, a 1×1 shortcut and an identity one.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "core/batched_model_cpu.h"
#include "core/meta_step.h"
#include "core/rng.h"
#include "core/ufom.h"
#include "models/batch_norm.h"
#include "models/batched_kernels.h"
#include "models/batched_net.h"
#include "models/batched_twin.h"
#include "models/conv2d.h"
#include "models/conv2d_batched_index.h"
#include "models/linear.h"
#include "models/max_pool.h"
#include "models/mean_pool.h"
#include "models/relu.h"
#include "models/residual.h"
#include "models/resnet12.h"
#include "tests/support/episodes.h"
#include "tests/support/near_ref.h"
#include "tests/support/twin_check.h"

namespace mt {
namespace {

using Vec = std::vector<double>;

// Small enough for a few seconds per test in Release (16×16 is the least input four 2×2 pools
// take), wide enough that no block is degenerate (the widths differ, so every shortcut maps C
// channels to another count).
ResNet12Spec small_resnet(Activation a) {
  ResNet12Spec s;
  s.input = {3, 16, 16};
  s.widths = {3, 4, 5, 6};
  s.ways = 3;
  s.activation = a;
  return s;
}

// A net whose block has an identity shortcut (the block input itself is the add's second
// operand): conv–BN–act–conv–BN (+ x), act, pool; then global mean-pool and the head.
template <typename T>
std::unique_ptr<Sequential<T>> identity_shortcut_net(Activation a) {
  const Shape in{3, 8, 8};
  const double slope = negative_slope(a);
  auto net = std::make_unique<Sequential<T>>(in, 3);
  net->add("stem", std::make_unique<Conv2d<T>>(in, 4, 1));
  const Shape s{4, 8, 8};
  auto block = std::make_unique<Residual<T>>(s);
  block->add_main("conv1", std::make_unique<Conv2d<T>>(s, 4, 1));
  block->add_main("bn1", std::make_unique<BatchNorm<T>>(s));
  block->add_main("act1", std::make_unique<Relu<T>>(s, slope));
  block->add_main("conv2", std::make_unique<Conv2d<T>>(s, 4, 1));
  block->add_main("bn2", std::make_unique<BatchNorm<T>>(s));
  block->set_post("act", std::make_unique<Relu<T>>(s, slope));
  net->add("block", std::move(block));
  net->add("pool", std::make_unique<MaxPool2<T>>(s));
  const Shape p{4, 4, 4};
  net->add("gap", std::make_unique<GlobalMeanPool<T>>(p));
  net->add("head", std::make_unique<Linear<T>>(Shape{4, 1, 1}, 3));
  return net;
}

// ---------------------------------------------------------------------------------------------
// The plan's graph.

// ResNet-12's plan, block by block: the main branch (conv3, BN, act, conv3, BN, act, conv3, BN),
// the shortcut (conv1, BN) reading the block input, the add of the two branch ends, the post
// activation reading the add, the pool; then the global mean-pool and the head.
TEST(BatchedResNetPlan, ResNet12IsFourBlocksOfMainShortcutAddPostAndPool) {
  const auto net = make_resnet12<double>(small_resnet(Activation::kLeakyRelu));
  const std::vector<NetLayer> plan = batched_plan(*net);
  using K = NetLayer;
  const std::vector<NetLayer::Kind> block = {
      K::kConv,      K::kBatchNorm, K::kRelu,      K::kConv, K::kBatchNorm, K::kRelu,   K::kConv,
      K::kBatchNorm, K::kConv,      K::kBatchNorm, K::kAdd,  K::kRelu,      K::kMaxPool};
  ASSERT_EQ(plan.size(), 4 * block.size() + 2);
  int block_input = kNetInput;
  for (int b = 0; b < 4; ++b) {
    SCOPED_TRACE("block " + std::to_string(b + 1));
    const int o = b * static_cast<int>(block.size());
    for (size_t k = 0; k < block.size(); ++k) EXPECT_EQ(plan[o + k].kind, block[k]) << "node " << k;
    // The main branch is a chain from the block input; the shortcut starts at the block input.
    EXPECT_EQ(plan[o].input[0], block_input);
    for (int k = 1; k < 8; ++k) EXPECT_EQ(plan[o + k].input[0], o + k - 1);
    EXPECT_EQ(plan[o + 8].input[0], block_input) << "the shortcut conv reads the block input";
    EXPECT_EQ(plan[o + 9].input[0], o + 8);
    EXPECT_EQ(plan[o + 10].input[0], o + 7) << "add: the main branch's last BN";
    EXPECT_EQ(plan[o + 10].input[1], o + 9) << "add: the shortcut's BN";
    EXPECT_EQ(plan[o + 11].input[0], o + 10);
    EXPECT_EQ(plan[o + 12].input[0], o + 11);
    // Kernels: 3×3 on the main branch, 1×1 on the shortcut; stride 1 throughout.
    for (int k : {0, 3, 6}) EXPECT_EQ(plan[o + k].kernel, 3);
    EXPECT_EQ(plan[o + 8].kernel, 1);
    for (int k : {0, 3, 6, 8}) EXPECT_EQ(plan[o + k].stride, 1);
    // LeakyReLU 0.1 after the first two BNs and after the sum, none before the sum.
    for (int k : {2, 5, 11}) EXPECT_EQ(plan[o + k].slope, static_cast<double>(kLeakySlope));
    EXPECT_EQ(plan[o + 10].in, plan[o + 7].out);
    EXPECT_EQ(plan[o + 9].out, plan[o + 7].out);
    block_input = o + 12;
  }
  EXPECT_EQ(plan[plan.size() - 2].kind, NetLayer::kMeanPool);
  EXPECT_EQ(plan.back().kind, NetLayer::kLinear);
  EXPECT_EQ(plan.back().input[0], static_cast<int>(plan.size()) - 2);
  const auto relu = batched_plan(*make_resnet12<double>(small_resnet(Activation::kRelu)));
  EXPECT_EQ(relu[2].slope, 0.0);
}

// The fan-in rule: the block input feeds the main branch's first conv and the shortcut (1×1
// conv, or the add itself for an identity shortcut). The reverse sweep reaches the later
// consumer first, which writes the gradient; the main branch's first conv adds its own in.
TEST(BatchedResNetPlan, TheLaterConsumerOfAFannedOutTensorWritesAndTheEarlierAdds) {
  {
    SCOPED_TRACE("1x1 shortcut");
    const std::vector<NetLayer> plan =
        batched_plan(*make_resnet12<double>(small_resnet(Activation::kRelu)));
    const auto acc = fan_in_rule(plan);
    const std::vector<int> readers = consumers(plan);
    for (int b = 1; b < 4; ++b) {  // block 1 reads the images: nothing to accumulate into
      const int o = b * 13, input = o - 1;
      EXPECT_EQ(readers[input], 2);
      EXPECT_FALSE(acc[o + 8][0]) << "block " << b + 1 << ": the shortcut conv writes";
      EXPECT_TRUE(acc[o][0]) << "block " << b + 1 << ": the main branch's first conv adds";
    }
    for (size_t l = 0; l < plan.size(); ++l) {  // a single consumer always writes
      for (int s = 0; s < plan[l].arity(); ++s) {
        const int p = plan[l].input[s];
        if (p >= 0 && readers[p] == 1) EXPECT_FALSE(acc[l][s]) << "node " << l;
      }
    }
  }
  {
    SCOPED_TRACE("identity shortcut");
    const std::vector<NetLayer> plan =
        batched_plan(*identity_shortcut_net<double>(Activation::kRelu));
    // stem, conv1, bn1, act1, conv2, bn2, add, act, pool, gap, head
    ASSERT_EQ(plan.size(), 11u);
    ASSERT_EQ(plan[6].kind, NetLayer::kAdd);
    EXPECT_EQ(plan[6].input[0], 5);
    EXPECT_EQ(plan[6].input[1], 0) << "the identity shortcut is the block input itself";
    EXPECT_EQ(plan[1].input[0], 0);
    const auto acc = fan_in_rule(plan);
    EXPECT_EQ(consumers(plan)[0], 2);
    EXPECT_FALSE(acc[6][0]);
    EXPECT_FALSE(acc[6][1]) << "the add is the stem's last consumer in the reverse sweep: writes";
    EXPECT_TRUE(acc[1][0]) << "the block's first conv adds into the stem's gradient";
  }
}

// Every node's parameters are the model's tensors at the node's index, in layout order: the
// plan covers the tensors 0 … K−1 once each, with the shapes its kinds imply.
TEST(BatchedResNetPlan, ParameterNumberingIsTheModelsLayout) {
  const auto net = make_resnet12<double>(small_resnet(Activation::kLeakyRelu));
  const std::vector<NetLayer> plan = batched_plan(*net);
  const std::vector<TensorSpec>& tensors = net->layout().tensors();
  int next = 0;
  for (size_t l = 0; l < plan.size(); ++l) {
    const NetLayer& L = plan[l];
    SCOPED_TRACE("node " + std::to_string(l));
    std::vector<std::vector<int64_t>> want;
    switch (L.kind) {
      case NetLayer::kConv:
        want = {{L.out.c, L.in.c, L.kernel, L.kernel}};
        break;
      case NetLayer::kBatchNorm:
        want = {{L.out.c}, {L.out.c}};
        break;
      case NetLayer::kLinear:
        want = {{L.out.c, L.in.size()}, {L.out.c}};
        break;
      default:
        EXPECT_EQ(L.param, -1);
        continue;
    }
    ASSERT_EQ(L.param, next);
    for (size_t k = 0; k < want.size(); ++k) EXPECT_EQ(tensors[next + k].shape, want[k]);
    next += static_cast<int>(want.size());
  }
  EXPECT_EQ(next, static_cast<int>(tensors.size()));
  // Named where they sit: block 2's shortcut conv is node 13 + 8.
  EXPECT_EQ(tensors[plan[13 + 8].param].name, "block2.shortcut.conv.weight");
  EXPECT_EQ(tensors[plan[13 + 7].param + 1].name, "block2.bn3.beta");
  EXPECT_EQ(tensors[plan.back().param].name, "head.weight");
}

// ---------------------------------------------------------------------------------------------
// Kernels: the host twins against the CPU layers.

Vec random_vec(int64_t n, uint64_t seed, double lo = -1, double hi = 1) {
  Rng rng(seed, 0, 0, Stream::kTest);
  Vec v(static_cast<size_t>(n));
  for (double& x : v) x = rng.uniform(lo, hi);
  return v;
}
Vec poison(int64_t n) { return Vec(static_cast<size_t>(n), std::nan("")); }

// Batched activations [n, T·C, P] <-> task t's [n, C, P].
Vec task_slice(const Vec& a, int n, int T, int64_t S, int t) {
  Vec s(static_cast<size_t>(n) * S);
  for (int i = 0; i < n; ++i)
    std::copy_n(a.begin() + (static_cast<int64_t>(i) * T + t) * S, S, s.begin() + i * S);
  return s;
}
void put_task_slice(const Vec& s, int n, int T, int64_t S, int t, Vec& a) {
  for (int i = 0; i < n; ++i)
    std::copy_n(s.begin() + i * S, S, a.begin() + (static_cast<int64_t>(i) * T + t) * S);
}

// The sum is one rounded addition per element: exact equality with a + b, for every null case
// and in place.
TEST(BatchedResNetKernels, AddIsTheElementwiseSumWithNullAsZero) {
  const int64_t count = 3 * 4 * 5 * 7;
  const Vec a = random_vec(count, 1), b = random_vec(count, 2);
  Vec y = poison(count), y_a = poison(count), y_b = poison(count), y_0 = poison(count);
  add_host(count, a.data(), b.data(), y.data());
  add_host(count, a.data(), static_cast<const double*>(nullptr), y_a.data());
  add_host(count, static_cast<const double*>(nullptr), b.data(), y_b.data());
  add_host(count, static_cast<const double*>(nullptr), static_cast<const double*>(nullptr),
           y_0.data());
  Vec in_place = b;
  add_host(count, a.data(), in_place.data(), in_place.data());
  for (int64_t k = 0; k < count; ++k) {
    ASSERT_EQ(y[k], a[k] + b[k]) << k;
    ASSERT_EQ(y_a[k], a[k]) << k;
    ASSERT_EQ(y_b[k], b[k]) << k;
    ASSERT_EQ(y_0[k], 0.0) << k;
    ASSERT_EQ(in_place[k], a[k] + b[k]) << k;
  }
}

// LeakyReLU's four passes on T tasks against Relu<T>(slope 0.1) task by task: pure routing
// and one product by the slope, the same in both, so the results must be equal bit for bit.
template <typename T>
void check_leaky_relu(uint64_t seed) {
  const int n = 4, tasks = 3;
  const Shape shape{2, 3, 3};
  const int64_t S = shape.size(), count = n * tasks * S;
  const T slope = static_cast<T>(kLeakySlope);
  auto draw = [&](uint64_t k) {
    const Vec d = random_vec(count, seed + k);
    return std::vector<T>(d.begin(), d.end());
  };
  std::vector<T> x = draw(0);
  for (int64_t k = 0; k < count; k += 7) x[k] = T(0);  // on the kink: x > 0 is false
  const std::vector<T> dy = draw(1), R_x = draw(2), R_dy = draw(3);
  const T nan = std::numeric_limits<T>::quiet_NaN();
  std::vector<T> y(count, nan), dx(count, nan), R_y(count, nan), R_y0(count, nan), R_dx(count, nan);
  relu_forward_host(count, slope, x.data(), y.data());
  relu_backward_host(count, slope, x.data(), dy.data(), dx.data());
  relu_r_forward_host(count, slope, x.data(), R_x.data(), R_y.data());
  relu_r_forward_host(count, slope, x.data(), static_cast<const T*>(nullptr), R_y0.data());
  relu_r_backward_host(count, slope, x.data(), R_dy.data(), R_dx.data());

  const Relu<T> layer(shape, kLeakySlope);
  ASSERT_EQ(layer.kind(), "leaky_relu");
  LayerContext<T> ctx;
  auto slice = [&](const std::vector<T>& v, int t) {
    std::vector<T> s(static_cast<size_t>(n) * S);
    for (int i = 0; i < n; ++i)
      std::copy_n(v.begin() + (static_cast<int64_t>(i) * tasks + t) * S, S, s.begin() + i * S);
    return s;
  };
  for (int t = 0; t < tasks; ++t) {
    SCOPED_TRACE("task " + std::to_string(t));
    const std::vector<T> x_t = slice(x, t);
    std::vector<T> y_t(n * S), dx_t(n * S), R_y_t(n * S), R_y0_t(n * S), R_dx_t(n * S);
    layer.forward(n, nullptr, x_t.data(), y_t.data(), ctx);
    layer.backward(n, nullptr, x_t.data(), ctx, slice(dy, t).data(), dx_t.data(), nullptr);
    layer.r_forward(n, nullptr, nullptr, x_t.data(), slice(R_x, t).data(), ctx, R_y_t.data());
    layer.r_forward(n, nullptr, nullptr, x_t.data(), nullptr, ctx, R_y0_t.data());
    layer.r_backward(n, nullptr, nullptr, x_t.data(), nullptr, ctx, nullptr, slice(R_dy, t).data(),
                     R_dx_t.data(), nullptr);
    EXPECT_EQ(slice(y, t), y_t);
    EXPECT_EQ(slice(dx, t), dx_t);
    EXPECT_EQ(slice(R_y, t), R_y_t);
    EXPECT_EQ(slice(R_y0, t), R_y0_t);
    EXPECT_EQ(slice(R_dx, t), R_dx_t);
  }
  // The negative side is scaled, not cut: a test that only saw ReLU's zeros would pass above.
  int64_t scaled = 0;
  for (int64_t k = 0; k < count; ++k) scaled += x[k] < T(0) && y[k] == slope * x[k] && y[k] != 0;
  EXPECT_GT(scaled, count / 4);
}

TEST(BatchedResNetKernels, LeakyReluMatchesTheCpuLayerDouble) { check_leaky_relu<double>(10); }
TEST(BatchedResNetKernels, LeakyReluMatchesTheCpuLayerFloat) { check_leaky_relu<float>(20); }

// Only summation order differs between the twin's naive GEMM loops and Conv2d's dgemm: with
// |entries| ≤ 1 and at most C·K² or n·P terms per sum the float64 differences stay near 1e-15
// relative, so 1e-12 relative to the largest reference entry catches any indexing error (O(1)).
constexpr double kConvTol = 1e-12;

void expect_conv_close(const std::string& what, const Vec& ref, const Vec& got) {
  testing::expect_near_ref(what, ref, got, kConvTol);
}

// The batched 1×1 convolution (padding 0) of the GEMM form, every pass, against Conv2d<double>
// with kernel 1 task by task.
void check_conv1x1(int stride, int hw) {
  const int T = 3, n = 3, C = 3, O = 5, max_n = n + 1;
  const Shape in{C, hw, hw};
  const BatchedConvGeom g = make_batched_conv_geom(in, O, stride, T, /*kernel=*/1);
  ASSERT_EQ(g.col_rows(), C);
  const Conv2d<double> conv(in, O, stride, /*kernel=*/1);
  ASSERT_EQ(conv.out_shape().h, g.out_h);
  ASSERT_EQ(conv.out_shape().w, g.out_w);
  const int64_t Sin = in.size(), Sout = conv.out_shape().size(), wsize = int64_t{O} * C;
  const Vec x = random_vec(g.in_size(n), 31), R_x = random_vec(g.in_size(n), 32);
  const Vec W = random_vec(g.weight_size(), 33), R_W = random_vec(g.weight_size(), 34);
  const Vec dy = random_vec(g.out_size(n), 35), R_dy = random_vec(g.out_size(n), 36);

  Vec y_ref(g.out_size(n)), dx_ref(g.in_size(n)), dW_ref(g.weight_size()), R_y_ref(g.out_size(n));
  Vec R_dx_ref(g.in_size(n)), R_dW_ref(g.weight_size());
  for (int t = 0; t < T; ++t) {
    const Vec xt = task_slice(x, n, T, Sin, t), R_xt = task_slice(R_x, n, T, Sin, t);
    const Vec dyt = task_slice(dy, n, T, Sout, t), R_dyt = task_slice(R_dy, n, T, Sout, t);
    const double* Wt = W.data() + t * wsize;
    const double* R_Wt = R_W.data() + t * wsize;
    LayerContext<double> ctx;
    Vec yt(static_cast<size_t>(n) * Sout), dxt(xt.size());
    conv.forward(n, Wt, xt.data(), yt.data(), ctx);
    put_task_slice(yt, n, T, Sout, t, y_ref);
    conv.backward(n, Wt, xt.data(), ctx, dyt.data(), dxt.data(), dW_ref.data() + t * wsize);
    put_task_slice(dxt, n, T, Sin, t, dx_ref);
    conv.r_forward(n, Wt, R_Wt, xt.data(), R_xt.data(), ctx, yt.data());
    put_task_slice(yt, n, T, Sout, t, R_y_ref);
    conv.r_backward(n, Wt, R_Wt, xt.data(), R_xt.data(), ctx, dyt.data(), R_dyt.data(), dxt.data(),
                    R_dW_ref.data() + t * wsize);
    put_task_slice(dxt, n, T, Sin, t, R_dx_ref);
  }

  // Workspaces poisoned: every entry read must have been written first.
  HostGemmExec<double> ex;
  Vec col = poison(g.col_size(max_n)), gy = poison(g.out_size(max_n)),
      R_gy = poison(g.out_size(max_n));
  const ConvGemmWorkspace<double> ws{col.data(), gy.data(), R_gy.data()};
  const std::string where = "stride " + std::to_string(stride) + ", " + std::to_string(hw) + "x" +
                            std::to_string(hw) + ": ";
  Vec y = poison(g.out_size(n)), dx = poison(g.in_size(n)), dW = poison(g.weight_size());
  conv_gemm_forward(ex, g, n, W.data(), x.data(), y.data(), ws);
  expect_conv_close(where + "forward", y_ref, y);
  conv_gemm_backward_data(ex, g, n, W.data(), dy.data(), dx.data(), ws);
  expect_conv_close(where + "backward data", dx_ref, dx);
  conv_gemm_backward_filter(ex, g, n, x.data(), dy.data(), dW.data(), ws);
  expect_conv_close(where + "backward filter", dW_ref, dW);
  Vec R_y = poison(g.out_size(n)), R_dx = poison(g.in_size(n)), R_dW = poison(g.weight_size());
  conv_gemm_r_forward(ex, g, n, W.data(), R_W.data(), x.data(), R_x.data(), R_y.data(), ws);
  expect_conv_close(where + "r_forward", R_y_ref, R_y);
  conv_gemm_r_backward(ex, g, n, W.data(), R_W.data(), x.data(), R_x.data(), dy.data(), R_dy.data(),
                       R_dx.data(), R_dW.data(), ws);
  expect_conv_close(where + "r_backward R_dx", R_dx_ref, R_dx);
  expect_conv_close(where + "r_backward R_dW", R_dW_ref, R_dW);
}

TEST(BatchedResNetKernels, Conv1x1MatchesConv2dStride1) { check_conv1x1(1, 5); }
TEST(BatchedResNetKernels, Conv1x1MatchesConv2dStride2OddSize) { check_conv1x1(2, 7); }

// The host twin against the per-task CPU model (tests/support/twin_check.h).
TEST(BatchedResNetTwin, PassesMatchTheCpuModelLeakyRelu) {
  testing::expect_passes_agree(make_resnet12<double>(small_resnet(Activation::kLeakyRelu)));
}
TEST(BatchedResNetTwin, PassesMatchTheCpuModelRelu) {
  testing::expect_passes_agree(make_resnet12<double>(small_resnet(Activation::kRelu)));
}
TEST(BatchedResNetTwin, PassesMatchTheCpuModelIdentityShortcut) {
  testing::expect_passes_agree(identity_shortcut_net<double>(Activation::kLeakyRelu));
}

TEST(BatchedResNetTwin, MamlStepMatchesTheCpuModelLeakyRelu) {
  testing::expect_meta_steps_agree(make_resnet12<double>(small_resnet(Activation::kLeakyRelu)), 4,
                                   Algo::kMaml, 1, {TrajectoryMode::kStore, 1});
}
TEST(BatchedResNetTwin, MamlStepMatchesTheCpuModelReluRecompute) {
  testing::expect_meta_steps_agree(make_resnet12<double>(small_resnet(Activation::kRelu)), 4,
                                   Algo::kMaml, 1, {TrajectoryMode::kRecompute, 1});
}
TEST(BatchedResNetTwin, FomamlStepMatchesTheCpuModel) {
  testing::expect_meta_steps_agree(make_resnet12<double>(small_resnet(Activation::kLeakyRelu)), 4,
                                   Algo::kFomaml, 0, {TrajectoryMode::kStore, 1});
}
TEST(BatchedResNetTwin, UfomStepMatchesTheCpuModel) {
  testing::expect_meta_steps_agree(make_resnet12<double>(small_resnet(Activation::kLeakyRelu)), 4,
                                   Algo::kUfom, 0.5, {TrajectoryMode::kStore, 1});
}

}  // namespace
}  // namespace mt
