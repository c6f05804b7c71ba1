// Data hyper-cleaning (launch/hyperclean.h): the data set built from an episode store, the
// bilevel problem on a Sequential model (derivatives from its layer passes), and the baselines.
#include "launch/hyperclean.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "core/rng.h"
#include "data/episode_sampler.h"
#include "models/conv4.h"
#include "models/linear.h"

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
  d.item = {store.channels, store.height, store.width};
  const int64_t px = store.image_bytes(), plane = static_cast<int64_t>(store.height) * store.width;
  d.dim = static_cast<int>(px);
  auto add = [&](LabelledSet& set, int64_t image, int label) {
    const uint8_t* src = store.images.data() + image * px;  // [h, w, c]
    for (int c = 0; c < store.channels; ++c)
      for (int64_t q = 0; q < plane; ++q) set.pixels.push_back(src[q * store.channels + c] / 255.0);
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
    for (int64_t j = 0; j < px; ++j) mean[j] += d.train.pixels[i * px + j] / d.train.n;
  double sq = 0;
  for (int64_t i = 0; i < d.train.n; ++i)
    for (int64_t j = 0; j < px; ++j) {
      const double v = d.train.pixels[i * px + j] - mean[j];
      sq += v * v / d.train.n;
    }
  const double scale = sq > 0 ? 1.0 / std::sqrt(sq) : 1.0;
  for (LabelledSet* s : {&d.train, &d.val, &d.test}) {
    s->features.resize(s->pixels.size());
    for (int64_t i = 0; i < s->n; ++i)
      for (int64_t j = 0; j < px; ++j)
        s->features[i * px + j] = (s->pixels[i * px + j] - mean[j]) * scale;
  }

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

HypercleanProblem::HypercleanProblem(const HypercleanData& data, const HypercleanModel& model,
                                     int rank, int ranks)
    : data_(data), pixels_(model.name == "conv4"), seed_(model.seed) {
  MT_CHECK(ranks >= 1 && rank >= 0 && rank < ranks, "bad rank ", rank, " of ", ranks);
  MT_REQUIRE(model.name == "linear" || model.name == "conv4", "slbamm.model = ", model.name,
             ": choose linear or conv4");
  if (pixels_) {
    MT_REQUIRE(model.filters >= 1, "slbamm.filters must be >= 1");
    model_ = make_conv4<double>({data.item, model.filters, data.classes, Conv4Pool::kMax});
  } else {
    model_ = std::make_unique<Sequential<double>>(data.item, data.classes);
    model_->add("head", std::make_unique<Linear<double>>(data.item, data.classes));
  }
  ws_ = model_->make_workspace();
  scratch_.resize(model_->layout().total());
  for (int64_t i = rank; i < data.train.n; i += ranks) train_index_.push_back(i);
  train_ = batch(data.train, rank, ranks);
  val_ = batch(data.val, rank, ranks);
}

Batch<double> HypercleanProblem::batch(const LabelledSet& set, int rank, int ranks) const {
  const std::vector<double>& in = pixels_ ? set.pixels : set.features;
  const int64_t d = data_.dim;
  Batch<double> b;
  b.item = data_.item;
  for (int64_t i = rank; i < set.n; i += ranks) {
    b.x.insert(b.x.end(), in.begin() + i * d, in.begin() + (i + 1) * d);
    b.y.push_back(set.labels[i]);
    b.n += 1;
  }
  return b;
}

void HypercleanProblem::init(double* x, double* y) const {
  std::fill(x, x + dim_x(), 0.0);
  model_->init(y, seed_);
}

void HypercleanProblem::weigh_train(double b, const double* x) const {
  train_.weight.resize(train_.n);
  for (int i = 0; i < train_.n; ++i)
    train_.weight[i] = b * sigmoid(x[train_index_[i]]) * train_.n / data_.train.n;
}

void HypercleanProblem::weigh_val(double a) const {
  val_.weight.assign(val_.n, a * val_.n / data_.val.n);
}

double HypercleanProblem::dsigma(const double* x, int64_t i) const {
  const double s = sigmoid(x[train_index_[i]]);
  return s * (1 - s) / static_cast<double>(data_.train.n);
}

BilevelValues HypercleanProblem::values(const double* x, const double* y) const {
  BilevelValues v;
  std::vector<double> loss(std::max(train_.n, val_.n));
  if (train_.n > 0) {
    model_->example_losses(y, train_, loss.data(), *ws_);
    for (int i = 0; i < train_.n; ++i)
      v.f += sigmoid(x[train_index_[i]]) * loss[i] / static_cast<double>(data_.train.n);
  }
  if (val_.n > 0) {
    model_->example_losses(y, val_, loss.data(), *ws_);
    for (int j = 0; j < val_.n; ++j) v.F += loss[j] / static_cast<double>(data_.val.n);
  }
  return v;
}

void HypercleanProblem::grad_y(Blend w, const double* x, const double* y, double* g) const {
  std::fill(g, g + dim_y(), 0.0);
  auto add = [&](const Batch<double>& b) {
    model_->loss_grad(y, b, scratch_.data(), *ws_);
    for (int64_t k = 0; k < dim_y(); ++k) g[k] += scratch_[k];
  };
  if (w.b != 0 && train_.n > 0) {
    weigh_train(w.b, x);
    add(train_);
  }
  if (w.a != 0 && val_.n > 0) {
    weigh_val(w.a);
    add(val_);
  }
}

void HypercleanProblem::grad_x(Blend w, const double* x, const double* y, double* g) const {
  std::fill(g, g + dim_x(), 0.0);
  if (w.b == 0 || train_.n == 0) return;  // F does not depend on x
  std::vector<double> loss(train_.n);
  model_->example_losses(y, train_, loss.data(), *ws_);
  for (int i = 0; i < train_.n; ++i) g[train_index_[i]] = w.b * dsigma(x, i) * loss[i];
}

void HypercleanProblem::hvp_yy(Blend w, const double* x, const double* y, const double* v,
                               double* Hv) const {
  std::fill(Hv, Hv + dim_y(), 0.0);
  std::vector<double> part(dim_y());
  auto add = [&](const Batch<double>& b) {
    model_->hvp(y, b, v, scratch_.data(), part.data(), *ws_);
    for (int64_t k = 0; k < dim_y(); ++k) Hv[k] += part[k];
  };
  if (w.b != 0 && train_.n > 0) {
    weigh_train(w.b, x);
    add(train_);
  }
  if (w.a != 0 && val_.n > 0) {
    weigh_val(w.a);
    add(val_);
  }
}

void HypercleanProblem::mixed_xy(Blend w, const double* x, const double* y, const double* z,
                                 double* out) const {
  std::fill(out, out + dim_x(), 0.0);
  if (w.b == 0 || train_.n == 0) return;
  std::vector<double> dl(train_.n);
  model_->loss_directional(y, train_, z, dl.data(), *ws_);
  for (int i = 0; i < train_.n; ++i) out[train_index_[i]] = w.b * dsigma(x, i) * dl[i];
}

// ---- evaluation and baselines ------------------------------------------------------------

double classifier_accuracy(const HypercleanProblem& problem, const LabelledSet& set,
                           const double* y) {
  if (set.n == 0) return 0;
  auto ws = problem.model().make_workspace();
  return problem.model().loss_grad(y, problem.batch(set), nullptr, *ws).acc;
}

std::vector<double> train_weighted(const HypercleanProblem& problem, const std::vector<double>& c,
                                   int64_t steps, double lr, double tau) {
  const Model<double>& model = problem.model();
  Batch<double> train = problem.batch(problem.data().train);
  double total = 0;
  for (double v : c) total += v;
  MT_CHECK(total > 0, "train_weighted: all weights are zero");
  // The model's loss Σ w_i ℓ_i / n equals Σ c_i ℓ_i / Σ c for w_i = n c_i / Σ c.
  train.weight.resize(train.n);
  for (int i = 0; i < train.n; ++i) train.weight[i] = train.n * c[i] / total;
  std::vector<double> x(problem.dim_x()), y(problem.dim_y()), g(problem.dim_y());
  problem.init(x.data(), y.data());
  auto ws = model.make_workspace();
  for (int64_t k = 0; k < steps; ++k) {
    model.loss_grad(y.data(), train, g.data(), *ws);
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
