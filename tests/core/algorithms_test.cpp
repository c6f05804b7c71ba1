// The algorithm family through the engine's seam (core/meta_engine.h), float64: Meta-SGD and
// LSLR (θ and rate gradients), the multi-step loss, ANIL and BOIL masks, each against central
// differences of the meta-objective computed here by a direct inner loop (not the engine);
// their first-order gradients against the same loop's stored gradients; iMAML's conjugate
// gradients against a dense solve; Reptile bit for bit; every trajectory mode giving the same
// bits; and the gradient-evaluation counts against a model that counts its calls.
#include <gtest/gtest.h>

#include <cmath>

#include "core/batched_model_cpu.h"
#include "core/meta_engine.h"
#include "core/meta_params.h"
#include "models/batch_norm.h"
#include "tests/support/episodes.h"
#include "tests/support/grad_check.h"

namespace mt {
namespace {

using testing::Vec;

// Linear body → batch norm → linear head: smooth, with curvature in body and head, and a head
// the masks can tell apart ("head.*").
std::unique_ptr<Sequential<double>> small_net() {
  const Shape in{6, 1, 1}, hidden{5, 1, 1};
  auto net = std::make_unique<Sequential<double>>(in, 3);
  net->add("body", std::make_unique<Linear<double>>(in, 5));
  net->add("norm", std::make_unique<BatchNorm<double>>(hidden));
  net->add("head", std::make_unique<Linear<double>>(hidden, 3));
  return net;
}
Episode<double> episode(uint64_t task) {
  return testing::gaussian_episode<double>(6, 3, 2, 3, 11, task);
}

// ψ = θ (initialised) then the rates, spread around α so that every rate differs.
Vec initial_psi(const Sequential<double>& net, const InnerLoop& inner) {
  const ParamLayout meta = meta_layout(net.layout(), inner);
  Vec psi(meta.total());
  net.init(psi.data(), 3);
  init_rates(net.layout(), inner, psi.data());
  for (int64_t i = net.layout().total(); i < meta.total(); ++i)
    psi[i] *= 1.0 + 0.3 * std::sin(static_cast<double>(i));
  return psi;
}

// The rate of element e (θ index) at step j, read from ψ directly.
double rate(const Sequential<double>& net, const InnerLoop& inner, const Vec& psi, int64_t e,
            int j) {
  const TensorSpec* t = net.layout().at(e);
  if (!adapts(inner, t->name)) return 0;
  if (inner.rates == Rates::kFixed) return inner.lr;
  const ParamLayout meta = meta_layout(net.layout(), inner);
  if (inner.rates == Rates::kPerParam)
    return psi[meta.find("lr." + t->name)->offset + (e - t->offset)];
  return psi[meta.find("lslr." + t->name)->offset + j];
}

// The direct inner loop: φ_j for j = 0 … r, support gradients g_j, query gradients q_j.
struct Trajectory {
  std::vector<Vec> phi, g, q;
  std::vector<double> query_loss;
};
Trajectory unroll(const Sequential<double>& net, const InnerLoop& inner, const Vec& psi,
                  const Episode<double>& ep) {
  const int64_t d = net.layout().total();
  auto ws = net.make_workspace();
  Trajectory tr;
  Vec phi(psi.begin(), psi.begin() + d), grad(d);
  for (int j = 0; j <= inner.steps; ++j) {
    tr.phi.push_back(phi);
    Vec q(d);
    tr.query_loss.push_back(net.loss_grad(phi.data(), ep.query, q.data(), *ws).loss);
    tr.q.push_back(q);
    if (j == inner.steps) break;
    net.loss_grad(phi.data(), ep.support, grad.data(), *ws);
    for (int64_t e = 0; e < d; ++e)
      grad[e] += inner.method == Method::kImplicit ? inner.prox * (phi[e] - psi[e]) : 0.0;
    tr.g.push_back(grad);
    for (int64_t e = 0; e < d; ++e) phi[e] -= rate(net, inner, psi, e, j) * grad[e];
  }
  return tr;
}

// The meta-objective Σ_j w_j L_Q(φ_j) (w = the engine's weights at outer step 0).
double objective(const Sequential<double>& net, const InnerLoop& inner, const Vec& psi,
                 const Episode<double>& ep) {
  const Trajectory tr = unroll(net, inner, psi, ep);
  if (!inner.multi_step_loss) return tr.query_loss.back();
  const std::vector<double> w = msl_weights(inner.steps, 0, inner.msl_anneal_steps);
  double f = 0;
  for (int j = 1; j <= inner.steps; ++j) f += w[j - 1] * tr.query_loss[j];
  return f;
}

// The engine on the CPU backend, one task: {first-order, exact} gradients of ψ.
struct Grads {
  Vec fo, exact;
};
Grads engine_grads(const Sequential<double>& net, const InnerLoop& inner, const Vec& psi,
                   const Episode<double>& ep) {
  CpuBatchedModel<double> model(net, 1, 4);
  MetaEngine<double> engine(model, inner);
  auto batch = model.make_batch();
  model.load({&ep}, *batch);
  Grads g{Vec(psi.size()), Vec(psi.size())};
  LossStats q;
  engine.run(psi.data(), *batch, {0}, g.fo.data(), g.exact.data(), &q);
  return g;
}

InnerLoop loop(Rates rates, Adapt adapt, bool msl, int steps = 3) {
  InnerLoop inner;
  inner.steps = steps;
  inner.lr = 0.3;
  inner.rates = rates;
  inner.adapt = adapt;
  inner.multi_step_loss = msl;
  inner.msl_anneal_steps = 10;
  return inner;
}

// The exact gradient of ψ against central differences of the direct objective. Tolerance
// 1e-6 relative, the budget of tests/support/grad_check.h (step 1e-5: truncation ~1e-10,
// rounding ~1e-16/1e-5 relative); a missing term (a rate, a mask, a weight) is O(1e-2) or more.
void expect_exact_matches_fd(const InnerLoop& inner) {
  const auto net = small_net();
  const Vec psi = initial_psi(*net, inner);
  const auto ep = episode(1);
  const Grads g = engine_grads(*net, inner, psi, ep);
  const Vec fd =
      testing::fd_gradient([&](const Vec& p) { return objective(*net, inner, p, ep); }, psi);
  EXPECT_LT(testing::rel_err(g.exact, fd), 1e-6);
  // The rates' part on its own (an error there would hide in θ's larger norm).
  const int64_t d = net->layout().total();
  if (psi.size() > static_cast<size_t>(d))
    EXPECT_LT(
        testing::rel_err(Vec(g.exact.begin() + d, g.exact.end()), Vec(fd.begin() + d, fd.end())),
        1e-6);
  EXPECT_GT(testing::rel_err(g.fo, fd), 1e-3);  // first order differs: the check is not vacuous
}

TEST(Algorithms, MetaSgdExactGradientMatchesFiniteDifferences) {
  expect_exact_matches_fd(loop(Rates::kPerParam, Adapt::kAll, false));
}
TEST(Algorithms, LslrWithMultiStepLossMatchesFiniteDifferences) {
  expect_exact_matches_fd(loop(Rates::kPerLayerStep, Adapt::kAll, true));
}
TEST(Algorithms, MultiStepLossWithAFixedRateMatchesFiniteDifferences) {
  expect_exact_matches_fd(loop(Rates::kFixed, Adapt::kAll, true));
}
TEST(Algorithms, AnilAndBoilMatchFiniteDifferences) {
  expect_exact_matches_fd(loop(Rates::kFixed, Adapt::kHead, false));
  expect_exact_matches_fd(loop(Rates::kFixed, Adapt::kBody, false));
  expect_exact_matches_fd(loop(Rates::kPerParam, Adapt::kHead, true));
  expect_exact_matches_fd(loop(Rates::kPerLayerStep, Adapt::kBody, false));
}

// First order: no Hessian terms, λ_{j+1} = Σ_{i>j} w_i q_i; the θ part Σ_j w_j q_j and the
// rate gradients −g_j ⊙ λ_{j+1}, computed here from the direct loop's stored gradients.
TEST(Algorithms, FirstOrderGradientsAreTheStoredGradientsSums) {
  for (const InnerLoop& inner :
       {loop(Rates::kPerParam, Adapt::kAll, true), loop(Rates::kPerLayerStep, Adapt::kHead, true),
        loop(Rates::kFixed, Adapt::kAll, true)}) {
    const auto net = small_net();
    const Vec psi = initial_psi(*net, inner);
    const auto ep = episode(2);
    const Trajectory tr = unroll(*net, inner, psi, ep);
    const int r = inner.steps;
    const int64_t d = net->layout().total();
    const std::vector<double> w = msl_weights(r, 0, inner.msl_anneal_steps);
    const ParamLayout meta = meta_layout(net->layout(), inner);
    Vec want(meta.total(), 0.0), lambda(d, 0.0);
    for (int j = r - 1; j >= 0; --j) {
      for (int64_t e = 0; e < d; ++e) lambda[e] += w[j] * tr.q[j + 1][e];  // λ_{j+1}
      for (int64_t e = 0; e < d; ++e) {
        const TensorSpec* t = net->layout().at(e);
        if (!adapts(inner, t->name) || inner.rates == Rates::kFixed) continue;
        const double v = -tr.g[j][e] * lambda[e];
        if (inner.rates == Rates::kPerParam)
          want[meta.find("lr." + t->name)->offset + (e - t->offset)] += v;
        else
          want[meta.find("lslr." + t->name)->offset + j] += v;
      }
    }
    std::copy(lambda.begin(), lambda.end(), want.begin());
    EXPECT_LT(testing::rel_err(engine_grads(*net, inner, psi, ep).fo, want), 1e-12);
  }
}

// Meta-SGD with every rate equal to α is MAML: the same θ gradient to rounding.
TEST(Algorithms, MetaSgdAtUniformRatesGivesMamlsThetaGradient) {
  const auto net = small_net();
  const InnerLoop sgd = loop(Rates::kPerParam, Adapt::kAll, false),
                  maml = loop(Rates::kFixed, Adapt::kAll, false);
  Vec psi(meta_layout(net->layout(), sgd).total());
  net->init(psi.data(), 3);
  init_rates(net->layout(), sgd, psi.data());
  const auto ep = episode(3);
  const Grads a = engine_grads(*net, sgd, psi, ep);
  const Vec theta(psi.begin(), psi.begin() + net->layout().total());
  const Grads b = engine_grads(*net, maml, theta, ep);
  EXPECT_LT(testing::rel_err(Vec(a.exact.begin(), a.exact.begin() + theta.size()), b.exact), 1e-13);
}

// Gaussian elimination with partial pivoting: x = A⁻¹ b (A n×n, row-major).
Vec dense_solve(std::vector<double> A, Vec b) {
  const size_t n = b.size();
  for (size_t c = 0; c < n; ++c) {
    size_t p = c;
    for (size_t r = c + 1; r < n; ++r)
      if (std::abs(A[r * n + c]) > std::abs(A[p * n + c])) p = r;
    for (size_t k = 0; k < n; ++k) std::swap(A[c * n + k], A[p * n + k]);
    std::swap(b[c], b[p]);
    for (size_t r = c + 1; r < n; ++r) {
      const double f = A[r * n + c] / A[c * n + c];
      for (size_t k = c; k < n; ++k) A[r * n + k] -= f * A[c * n + k];
      b[r] -= f * b[c];
    }
  }
  Vec x(n);
  for (size_t i = n; i-- > 0;) {
    double s = b[i];
    for (size_t k = i + 1; k < n; ++k) s -= A[i * n + k] * x[k];
    x[i] = s / A[i * n + i];
  }
  return x;
}

// iMAML: with as many CG steps as parameters the solve is exact for the SPD A = I + H/μ (softmax
// regression: H ⪰ 0), so the engine's x equals the dense solution to rounding (1e-9: CG in
// float64 over 15 steps); with 2 steps it is an approximation (farther than 1e-6).
TEST(Algorithms, ImamlConjugateGradientsMatchADenseSolve) {
  const auto net = testing::softmax_regression<double>(4, 3);
  const int64_t d = net->layout().total();
  InnerLoop inner = loop(Rates::kFixed, Adapt::kAll, false, 4);
  inner.method = Method::kImplicit;
  inner.prox = 0.5;
  inner.cg_steps = static_cast<int>(d);
  Vec theta(d);
  net->init(theta.data(), 5);
  const auto ep = testing::gaussian_episode<double>(4, 3, 2, 3, 11, 4);
  const Trajectory tr = unroll(*net, inner, theta, ep);
  const Vec& phi = tr.phi.back();
  auto ws = net->make_workspace();
  std::vector<double> A(static_cast<size_t>(d * d));
  Vec e(d), grad(d), Hv(d);
  for (int64_t c = 0; c < d; ++c) {
    std::fill(e.begin(), e.end(), 0.0);
    e[c] = 1;
    net->hvp(phi.data(), ep.support, e.data(), grad.data(), Hv.data(), *ws);
    for (int64_t r = 0; r < d; ++r) A[r * d + c] = (r == c) + Hv[r] / inner.prox;
  }
  const Vec want = dense_solve(A, tr.q.back());
  const Grads g = engine_grads(*net, inner, theta, ep);
  EXPECT_LT(testing::rel_err(g.exact, want), 1e-9);
  EXPECT_LT(testing::rel_err(g.fo, tr.q.back()), 1e-15);  // first order: ∇L_Q(φ_r)
  inner.cg_steps = 2;
  EXPECT_GT(testing::rel_err(engine_grads(*net, inner, theta, ep).exact, want), 1e-6);
}

// Reptile: θ − φ_r, bit for bit the direct loop's (each step one fused multiply-add, as axpy).
TEST(Algorithms, ReptileIsThetaMinusTheAdaptedParameters) {
  const auto net = small_net();
  InnerLoop inner = loop(Rates::kFixed, Adapt::kAll, false, 4);
  inner.method = Method::kReptile;
  const int64_t d = net->layout().total();
  Vec theta(d);
  net->init(theta.data(), 9);
  const auto ep = episode(5);
  auto ws = net->make_workspace();
  Vec phi(theta), grad(d), want(d);
  for (int j = 0; j < inner.steps; ++j) {
    net->loss_grad(phi.data(), ep.support, grad.data(), *ws);
    for (int64_t e = 0; e < d; ++e) phi[e] = std::fma(-inner.lr, grad[e], phi[e]);
  }
  for (int64_t e = 0; e < d; ++e) want[e] = theta[e] - phi[e];
  CpuBatchedModel<double> model(*net, 1, 4);
  MetaEngine<double> engine(model, inner);
  auto batch = model.make_batch();
  model.load({&ep}, *batch);
  Vec g(d);
  LossStats q;
  engine.run(theta.data(), *batch, {}, g.data(), nullptr, &q);
  EXPECT_EQ(g, want);
  EXPECT_GT(q.loss, 0);
}

// store, recompute and checkpoint:2 rebuild the same φ_j: the same bits, first order and exact.
TEST(Algorithms, TrajectoryModesGiveTheSameBits) {
  for (InnerLoop inner : {loop(Rates::kPerParam, Adapt::kAll, true, 5),
                          loop(Rates::kPerLayerStep, Adapt::kBody, true, 5)}) {
    const auto net = small_net();
    const Vec psi = initial_psi(*net, inner);
    const auto ep = episode(6);
    const Grads store = engine_grads(*net, inner, psi, ep);
    inner.trajectory = {TrajectoryMode::kRecompute, 1};
    const Grads recompute = engine_grads(*net, inner, psi, ep);
    inner.trajectory = {TrajectoryMode::kCheckpoint, 2};
    const Grads checkpoint = engine_grads(*net, inner, psi, ep);
    EXPECT_EQ(store.exact, recompute.exact);
    EXPECT_EQ(store.exact, checkpoint.exact);
    EXPECT_EQ(store.fo, recompute.fo);
    EXPECT_EQ(store.fo, checkpoint.fo);
  }
}

// A batch of 3 tasks gives each task the bits it gets alone (rates broadcast, LSLR's per-task
// sums, CG's per-task scalars).
TEST(Algorithms, EveryTaskOfABatchHasTheBitsItHasAlone) {
  InnerLoop imaml = loop(Rates::kFixed, Adapt::kAll, false, 2);
  imaml.method = Method::kImplicit;
  for (const InnerLoop& inner : {loop(Rates::kPerParam, Adapt::kAll, true),
                                 loop(Rates::kPerLayerStep, Adapt::kHead, false), imaml}) {
    const auto net = small_net();
    const Vec psi = initial_psi(*net, inner);
    const std::vector<Episode<double>> eps = {episode(7), episode(8), episode(9)};
    CpuBatchedModel<double> model(*net, 2, 4);
    MetaEngine<double> engine(model, inner);
    auto batch = model.make_batch();
    model.load({&eps[0], &eps[1], &eps[2]}, *batch);
    const BatchedLayout l(engine.layout(), 3);
    Vec fo(l.total()), exact(l.total());
    std::vector<LossStats> q(3);
    engine.run(psi.data(), *batch, {0, 1, 2}, fo.data(), exact.data(), q.data());
    for (int t = 0; t < 3; ++t) {
      const Grads alone = engine_grads(*net, inner, psi, eps[t]);
      Vec got_fo(psi.size()), got_exact(psi.size());
      host_vec_ops<double>().gather(l, fo.data(), {t}, got_fo.data());
      host_vec_ops<double>().gather(l, exact.data(), {t}, got_exact.data());
      EXPECT_EQ(got_fo, alone.fo) << "task " << t;
      EXPECT_EQ(got_exact, alone.exact) << "task " << t;
    }
  }
}

// The counts that budgets and adaptive UFOM use equal the calls the engine makes.
class CountingModel final : public BatchedModel<double> {
 public:
  explicit CountingModel(BatchedModel<double>& m) : m_(m) {}
  const ParamLayout& layout() const override { return m_.layout(); }
  const VecOps<double>& ops() const override { return m_.ops(); }
  int max_tasks() const override { return m_.max_tasks(); }
  std::string describe() const override { return m_.describe(); }
  std::unique_ptr<TaskBatch> make_batch() const override { return m_.make_batch(); }
  void load(const std::vector<const Episode<double>*>& e, TaskBatch& b) override { m_.load(e, b); }
  void gather(const TaskBatch& f, const std::vector<int>& t, TaskBatch& to) override {
    m_.gather(f, t, to);
  }
  void loss_grad(const TaskBatch& b, Split s, const double* phi, double* g,
                 LossStats* st) override {
    if (g) calls += b.tasks();
    m_.loss_grad(b, s, phi, g, st);
  }
  void hvp(const TaskBatch& b, Split s, const double* phi, const double* v, double* Hv,
           LossStats* st) override {
    calls += b.tasks();
    m_.hvp(b, s, phi, v, Hv, st);
  }
  // With keeps, ANIL's kept features pass through (counted apart); without, the engine runs
  // every pass in full.
  bool keep_features(const TaskBatch& b, Split s, const double* phi, int tensor) override {
    return keeps && m_.keep_features(b, s, phi, tensor);
  }
  void loss_grad_kept(const TaskBatch& b, Split s, const double* phi, double* g,
                      LossStats* st) override {
    kept_calls += b.tasks();
    m_.loss_grad_kept(b, s, phi, g, st);
  }
  int64_t calls = 0, kept_calls = 0;
  bool keeps = false;

 private:
  BatchedModel<double>& m_;
};

TEST(Algorithms, GradientEvaluationCountsAreTheCallsMade) {
  InnerLoop imaml = loop(Rates::kFixed, Adapt::kAll, false, 3);
  imaml.method = Method::kImplicit;
  imaml.cg_steps = 4;
  std::vector<InnerLoop> loops = {loop(Rates::kPerParam, Adapt::kAll, true, 5),
                                  loop(Rates::kPerLayerStep, Adapt::kHead, false, 4),
                                  loop(Rates::kFixed, Adapt::kAll, true, 4), imaml};
  InnerLoop truncated = loop(Rates::kPerParam, Adapt::kAll, false, 5);
  truncated.truncate = 2;
  truncated.trajectory = {TrajectoryMode::kCheckpoint, 2};
  loops.push_back(truncated);
  for (const InnerLoop& inner : loops) {
    const auto net = small_net();
    const Vec psi = initial_psi(*net, inner);
    const auto ep = episode(10);
    CpuBatchedModel<double> cpu(*net, 1, 4);
    CountingModel model(cpu);
    MetaEngine<double> engine(model, inner);
    auto batch = model.make_batch();
    model.load({&ep}, *batch);
    Vec g_fo(psi.size()), g_exact(psi.size());
    LossStats q;
    engine.run(psi.data(), *batch, {}, g_fo.data(), nullptr, &q);
    EXPECT_EQ(model.calls, first_order_cost(inner));
    model.calls = 0;
    engine.run(psi.data(), *batch, {0}, g_fo.data(), g_exact.data(), &q);
    EXPECT_EQ(model.calls, first_order_cost(inner) + exact_path_cost(inner));
  }
}

// ANIL's inner steps run from the body's kept output (BatchedModel::keep_features): the same
// bits as full passes for every ANIL variant, and every support pass of an inner step is one of
// them (the full passes that remain are the query gradients and the Hessian-vector products).
TEST(Algorithms, AnilInnerStepsRunFromKeptFeaturesWithTheSameBits) {
  InnerLoop imaml = loop(Rates::kFixed, Adapt::kHead, false, 3);
  imaml.method = Method::kImplicit;
  imaml.cg_steps = 3;
  InnerLoop reptile = loop(Rates::kFixed, Adapt::kHead, false, 3);
  reptile.method = Method::kReptile;
  InnerLoop checkpointed = loop(Rates::kFixed, Adapt::kHead, false, 5);
  checkpointed.trajectory = {TrajectoryMode::kCheckpoint, 2};
  const std::vector<InnerLoop> loops = {loop(Rates::kFixed, Adapt::kHead, false, 4),
                                        loop(Rates::kPerParam, Adapt::kHead, false, 3),
                                        loop(Rates::kPerLayerStep, Adapt::kHead, true, 4),
                                        imaml,
                                        reptile,
                                        checkpointed};
  const auto net = small_net();
  const std::vector<Episode<double>> eps = {episode(4), episode(5), episode(6)};
  for (const InnerLoop& inner : loops) {
    const Vec psi = initial_psi(*net, inner);
    const int64_t n = 3 * static_cast<int64_t>(psi.size());
    const std::vector<int> exact =
        inner.method == Method::kReptile ? std::vector<int>{} : std::vector<int>{0, 2};
    struct Out {
      Vec fo, exact;
      std::vector<LossStats> q, eval;
      int64_t calls, kept_calls;
    };
    auto run = [&](bool keeps) {
      CpuBatchedModel<double> cpu(*net, 2, 4);
      CountingModel model(cpu);
      model.keeps = keeps;
      MetaEngine<double> engine(model, inner);
      auto batch = model.make_batch();
      model.load({&eps[0], &eps[1], &eps[2]}, *batch);
      Out o{Vec(n), Vec(n), std::vector<LossStats>(3), std::vector<LossStats>(3), 0, 0};
      engine.run(psi.data(), *batch, exact, o.fo.data(), exact.empty() ? nullptr : o.exact.data(),
                 o.q.data());
      engine.adapt_and_evaluate(psi.data(), *batch, inner.steps + 2, o.eval.data());
      o.calls = model.calls;
      o.kept_calls = model.kept_calls;
      return o;
    };
    const Out full = run(false), kept = run(true);
    EXPECT_EQ(full.kept_calls, 0);
    EXPECT_GT(kept.kept_calls, 0);
    EXPECT_EQ(kept.calls + kept.kept_calls, full.calls) << "a pass ran in full that need not";
    EXPECT_EQ(kept.fo, full.fo);
    EXPECT_EQ(kept.exact, full.exact);
    for (int t = 0; t < 3; ++t) {
      EXPECT_EQ(kept.q[t].loss, full.q[t].loss) << "task " << t;
      EXPECT_EQ(kept.eval[t].loss, full.eval[t].loss) << "task " << t;
      EXPECT_EQ(kept.eval[t].acc, full.eval[t].acc) << "task " << t;
    }
  }
}

}  // namespace
}  // namespace mt
