// Data hyper-cleaning as a bilevel problem (DESIGN §3.7) on any classifier with the Model<>
// interface (core/model.h): y is the classifier's flat parameter vector, x_i is a logit per
// training example whose weight σ(x_i) scales that example's loss.
//   f(x, y) = Σ_i σ(x_i) ℓ_i(y) / n_train      (weighted training loss, lower level)
//   F(x, y) = Σ_j ℓ_j(y) / n_val               (clean validation loss, upper level)
// Every derivative comes from the model's passes (DESIGN §3.2): ∇_y and ∇²_yy · v from
// loss_grad / hvp on batches weighted per example (Batch::weight), ∂f/∂x_i = σ'(x_i) ℓ_i / n_train
// from example_losses, and ∇²_xy f · z = σ'(x_i) ⟨∇_y ℓ_i, z⟩ / n_train from loss_directional.
// Sharding: rank r of N owns training and validation examples with index ≡ r (mod N) and runs
// them as one batch; it returns partial sums, and x-derivatives only for its own entries (zeros
// elsewhere). With batch norm in the model, its statistics are those of each rank's batch, so f
// and F on N ranks are a different (equally valid) function than on one rank, not a reordering.
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
  // ignored); this rank keeps its shard of each. The model must outlive the problem; the initial
  // y is model.init(init_seed), x starts at 0 (weights ½). Not thread-safe (one workspace and
  // the weights of the shard's batches are reused by every call).
  HypercleanProblem(const Model<double>& model, const Batch<double>& train,
                    const Batch<double>& val, uint64_t init_seed, int rank = 0, int ranks = 1);

  int64_t dim_x() const override { return n_train_; }
  int64_t dim_y() const override { return model_.layout().total(); }
  void init(double* x, double* y) const override;

  BilevelValues values(const double* x, const double* y) const override;
  void grad_y(Blend w, const double* x, const double* y, double* g) const override;
  void grad_x(Blend w, const double* x, const double* y, double* g) const override;
  void hvp_yy(Blend w, const double* x, const double* y, const double* v,
              double* Hv) const override;
  void mixed_xy(Blend w, const double* x, const double* y, const double* z,
                double* out) const override;

  const Model<double>& model() const { return model_; }

 private:
  // Sets the shard batches' weights for a·F + b·f so that the model's weighted mean equals this
  // shard's share of the blend: w_i = b σ(x_i) m_train / n_train, w_j = a m_val / n_val.
  void weigh_train(double b, const double* x) const;
  void weigh_val(double a) const;
  // σ'(x_i) / n_train of training example i of the shard.
  double dsigma(const double* x, int64_t i) const;

  const Model<double>& model_;
  uint64_t seed_;
  int64_t n_train_, n_val_;           // whole sets
  std::vector<int64_t> train_index_;  // global index of each local training example
  mutable Batch<double> train_, val_;
  mutable std::unique_ptr<Workspace> ws_;
  mutable std::vector<double> scratch_;  // dim_y doubles
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
