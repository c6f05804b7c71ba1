// Data hyper-cleaning on a Model<double> (core/bilevel_hyperclean.h): the sharded bilevel
// problem, whose derivatives all come from the model's passes, and the single-process baselines.
#include "core/bilevel_hyperclean.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"

namespace mt {

namespace {

double sigmoid(double t) { return 1.0 / (1.0 + std::exp(-t)); }

// The examples i ≡ rank (mod ranks) of b, unweighted.
Batch<double> shard(const Batch<double>& b, int rank, int ranks) {
  const size_t d = b.item.size();
  Batch<double> s;
  s.item = b.item;
  for (int i = rank; i < b.n; i += ranks) {
    s.x.insert(s.x.end(), b.x.begin() + i * d, b.x.begin() + (i + 1) * d);
    s.y.push_back(b.y[i]);
    s.n += 1;
  }
  return s;
}

}  // namespace

HypercleanProblem::HypercleanProblem(const Model<double>& model, const Batch<double>& train,
                                     const Batch<double>& val, uint64_t init_seed, int rank,
                                     int ranks)
    : model_(model), seed_(init_seed), n_train_(train.n), n_val_(val.n) {
  MT_CHECK(ranks >= 1 && rank >= 0 && rank < ranks, "bad rank ", rank, " of ", ranks);
  MT_CHECK(train.n >= 1 && val.n >= 1, "hyper-cleaning needs training and validation examples");
  ws_ = model_.make_workspace();
  scratch_.resize(model_.layout().total());
  for (int64_t i = rank; i < n_train_; i += ranks) train_index_.push_back(i);
  train_ = shard(train, rank, ranks);
  val_ = shard(val, rank, ranks);
}

void HypercleanProblem::init(double* x, double* y) const {
  std::fill(x, x + dim_x(), 0.0);
  model_.init(y, seed_);
}

void HypercleanProblem::weigh_train(double b, const double* x) const {
  train_.weight.resize(train_.n);
  for (int i = 0; i < train_.n; ++i)
    train_.weight[i] = b * sigmoid(x[train_index_[i]]) * train_.n / n_train_;
}

void HypercleanProblem::weigh_val(double a) const {
  val_.weight.assign(val_.n, a * val_.n / n_val_);
}

double HypercleanProblem::dsigma(const double* x, int64_t i) const {
  const double s = sigmoid(x[train_index_[i]]);
  return s * (1 - s) / static_cast<double>(n_train_);
}

BilevelValues HypercleanProblem::values(const double* x, const double* y) const {
  BilevelValues v;
  std::vector<double> loss(std::max(train_.n, val_.n));
  if (train_.n > 0) {
    model_.example_losses(y, train_, loss.data(), *ws_);
    for (int i = 0; i < train_.n; ++i)
      v.f += sigmoid(x[train_index_[i]]) * loss[i] / static_cast<double>(n_train_);
  }
  if (val_.n > 0) {
    model_.example_losses(y, val_, loss.data(), *ws_);
    for (int j = 0; j < val_.n; ++j) v.F += loss[j] / static_cast<double>(n_val_);
  }
  return v;
}

void HypercleanProblem::grad_y(Blend w, const double* x, const double* y, double* g) const {
  std::fill(g, g + dim_y(), 0.0);
  auto add = [&](const Batch<double>& b) {
    model_.loss_grad(y, b, scratch_.data(), *ws_);
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
  model_.example_losses(y, train_, loss.data(), *ws_);
  for (int i = 0; i < train_.n; ++i) g[train_index_[i]] = w.b * dsigma(x, i) * loss[i];
}

void HypercleanProblem::hvp_yy(Blend w, const double* x, const double* y, const double* v,
                               double* Hv) const {
  std::fill(Hv, Hv + dim_y(), 0.0);
  std::vector<double> part(dim_y());
  auto add = [&](const Batch<double>& b) {
    model_.hvp(y, b, v, scratch_.data(), part.data(), *ws_);
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
  model_.loss_directional(y, train_, z, dl.data(), *ws_);
  for (int i = 0; i < train_.n; ++i) out[train_index_[i]] = w.b * dsigma(x, i) * dl[i];
}

double classifier_accuracy(const Model<double>& model, const Batch<double>& set, const double* y) {
  if (set.n == 0) return 0;
  auto ws = model.make_workspace();
  Batch<double> b = set;
  b.weight.clear();
  return model.loss_grad(y, b, nullptr, *ws).acc;
}

std::vector<double> train_weighted(const Model<double>& model, const Batch<double>& train,
                                   const std::vector<double>& c, uint64_t init_seed, int64_t steps,
                                   double lr, double tau) {
  MT_CHECK(static_cast<int64_t>(c.size()) == train.n, "train_weighted: ", c.size(), " weights for ",
           train.n, " examples");
  double total = 0;
  for (double v : c) total += v;
  MT_CHECK(total > 0, "train_weighted: all weights are zero");
  // The model's loss Σ w_i ℓ_i / n equals Σ c_i ℓ_i / Σ c for w_i = n c_i / Σ c.
  Batch<double> b = train;
  b.weight.resize(b.n);
  for (int i = 0; i < b.n; ++i) b.weight[i] = b.n * c[i] / total;
  std::vector<double> y(model.layout().total()), g(y.size());
  model.init(y.data(), init_seed);
  auto ws = model.make_workspace();
  for (int64_t k = 0; k < steps; ++k) {
    model.loss_grad(y.data(), b, g.data(), *ws);
    const double beta = lr * std::pow(static_cast<double>(k + 1), -tau / 2);
    for (size_t i = 0; i < y.size(); ++i) y[i] -= beta * g[i];
  }
  return y;
}

}  // namespace mt
