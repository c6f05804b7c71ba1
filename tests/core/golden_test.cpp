// The whole meta-step against an independent implementation: tests/golden/conv4_small.h5 and
// resnet12_small.h5 hold θ, episodes and the FOMAML / exact MAML gradients computed by JAX
// (tests/golden/make_golden.py, float64 autodiff through the inner loop), and for ResNet-12 also
// UFOM's at a recorded coin outcome. Our float64 path must agree to 1e-9 relative: both are
// exact float64 computations of the same function that differ only in summation order (≈1e-15
// per operation, times the conditioning of the inner loop: JAX's own two exact methods differ by
// up to 3e-11 on these files), while any modelling difference (BN ε, pooling, layout, a shortcut,
// an activation's slope, a missing Hessian term) shows up at 1e-3 or more.
// family_small.h5: the same for Meta-SGD, LSLR + multi-step loss, ANIL, BOIL (ψ = θ ⊕ rates).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <utility>

#include "core/batched_model_cpu.h"
#include "core/hdf5.h"
#include "core/meta_engine.h"
#include "core/meta_gradient.h"
#include "core/meta_params.h"
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

// The algorithm family's choices a family_small.h5 group records (in the config's words).
InnerLoop family_loop(const Golden& g) {
  InnerLoop inner = g.inner;
  const std::string rates = g.f.get_attr_string(g.root, "rates");
  const std::string adapt = g.f.get_attr_string(g.root, "adapt");
  EXPECT_TRUE(rates == "fixed" || rates == "per_param" || rates == "per_layer_step") << rates;
  EXPECT_TRUE(adapt == "all" || adapt == "head" || adapt == "body") << adapt;
  inner.rates = rates == "per_param"        ? Rates::kPerParam
                : rates == "per_layer_step" ? Rates::kPerLayerStep
                                            : Rates::kFixed;
  inner.adapt = adapt == "head" ? Adapt::kHead : adapt == "body" ? Adapt::kBody : Adapt::kAll;
  inner.multi_step_loss = g.f.get_attr_int(g.root, "multi_step_loss") != 0;
  inner.msl_anneal_steps = g.f.get_attr_int(g.root, "msl_anneal_steps");
  return inner;
}

// ψ in our meta_layout: its size, θ first, and every tensor (rates "lr.*" / "lslr.*" included)
// under its name in params/; the multi-step loss's weights as the file used them.
void expect_family_layout(const Golden& g, const ParamLayout& meta, const InnerLoop& inner,
                          const std::vector<double>& psi) {
  ASSERT_EQ(meta.total(), static_cast<int64_t>(psi.size()));
  ASSERT_TRUE(std::equal(g.theta.begin(), g.theta.end(), psi.begin()));
  for (const TensorSpec& t : meta.tensors()) {
    std::vector<int64_t> shape;
    const auto named = g.f.read<double>(g.pre + "/params/" + t.name, &shape);
    EXPECT_EQ(shape, t.shape) << t.name;
    ASSERT_EQ(static_cast<int64_t>(named.size()), t.size()) << t.name;
    for (int64_t i = 0; i < t.size(); ++i) ASSERT_EQ(named[i], psi[t.offset + i]) << t.name;
  }
  if (inner.multi_step_loss)
    EXPECT_EQ(msl_weights(inner.steps, 0, inner.msl_anneal_steps),
              g.f.read<double>(g.pre + "/msl_weights"));
}

// g_got against g_want over ψ, its θ part and its rate part (an error in the rates would hide
// in θ's larger norm), each at kTol.
void expect_parts(const std::string& what, const std::vector<double>& got,
                  const std::vector<double>& want, size_t d) {
  using V = std::vector<double>;
  std::vector<std::pair<std::string, double>> errs = {
      {"psi", testing::rel_err(got, want)},
      {"theta",
       testing::rel_err(V(got.begin(), got.begin() + d), V(want.begin(), want.begin() + d))}};
  if (got.size() > d)
    errs.emplace_back(
        "rates", testing::rel_err(V(got.begin() + d, got.end()), V(want.begin() + d, want.end())));
  for (const auto& [part, e] : errs) {
    report(what + " " + part, e);
    EXPECT_LT(e, kTol) << what << " " << part;
  }
}

// MetaEngine<double> at ψ over one CPU batch of all of g's tasks, every task exact: per task
// ψ's first-order and exact gradients and the query loss at φ_r.
struct FamilyRun {
  std::vector<std::vector<double>> fo, exact;
  std::vector<LossStats> query;
};
FamilyRun run_family(const Golden& g, const InnerLoop& inner, const std::vector<double>& psi) {
  const int tasks = static_cast<int>(g.episodes.size());
  CpuBatchedModel<double> model(*g.net, 1, tasks);
  MetaEngine<double> engine(model, inner);
  EXPECT_NO_FATAL_FAILURE(expect_family_layout(g, engine.layout(), inner, psi));
  auto batch = model.make_batch();
  std::vector<const Episode<double>*> eps;
  std::vector<int> exact;
  for (int t = 0; t < tasks; ++t) {
    eps.push_back(&g.episodes[static_cast<size_t>(t)]);
    exact.push_back(t);
  }
  model.load(eps, *batch);
  const BatchedLayout l(engine.layout(), tasks);
  std::vector<double> fo(l.total()), ex(l.total());
  FamilyRun run{{}, {}, std::vector<LossStats>(eps.size())};
  engine.run(psi.data(), *batch, exact, fo.data(), ex.data(), run.query.data());
  for (int t = 0; t < tasks; ++t) {
    run.fo.emplace_back(psi.size());
    run.exact.emplace_back(psi.size());
    host_vec_ops<double>().gather(l, fo.data(), {t}, run.fo.back().data());
    host_vec_ops<double>().gather(l, ex.data(), {t}, run.exact.back().data());
  }
  return run;
}

// One algorithm of the family (the group's recorded choices must be the test's) at ψ =
// flat/psi, against JAX's g_exact, g_fo and query loss per task.
void check_family(const std::string& group, Rates rates, Adapt adapt, bool msl) {
  const Golden g("family_small.h5", group);
  const InnerLoop inner = family_loop(g);
  ASSERT_EQ(inner.rates, rates);
  ASSERT_EQ(inner.adapt, adapt);
  ASSERT_EQ(inner.multi_step_loss, msl);
  const std::vector<double> psi = g.f.read<double>(g.pre + "/flat/psi");
  const FamilyRun run = run_family(g, inner, psi);
  for (size_t t = 0; t < g.episodes.size(); ++t) {
    const std::string p = g.task(t);
    expect_parts(p + " g_exact", run.exact[t], g.f.read<double>(p + "/g_exact"), g.theta.size());
    expect_parts(p + " g_fo", run.fo[t], g.f.read<double>(p + "/g_fo"), g.theta.size());
    EXPECT_NEAR(run.query[t].loss, g.f.read_scalar<double>(p + "/query_loss"), 1e-12) << p;
  }
}

TEST(Golden, Conv4MaxPoolMatchesJax) { check_golden("conv4_small.h5", ""); }
TEST(Golden, Conv4StrideMatchesJax) { check_golden("conv4_small.h5", "stride"); }
TEST(Golden, ResNet12LeakyReluMatchesJax) { check_golden("resnet12_small.h5", ""); }
TEST(Golden, ResNet12ReluMatchesJax) { check_golden("resnet12_small.h5", "relu"); }
TEST(Golden, ResNet12UfomMatchesJax) { check_golden_ufom("resnet12_small.h5", ""); }
TEST(Golden, MetaSgdMatchesJax) { check_family("metasgd", Rates::kPerParam, Adapt::kAll, false); }
TEST(Golden, LslrMultiStepLossMatchesJax) {
  check_family("lslr_msl", Rates::kPerLayerStep, Adapt::kAll, true);
}
TEST(Golden, AnilMatchesJax) { check_family("anil", Rates::kFixed, Adapt::kHead, false); }
TEST(Golden, BoilMatchesJax) { check_family("boil", Rates::kFixed, Adapt::kBody, false); }
TEST(Golden, MetaSgdAnilMatchesJax) {
  check_family("metasgd_anil", Rates::kPerParam, Adapt::kHead, false);
}

}  // namespace
}  // namespace mt
