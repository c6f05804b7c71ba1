// The whole meta-step against an independent implementation: tests/golden/conv4_small.h5 and
// resnet12_small.h5 hold θ, episodes and the FOMAML / exact MAML gradients computed by JAX
// (tests/golden/make_golden.py, float64 autodiff through the inner loop), and for ResNet-12 also
// UFOM's at a recorded coin outcome. Our float64 path must agree to 1e-9 relative: both are
// exact float64 computations of the same function that differ only in summation order (≈1e-15
// per operation, times the conditioning of the inner loop: JAX's own two exact methods differ by
// up to 3e-11 on these files), while any modelling difference (BN ε, pooling, layout, a shortcut,
// an activation's slope, a missing Hessian term) shows up at 1e-3 or more.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>

#include "core/hdf5.h"
#include "core/meta_gradient.h"
#include "core/meta_step.h"
#include "models/conv4.h"
#include "models/resnet12.h"
#include "tests/support/grad_check.h"

namespace mt {
namespace {

constexpr double kTol = 1e-9;

// The net a golden group describes: ResNet-12 (attributes model, widths, activation) or Conv-4
// (filters, pool).
std::unique_ptr<Sequential<double>> golden_net(const h5::File& f, const std::string& root,
                                               Shape input, int ways) {
  if (f.has_attr(root, "model") && f.get_attr_string(root, "model") == "resnet12") {
    ResNet12Spec spec;
    spec.input = input;
    spec.ways = ways;
    const auto widths = f.get_attr_ints(root, "widths");
    EXPECT_EQ(widths.size(), 4u);
    for (size_t i = 0; i < 4 && i < widths.size(); ++i)
      spec.widths[i] = static_cast<int>(widths[i]);
    const std::string act = f.get_attr_string(root, "activation");
    EXPECT_TRUE(act == "relu" || act == "leaky_relu") << act;
    spec.activation = act == "relu" ? Activation::kRelu : Activation::kLeakyRelu;
    EXPECT_EQ(f.get_attr_double(root, "leaky_slope"), kLeakySlope);
    return make_resnet12<double>(spec);
  }
  Conv4Spec spec;
  spec.input = input;
  spec.filters = static_cast<int>(f.get_attr_int(root, "filters"));
  spec.ways = ways;
  spec.pool = f.get_attr_string(root, "pool") == "max" ? Conv4Pool::kMax : Conv4Pool::kStride;
  return make_conv4<double>(spec);
}

// One group of a golden file: the net, θ, the inner loop and the tasks "0", "1", … in order.
struct Golden {
  h5::File f;
  std::string root, pre;  // "/" and "" for the file's root group, else "/<group>" twice
  std::unique_ptr<Sequential<double>> net;
  std::vector<double> theta;
  InnerLoop inner;
  std::vector<Episode<double>> episodes;

  std::string task(size_t t) const { return pre + "/tasks/" + std::to_string(t); }

  Golden(const std::string& file, const std::string& group)
      : f(h5::File::open_read(std::string(MT_SOURCE_DIR) + "/tests/golden/" + file)),
        root(group.empty() ? "/" : "/" + group),
        pre(group.empty() ? "" : "/" + group) {
    theta = f.read<double>(pre + "/flat/theta");
    std::vector<int64_t> shape;
    f.read<double>(pre + "/tasks/0/support_x", &shape);
    EXPECT_EQ(shape.size(), 4u);
    const Shape input{static_cast<int>(shape[1]), static_cast<int>(shape[2]),
                      static_cast<int>(shape[3])};
    const int ways = static_cast<int>(f.get_attr_int(root, "ways"));
    net = golden_net(f, root, input, ways);
    inner.steps = static_cast<int>(f.get_attr_int(root, "inner_steps"));
    inner.lr = f.get_attr_double(root, "inner_lr");
    const size_t tasks = f.list(pre + "/tasks").size();
    for (size_t t = 0; t < tasks; ++t) {
      Episode<double> ep;
      ep.ways = ways;
      auto load = [&](Batch<double>& b, const std::string& name) {
        std::vector<int64_t> s;
        b.x = f.read<double>(task(t) + "/" + name + "_x", &s);
        b.y = f.read<int32_t>(task(t) + "/" + name + "_y");
        b.item = input;
        b.n = static_cast<int>(s[0]);
      };
      load(ep.support, "support");
      load(ep.query, "query");
      episodes.push_back(std::move(ep));
    }
  }
};

void report(const std::string& what, double err) {
  std::printf("  %-40s rel err %.2e\n", what.c_str(), err);
}

// FOMAML and exact MAML of every task, and the parameter layout (flat order and names).
void check_golden(const std::string& file, const std::string& group) {
  const Golden g(file, group);
  ASSERT_FALSE(g.episodes.empty());
  ASSERT_EQ(g.net->layout().total(), static_cast<int64_t>(g.theta.size()));
  for (const TensorSpec& t : g.net->layout().tensors()) {
    const auto named = g.f.read<double>(g.pre + "/params/" + t.name);
    ASSERT_EQ(static_cast<int64_t>(named.size()), t.size()) << t.name;
    for (int64_t i = 0; i < t.size(); ++i) ASSERT_EQ(named[i], g.theta[t.offset + i]) << t.name;
  }
  MetaGradient<double> mg(*g.net, g.inner);
  auto scratch = mg.make_scratch();
  for (size_t t = 0; t < g.episodes.size(); ++t) {
    const std::string p = g.task(t);
    std::vector<double> g_fo(g.theta.size()), g_exact(g.theta.size());
    const TaskOutcome out =
        mg.compute(g.theta.data(), g.episodes[t], g_fo.data(), g_exact.data(), scratch);
    const double e_fo = testing::rel_err(g_fo, g.f.read<double>(p + "/g_fo"));
    const double e_exact = testing::rel_err(g_exact, g.f.read<double>(p + "/g_exact"));
    report(file + ":" + p + " g_fo", e_fo);
    report(file + ":" + p + " g_exact", e_exact);
    EXPECT_LT(e_fo, kTol) << p << " g_fo";
    EXPECT_LT(e_exact, kTol) << p << " g_exact";
    EXPECT_NEAR(out.query.loss, g.f.read_scalar<double>(p + "/query_loss"), 1e-12) << p;
  }
}

// UFOM through the meta-step: the group records q, the draw's seed and step, and per task ξ
// (whether it takes the exact path) and g_F + (ξ/q)(g_E − g_F). Our draw must give the same ξ,
// and the step's Σ_t g_t (combined as (1/q) g_E + (1 − 1/q) g_F) must match.
void check_golden_ufom(const std::string& file, const std::string& group) {
  const Golden g(file, group);
  ASSERT_TRUE(g.f.has_attr(g.root, "ufom_q")) << file << ":" << g.root << " has no UFOM record";
  const double q = g.f.get_attr_double(g.root, "ufom_q");
  const auto seed = static_cast<uint64_t>(g.f.get_attr_int(g.root, "ufom_seed"));
  const auto step = static_cast<uint64_t>(g.f.get_attr_int(g.root, "ufom_step"));
  MetaGradient<double> mg(*g.net, g.inner);
  MetaStep<double> ms(mg, {Algo::kUfom, seed, /*threads=*/1});
  std::vector<int64_t> ids(g.episodes.size());
  for (size_t t = 0; t < ids.size(); ++t) ids[t] = static_cast<int64_t>(t);
  MetaStepSums<double> sums;
  sums.reset(static_cast<int64_t>(g.theta.size()));
  ms.run(
      g.theta.data(), step, ids,
      [&](int64_t t, Episode<double>& ep) { ep = g.episodes[static_cast<size_t>(t)]; }, q, sums);
  std::vector<double> want(g.theta.size(), 0.0);
  int exact = 0;
  for (size_t t = 0; t < g.episodes.size(); ++t) {
    const bool xi = g.f.read_scalar<int32_t>(g.task(t) + "/ufom_exact") != 0;
    ASSERT_EQ(ms.task_has_exact(t), xi)
        << "task " << t << ": our UFOM draw (seed " << seed << ", step " << step
        << ") is not the one recorded in " << file;
    exact += xi;
    const auto g_t = g.f.read<double>(g.task(t) + "/g_ufom");
    for (size_t i = 0; i < want.size(); ++i) want[i] += g_t[i];
  }
  // Both paths are taken, or the check would not see the combination.
  EXPECT_GT(exact, 0);
  EXPECT_LT(exact, static_cast<int>(g.episodes.size()));
  const double e = testing::rel_err(sums.grad, want);
  report(file + ":" + g.root + " UFOM sum, q=" + std::to_string(q), e);
  EXPECT_LT(e, kTol);
}

TEST(Golden, Conv4MaxPoolMatchesJax) { check_golden("conv4_small.h5", ""); }
TEST(Golden, Conv4StrideMatchesJax) { check_golden("conv4_small.h5", "stride"); }
TEST(Golden, ResNet12LeakyReluMatchesJax) { check_golden("resnet12_small.h5", ""); }
TEST(Golden, ResNet12ReluMatchesJax) { check_golden("resnet12_small.h5", "relu"); }
TEST(Golden, ResNet12UfomMatchesJax) { check_golden_ufom("resnet12_small.h5", ""); }

}  // namespace
}  // namespace mt
