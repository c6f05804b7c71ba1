// The whole meta-step against an independent implementation: tests/golden/conv4_small.h5 holds
// θ, episodes and the FOMAML / exact MAML gradients computed by JAX (tests/golden/make_golden.py,
// float64 autodiff through the inner loop). Our float64 path must agree to 1e-9 relative:
// both are exact float64 computations of the same function that differ only in summation
// order (≈1e-15 per operation), while any modelling difference (BN ε, pooling, layout, a
// missing Hessian term) shows up at 1e-3 or more.
#include <gtest/gtest.h>

#include "core/hdf5.h"
#include "core/meta_gradient.h"
#include "models/conv4.h"
#include "tests/support/grad_check.h"

namespace mt {
namespace {

void check_golden(const std::string& group) {
  const auto f = h5::File::open_read(std::string(MT_SOURCE_DIR) + "/tests/golden/conv4_small.h5");
  const std::string root = group.empty() ? "/" : "/" + group;
  const std::string pre = group.empty() ? "" : "/" + group;
  const std::string pool = f.get_attr_string(root, "pool");
  std::vector<int64_t> shape;
  const auto theta = f.read<double>(pre + "/flat/theta");
  const auto x0 = f.read<double>(pre + "/tasks/0/support_x", &shape);
  ASSERT_EQ(shape.size(), 4u);
  Conv4Spec spec;
  spec.input = {static_cast<int>(shape[1]), static_cast<int>(shape[2]), static_cast<int>(shape[3])};
  spec.filters = static_cast<int>(f.get_attr_int(root, "filters"));
  spec.ways = static_cast<int>(f.get_attr_int(root, "ways"));
  spec.pool = pool == "max" ? Conv4Pool::kMax : Conv4Pool::kStride;
  auto net = make_conv4<double>(spec);
  ASSERT_EQ(net->layout().total(), static_cast<int64_t>(theta.size()));
  // The flat order must match the named tensors too.
  for (const TensorSpec& t : net->layout().tensors()) {
    const auto named = f.read<double>(pre + "/params/" + t.name);
    ASSERT_EQ(static_cast<int64_t>(named.size()), t.size()) << t.name;
    for (int64_t i = 0; i < t.size(); ++i) ASSERT_EQ(named[i], theta[t.offset + i]) << t.name;
  }
  InnerLoop inner;
  inner.steps = static_cast<int>(f.get_attr_int(root, "inner_steps"));
  inner.lr = f.get_attr_double(root, "inner_lr");
  MetaGradient<double> mg(*net, inner);
  auto scratch = mg.make_scratch();

  const auto tasks = f.list(pre + "/tasks");
  ASSERT_FALSE(tasks.empty());
  for (const std::string& t : tasks) {
    const std::string p = pre + "/tasks/" + t;
    Episode<double> ep;
    ep.ways = spec.ways;
    auto load = [&](Batch<double>& b, const std::string& name) {
      std::vector<int64_t> s;
      b.x = f.read<double>(p + "/" + name + "_x", &s);
      b.y = f.read<int32_t>(p + "/" + name + "_y");
      b.item = spec.input;
      b.n = static_cast<int>(s[0]);
    };
    load(ep.support, "support");
    load(ep.query, "query");
    std::vector<double> g_fo(theta.size()), g_exact(theta.size());
    const TaskOutcome out = mg.compute(theta.data(), ep, g_fo.data(), g_exact.data(), scratch);
    EXPECT_LT(testing::rel_err(g_fo, f.read<double>(p + "/g_fo")), 1e-9) << p << " g_fo";
    EXPECT_LT(testing::rel_err(g_exact, f.read<double>(p + "/g_exact")), 1e-9) << p << " g_exact";
    EXPECT_NEAR(out.query.loss, f.read_scalar<double>(p + "/query_loss"), 1e-12) << p;
  }
}

TEST(Golden, Conv4MaxPoolMatchesJax) { check_golden(""); }
TEST(Golden, Conv4StrideMatchesJax) { check_golden("stride"); }

}  // namespace
}  // namespace mt
