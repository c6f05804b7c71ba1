// Data hyper-cleaning on a Model<double> (core/bilevel_hyperclean.h): the bilevel problem over
// blocks of examples, whose derivatives all come from the model's passes, and the single-process
// baselines.
#include "core/bilevel_hyperclean.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"

namespace mt {

namespace {

double sigmoid(double t) { return 1.0 / (1.0 + std::exp(-t)); }

int64_t block_count(int64_t n, int64_t block_size) { return (n + block_size - 1) / block_size; }

// The examples i ≡ c (mod blocks) of b, unweighted, and their indices.
Batch<double> gather(const Batch<double>& b, int64_t c, int64_t blocks,
                     std::vector<int64_t>& index) {
  const size_t d = b.item.size();
  Batch<double> s;
  s.item = b.item;
  for (int64_t i = c; i < b.n; i += blocks) {
    s.x.insert(s.x.end(), b.x.begin() + i * d, b.x.begin() + (i + 1) * d);
    s.y.push_back(b.y[i]);
    s.n += 1;
    index.push_back(i);
  }
  return s;
}

}  // namespace

HypercleanProblem::HypercleanProblem(const Model<double>& model, const Batch<double>& train,
                                     const Batch<double>& val, uint64_t init_seed, int rank,
                                     int ranks, int64_t block_size)
    : model_(model), seed_(init_seed), n_train_(train.n), n_val_(val.n) {
  MT_CHECK(ranks >= 1 && rank >= 0 && rank < ranks, "bad rank ", rank, " of ", ranks);
  MT_CHECK(train.n >= 1 && val.n >= 1, "hyper-cleaning needs training and validation examples");
  MT_CHECK(block_size >= 1, "hyper-cleaning block size ", block_size);
  ws_ = model_.make_workspace();
  train_blocks_ = block_count(n_train_, block_size);
  val_blocks_ = block_count(n_val_, block_size);
  for (int64_t id = rank; id < blocks(); id += ranks) {
    Block blk;
    blk.id = id;
    blk.train = id < train_blocks_;
    blk.batch = blk.train ? gather(train, id, train_blocks_, blk.index)
                          : gather(val, id - train_blocks_, val_blocks_, blk.index);
    owned_.push_back(std::move(blk));
  }
}

std::vector<int64_t> HypercleanProblem::owned_blocks() const {
  std::vector<int64_t> ids;
  for (const Block& b : owned_) ids.push_back(b.id);
  return ids;
}

const HypercleanProblem::Block* HypercleanProblem::find(int64_t b) const {
  for (const Block& blk : owned_)
    if (blk.id == b) return &blk;
  MT_CHECK(false, "block ", b, " is not one of this rank's");
  return nullptr;
}

void HypercleanProblem::init(double* x, double* y) const {
  std::fill(x, x + dim_x(), 0.0);
  model_.init(y, seed_);
}

bool HypercleanProblem::weigh(const Block& blk, Blend w, const double* x) const {
  Batch<double>& b = blk.batch;
  const double m = static_cast<double>(b.n);
  b.weight.resize(b.n);
  if (blk.train) {
    for (int i = 0; i < b.n; ++i)
      b.weight[i] = w.b * sigmoid(x[blk.index[i]]) * m / static_cast<double>(n_train_);
    return w.b != 0;
  }
  std::fill(b.weight.begin(), b.weight.end(), w.a * m / static_cast<double>(n_val_));
  return w.a != 0;
}

double HypercleanProblem::dsigma(const double* x, int64_t i) const {
  const double s = sigmoid(x[i]);
  return s * (1 - s) / static_cast<double>(n_train_);
}

BilevelValues HypercleanProblem::block_values(int64_t b, const double* x, const double* y) const {
  const Block& blk = *find(b);
  BilevelValues v;
  std::vector<double> loss(blk.batch.n);
  model_.example_losses(y, blk.batch, loss.data(), *ws_);
  for (int i = 0; i < blk.batch.n; ++i) {
    if (blk.train)
      v.f += sigmoid(x[blk.index[i]]) * loss[i] / static_cast<double>(n_train_);
    else
      v.F += loss[i] / static_cast<double>(n_val_);
  }
  return v;
}

void HypercleanProblem::block_grad_y(int64_t b, Blend w, const double* x, const double* y,
                                     double* g) const {
  const Block& blk = *find(b);
  if (weigh(blk, w, x))
    model_.loss_grad(y, blk.batch, g, *ws_);
  else
    std::fill(g, g + dim_y(), 0.0);
}

void HypercleanProblem::block_hvp_yy(int64_t b, Blend w, const double* x, const double* y,
                                     const double* v, double* Hv) const {
  const Block& blk = *find(b);
  if (weigh(blk, w, x)) {
    model_.hvp(y, blk.batch, v, nullptr, Hv, *ws_);
  } else {
    std::fill(Hv, Hv + dim_y(), 0.0);
  }
}

void HypercleanProblem::grad_x(Blend w, const double* x, const double* y, double* g) const {
  std::fill(g, g + dim_x(), 0.0);
  if (w.b == 0) return;  // F does not depend on x
  for (const Block& blk : owned_) {
    if (!blk.train) continue;
    std::vector<double> loss(blk.batch.n);
    model_.example_losses(y, blk.batch, loss.data(), *ws_);
    for (int i = 0; i < blk.batch.n; ++i) g[blk.index[i]] = w.b * dsigma(x, blk.index[i]) * loss[i];
  }
}

void HypercleanProblem::mixed_xy(Blend w, const double* x, const double* y, const double* z,
                                 double* out) const {
  std::fill(out, out + dim_x(), 0.0);
  if (w.b == 0) return;
  for (const Block& blk : owned_) {
    if (!blk.train) continue;
    std::vector<double> dl(blk.batch.n);
    model_.loss_directional(y, blk.batch, z, dl.data(), *ws_);
    for (int i = 0; i < blk.batch.n; ++i) out[blk.index[i]] = w.b * dsigma(x, blk.index[i]) * dl[i];
  }
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
