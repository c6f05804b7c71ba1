// Data hyper-cleaning as a bilevel problem (DESIGN §3.7) on any classifier with the Model<>
// interface (core/model.h): y is the classifier's flat parameter vector, x_i is a logit per
// training example whose weight σ(x_i) scales that example's loss.
//   f(x, y) = Σ_i σ(x_i) ℓ_i(y) / n_train      (weighted training loss, lower level)
//   F(x, y) = Σ_j ℓ_j(y) / n_val               (clean validation loss, upper level)
// Every derivative comes from the model's passes (DESIGN §3.2): ∇_y and ∇²_yy · v from
// loss_grad / hvp on batches weighted per example (Batch::weight), ∂f/∂x_i = σ'(x_i) ℓ_i / n_train
// from example_losses, and ∇²_xy f · z = σ'(x_i) ⟨∇_y ℓ_i, z⟩ / n_train from loss_directional.
// Blocks: each set is split into ⌈n / block_size⌉ blocks of nearly equal size, block c of a set
// holding the examples i ≡ c (mod its block count) (so every block mixes the classes); the
// training blocks come first, then the validation blocks, and rank r of N owns the blocks
// ≡ r (mod N) and keeps only their examples. A block is one batch of the model: with batch norm
// in it, the statistics are those of the block (as ghost batch norm does), so f and F are sums
// of per-block losses and the same function on any number of ranks. With block_size ≥ n a set
// is one block, the whole-set statistics of a single process.
// The data set is built by data/hyperclean_data.h, the classifier by the program.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/bilevel.h"
#include "core/model.h"

namespace mt {

class HypercleanProblem : public BilevelProblem {
 public:
  // `train` and `val` are the whole sets, in the input scaling the model reads (their weights are
  // ignored); this rank keeps the examples of its blocks. The model must outlive the problem; the
  // initial y is model.init(init_seed), x starts at 0 (weights ½). Not thread-safe (one
  // workspace and the weights of the blocks' batches are reused by every call).
  HypercleanProblem(const Model<double>& model, const Batch<double>& train,
                    const Batch<double>& val, uint64_t init_seed, int rank = 0, int ranks = 1,
                    int64_t block_size = kBlockSize);

  // Examples per block at most (at least half of it once a set has more than kBlockSize).
  static constexpr int64_t kBlockSize = 64;

  int64_t dim_x() const override { return n_train_; }
  int64_t dim_y() const override { return model_.layout().total(); }
  void init(double* x, double* y) const override;

  int64_t blocks() const override { return train_blocks_ + val_blocks_; }
  std::vector<int64_t> owned_blocks() const override;
  BilevelValues block_values(int64_t b, const double* x, const double* y) const override;
  void block_grad_y(int64_t b, Blend w, const double* x, const double* y, double* g) const override;
  void block_hvp_yy(int64_t b, Blend w, const double* x, const double* y, const double* v,
                    double* Hv) const override;
  void grad_x(Blend w, const double* x, const double* y, double* g) const override;
  void mixed_xy(Blend w, const double* x, const double* y, const double* z,
                double* out) const override;

  const Model<double>& model() const { return model_; }

 private:
  // One owned block: its examples as a batch, and their global indices.
  struct Block {
    int64_t id = 0;
    bool train = true;
    std::vector<int64_t> index;
    mutable Batch<double> batch;
  };
  const Block* find(int64_t b) const;
  // Sets the block's weights for a·F + b·f so that the model's weighted mean equals the block's
  // share of the blend: w_i = b σ(x_i) m / n_train (training), w_j = a m / n_val (validation).
  // False when the blend gives the block no weight.
  bool weigh(const Block& blk, Blend w, const double* x) const;
  // σ'(x_i) / n_train of training example i (global index).
  double dsigma(const double* x, int64_t i) const;

  const Model<double>& model_;
  uint64_t seed_;
  int64_t n_train_, n_val_;  // whole sets
  int64_t train_blocks_, val_blocks_;
  std::vector<Block> owned_;  // ascending ids
  mutable std::unique_ptr<Workspace> ws_;
};

// Accuracy of the classifier y on all of `set` (one batch).
double classifier_accuracy(const Model<double>& model, const Batch<double>& set, const double* y);

// Plain gradient descent on Σ_i c_i ℓ_i / Σ c over all of `train` from model.init(init_seed),
// with the sl-BAMM y-schedule β_k = lr (k+1)^{−τ/2}: the baselines of hyper-cleaning (noisy:
// c = 1; clean-only: c = 1 − corrupted). Single process. Returns y.
std::vector<double> train_weighted(const Model<double>& model, const Batch<double>& train,
                                   const std::vector<double>& c, uint64_t init_seed, int64_t steps,
                                   double lr, double tau);

}  // namespace mt
