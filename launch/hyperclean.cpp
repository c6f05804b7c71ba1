// Data hyper-cleaning (launch/hyperclean.h): the data set built from an episode store, the
// bilevel problem's exact derivatives for the linear softmax classifier, and the baselines.
#include "launch/hyperclean.h"

#include <algorithm>
#include <cmath>

#include "core/blas.h"
#include "core/check.h"
#include "core/rng.h"
#include "data/episode_sampler.h"

namespace mt {

namespace {

double sigmoid(double t) { return 1.0 / (1.0 + std::exp(-t)); }

// Key of the RNG stream that picks classes, splits images and corrupts labels.
constexpr uint64_t kHypercleanKey = 0x6879706572636c6eull;  // "hypercln"

}  // namespace

HypercleanData make_hyperclean_data(const StoreContents& store, const HypercleanSpec& spec) {
  const auto it = store.splits.find(spec.split);
  MT_REQUIRE(it != store.splits.end(), "hyperclean: the store has no split '", spec.split, "'");
  const std::vector<int32_t>& pool = it->second;
  MT_REQUIRE(spec.classes >= 2 && spec.classes <= static_cast<int>(pool.size()),
             "slbamm.classes = ", spec.classes, ": the split '", spec.split, "' has ", pool.size(),
             " classes; choose 2..", pool.size());
  const int per_class = spec.train_per_class + spec.val_per_class + spec.test_per_class;
  MT_REQUIRE(spec.train_per_class >= 1 && spec.val_per_class >= 1 && spec.test_per_class >= 1,
             "slbamm.{train,val,test}_per_class must each be >= 1");
  MT_REQUIRE(spec.noise >= 0 && spec.noise <= 1, "slbamm.noise must be in [0, 1]");

  Rng rng(spec.seed, kHypercleanKey, 0, Stream::kSplit);
  std::vector<int64_t> picked;
  sample_distinct(rng, static_cast<int64_t>(pool.size()), spec.classes, picked);

  HypercleanData d;
  d.classes = spec.classes;
  const int64_t px = store.image_bytes();
  d.dim = static_cast<int>(px);
  auto add = [&](LabelledSet& set, int64_t image, int label) {
    const uint8_t* src = store.images.data() + image * px;
    for (int64_t j = 0; j < px; ++j) set.features.push_back(src[j] / 255.0);
    set.labels.push_back(label);
    set.n += 1;
  };
  std::vector<int64_t> order;
  for (int c = 0; c < spec.classes; ++c) {
    const int32_t cls = pool[picked[c]];
    const int64_t first = store.class_offsets[cls];
    const int64_t count = store.class_offsets[cls + 1] - first;
    MT_REQUIRE(count >= per_class, "hyperclean: class ", store.class_names[cls], " has ", count,
               " images, fewer than train + val + test per class = ", per_class);
    sample_distinct(rng, count, per_class, order);
    int j = 0;
    for (; j < spec.train_per_class; ++j) add(d.train, first + order[j], c);
    for (; j < spec.train_per_class + spec.val_per_class; ++j) add(d.val, first + order[j], c);
    for (; j < per_class; ++j) add(d.test, first + order[j], c);
  }

  // Standardise with training statistics: subtract the mean image, scale to mean ‖a‖² = 1.
  std::vector<double> mean(px, 0.0);
  for (int64_t i = 0; i < d.train.n; ++i)
    for (int64_t j = 0; j < px; ++j) mean[j] += d.train.features[i * px + j] / d.train.n;
  double sq = 0;
  for (int64_t i = 0; i < d.train.n; ++i)
    for (int64_t j = 0; j < px; ++j) {
      const double v = d.train.features[i * px + j] - mean[j];
      sq += v * v / d.train.n;
    }
  const double scale = sq > 0 ? 1.0 / std::sqrt(sq) : 1.0;
  for (LabelledSet* s : {&d.train, &d.val, &d.test})
    for (int64_t i = 0; i < s->n; ++i)
      for (int64_t j = 0; j < px; ++j)
        s->features[i * px + j] = (s->features[i * px + j] - mean[j]) * scale;

  // Corrupt a random subset of round(noise · n) training labels.
  d.clean_labels = d.train.labels;
  d.corrupted.assign(d.train.n, 0);
  const int corrupt = static_cast<int>(std::lround(spec.noise * d.train.n));
  sample_distinct(rng, d.train.n, corrupt, order);
  for (int64_t i : order) {
    const int other = static_cast<int>(rng.below(spec.classes - 1));
    const int clean = d.train.labels[i];
    d.train.labels[i] = other < clean ? other : other + 1;
    d.corrupted[i] = 1;
  }
  return d;
}

// ---- the bilevel problem -----------------------------------------------------------------

HypercleanProblem::HypercleanProblem(const HypercleanData& data, int rank, int ranks)
    : data_(data), k_(data.classes), d_(data.dim) {
  MT_CHECK(ranks >= 1 && rank >= 0 && rank < ranks, "bad rank ", rank, " of ", ranks);
  train_ = gather(data.train, rank, ranks);
  val_ = gather(data.val, rank, ranks);
}

HypercleanProblem::Shard HypercleanProblem::gather(const LabelledSet& s, int rank,
                                                   int ranks) const {
  Shard sh;
  for (int64_t i = rank; i < s.n; i += ranks) {
    sh.index.push_back(i);
    sh.a.insert(sh.a.end(), s.features.begin() + i * d_, s.features.begin() + (i + 1) * d_);
    sh.label.push_back(s.labels[i]);
  }
  sh.m = static_cast<int64_t>(sh.index.size());
  return sh;
}

void HypercleanProblem::init(double* x, double* y) const {
  std::fill(x, x + dim_x(), 0.0);
  std::fill(y, y + dim_y(), 0.0);
}

void HypercleanProblem::probs(const Shard& s, const double* y, std::vector<double>& P,
                              std::vector<double>* loss) const {
  const double* W = y;
  const double* bias = y + static_cast<int64_t>(k_) * d_;
  P.resize(s.m * k_);
  if (s.m == 0) return;
  gemm<double>(false, true, static_cast<int>(s.m), k_, d_, 1.0, s.a.data(), d_, W, d_, 0.0,
               P.data(), k_);
  if (loss) loss->resize(s.m);
  for (int64_t i = 0; i < s.m; ++i) {
    double* p = P.data() + i * k_;
    double mx = -INFINITY;
    for (int c = 0; c < k_; ++c) mx = std::max(mx, p[c] += bias[c]);
    double z = 0;
    for (int c = 0; c < k_; ++c) z += std::exp(p[c] - mx);
    const double logz = mx + std::log(z);
    if (loss) (*loss)[i] = logz - p[s.label[i]];
    for (int c = 0; c < k_; ++c) p[c] = std::exp(p[c] - logz);
  }
}

void HypercleanProblem::directional(const Shard& s, const double* v, std::vector<double>& S) const {
  S.resize(s.m * k_);
  if (s.m == 0) return;
  gemm<double>(false, true, static_cast<int>(s.m), k_, d_, 1.0, s.a.data(), d_, v, d_, 0.0,
               S.data(), k_);
  const double* vb = v + static_cast<int64_t>(k_) * d_;
  for (int64_t i = 0; i < s.m; ++i)
    for (int c = 0; c < k_; ++c) S[i * k_ + c] += vb[c];
}

void HypercleanProblem::accumulate(const Shard& s, const std::vector<double>& G, double* g) const {
  if (s.m == 0) return;
  gemm<double>(true, false, k_, d_, static_cast<int>(s.m), 1.0, G.data(), k_, s.a.data(), d_, 1.0,
               g, d_);
  double* gb = g + static_cast<int64_t>(k_) * d_;
  for (int64_t i = 0; i < s.m; ++i)
    for (int c = 0; c < k_; ++c) gb[c] += G[i * k_ + c];
}

std::vector<double> HypercleanProblem::train_coef(double b, const double* x) const {
  std::vector<double> c(train_.m);
  for (int64_t i = 0; i < train_.m; ++i)
    c[i] = b * sigmoid(x[train_.index[i]]) / static_cast<double>(data_.train.n);
  return c;
}

BilevelValues HypercleanProblem::values(const double* x, const double* y) const {
  std::vector<double> P, loss;
  BilevelValues v;
  probs(train_, y, P, &loss);
  const std::vector<double> c = train_coef(1.0, x);
  for (int64_t i = 0; i < train_.m; ++i) v.f += c[i] * loss[i];
  probs(val_, y, P, &loss);
  for (int64_t j = 0; j < val_.m; ++j) v.F += loss[j] / static_cast<double>(data_.val.n);
  return v;
}

void HypercleanProblem::grad_y(Blend w, const double* x, const double* y, double* g) const {
  std::fill(g, g + dim_y(), 0.0);
  std::vector<double> P;
  auto add_set = [&](const Shard& s, const std::vector<double>& c) {
    probs(s, y, P, nullptr);
    for (int64_t i = 0; i < s.m; ++i) {
      P[i * k_ + s.label[i]] -= 1.0;
      for (int q = 0; q < k_; ++q) P[i * k_ + q] *= c[i];
    }
    accumulate(s, P, g);
  };
  if (w.b != 0) add_set(train_, train_coef(w.b, x));
  if (w.a != 0) add_set(val_, std::vector<double>(val_.m, w.a / data_.val.n));
}

void HypercleanProblem::weighted_train_grad(const double* c, const double* y, double* g) const {
  std::fill(g, g + dim_y(), 0.0);
  std::vector<double> P;
  probs(train_, y, P, nullptr);
  for (int64_t i = 0; i < train_.m; ++i) {
    P[i * k_ + train_.label[i]] -= 1.0;
    for (int q = 0; q < k_; ++q) P[i * k_ + q] *= c[train_.index[i]];
  }
  accumulate(train_, P, g);
}

void HypercleanProblem::grad_x(Blend w, const double* x, const double* y, double* g) const {
  std::fill(g, g + dim_x(), 0.0);
  if (w.b == 0) return;  // F does not depend on x
  std::vector<double> P, loss;
  probs(train_, y, P, &loss);
  for (int64_t i = 0; i < train_.m; ++i) {
    const double s = sigmoid(x[train_.index[i]]);
    g[train_.index[i]] = w.b * s * (1 - s) * loss[i] / static_cast<double>(data_.train.n);
  }
}

void HypercleanProblem::hvp_yy(Blend w, const double* x, const double* y, const double* v,
                               double* Hv) const {
  std::fill(Hv, Hv + dim_y(), 0.0);
  std::vector<double> P, S;
  auto add_set = [&](const Shard& s, const std::vector<double>& c) {
    probs(s, y, P, nullptr);
    directional(s, v, S);
    for (int64_t i = 0; i < s.m; ++i) {
      const double* p = P.data() + i * k_;
      double* r = S.data() + i * k_;
      double ps = 0;
      for (int q = 0; q < k_; ++q) ps += p[q] * r[q];
      for (int q = 0; q < k_; ++q) r[q] = c[i] * p[q] * (r[q] - ps);
    }
    accumulate(s, S, Hv);
  };
  if (w.b != 0) add_set(train_, train_coef(w.b, x));
  if (w.a != 0) add_set(val_, std::vector<double>(val_.m, w.a / data_.val.n));
}

void HypercleanProblem::mixed_xy(Blend w, const double* x, const double* y, const double* z,
                                 double* out) const {
  std::fill(out, out + dim_x(), 0.0);
  if (w.b == 0) return;
  std::vector<double> P, S;
  probs(train_, y, P, nullptr);
  directional(train_, z, S);
  for (int64_t i = 0; i < train_.m; ++i) {
    double inner = -S[i * k_ + train_.label[i]];
    for (int q = 0; q < k_; ++q) inner += P[i * k_ + q] * S[i * k_ + q];
    const double s = sigmoid(x[train_.index[i]]);
    out[train_.index[i]] = w.b * s * (1 - s) * inner / static_cast<double>(data_.train.n);
  }
}

// ---- evaluation and baselines ------------------------------------------------------------

double classifier_accuracy(const HypercleanData& data, const LabelledSet& set, const double* y) {
  const int k = data.classes, d = data.dim;
  if (set.n == 0) return 0;
  std::vector<double> S(set.n * k);
  gemm<double>(false, true, static_cast<int>(set.n), k, d, 1.0, set.features.data(), d, y, d, 0.0,
               S.data(), k);
  const double* bias = y + static_cast<int64_t>(k) * d;
  int64_t right = 0;
  for (int64_t i = 0; i < set.n; ++i) {
    int best = 0;
    for (int c = 1; c < k; ++c)
      if (S[i * k + c] + bias[c] > S[i * k + best] + bias[best]) best = c;
    right += best == set.labels[i];
  }
  return static_cast<double>(right) / set.n;
}

std::vector<double> train_weighted(const HypercleanData& data, const std::vector<double>& c,
                                   int64_t steps, double lr, double tau) {
  HypercleanProblem problem(data);
  double total = 0;
  for (double v : c) total += v;
  MT_CHECK(total > 0, "train_weighted: all weights are zero");
  std::vector<double> cn(c.size());
  for (size_t i = 0; i < c.size(); ++i) cn[i] = c[i] / total;
  std::vector<double> y(problem.dim_y(), 0.0), g(problem.dim_y());
  for (int64_t k = 0; k < steps; ++k) {
    problem.weighted_train_grad(cn.data(), y.data(), g.data());
    const double beta = lr * std::pow(static_cast<double>(k + 1), -tau / 2);
    for (size_t i = 0; i < y.size(); ++i) y[i] -= beta * g[i];
  }
  return y;
}

Detection detect_corrupted(const HypercleanData& data, const std::vector<double>& x) {
  Detection r;
  int64_t hit = 0, corrupted = 0;
  for (int64_t i = 0; i < data.train.n; ++i) {
    const bool flag = x[i] < 0;  // σ(x_i) < 0.5
    r.flagged += flag;
    corrupted += data.corrupted[i];
    hit += flag && data.corrupted[i];
  }
  r.precision = r.flagged > 0 ? static_cast<double>(hit) / r.flagged : 0;
  r.recall = corrupted > 0 ? static_cast<double>(hit) / corrupted : 0;
  r.f1 = r.precision + r.recall > 0 ? 2 * r.precision * r.recall / (r.precision + r.recall) : 0;
  return r;
}

}  // namespace mt
