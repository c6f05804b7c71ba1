// Data hyper-cleaning as a bilevel problem (DESIGN §3.7): a K-class linear softmax classifier
// y = [W (K×D, row-major), b (K)] on image features; x_i is a logit per training example whose
// weight σ(x_i) scales that example's loss. 50% of the training labels are corrupted.
//   f(x, y) = Σ_i σ(x_i) ℓ_i(y) / n_train      (weighted training loss, lower level)
//   F(x, y) = Σ_j ℓ_j(y) / n_val               (clean validation loss, upper level)
// All derivatives are exact, written out in float64 (softmax cross-entropy R-pass, DESIGN §3.2):
//   ∇_y ℓ_i = (p_i − e_{c_i}) ⊗ [a_i, 1];  R{∇_y ℓ_i}(v) = (p_i ⊙ s_i − p_i (p_iᵀ s_i)) ⊗ [a_i, 1]
//   with s_i = V a_i + v_b;  ∂/∂x_i ⟨∇_y f, z⟩ = σ'(x_i) ⟨p_i − e_{c_i}, Z a_i + z_b⟩ / n_train.
// Sharding: rank r of N owns training and validation examples with index ≡ r (mod N); it
// returns partial sums, and x-derivatives only for its own entries (zeros elsewhere).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/bilevel.h"
#include "data/episode_store.h"

namespace mt {

// A labelled set of feature vectors, [n, dim] row-major.
struct LabelledSet {
  int64_t n = 0;
  std::vector<double> features;
  std::vector<int32_t> labels;
};

struct HypercleanData {
  int classes = 0;                    // K
  int dim = 0;                        // D features per example (the model adds the bias)
  LabelledSet train;                  // labels after corruption
  std::vector<uint8_t> corrupted;     // [n_train] 1 where the label was replaced
  std::vector<int32_t> clean_labels;  // [n_train] the true labels
  LabelledSet val, test;              // clean
};

struct HypercleanSpec {
  std::string split = "train";  // store split the classes are drawn from
  int classes = 20;
  int train_per_class = 10, val_per_class = 5, test_per_class = 5;
  double noise = 0.5;  // fraction of training labels replaced by another class
  uint64_t seed = 0;
};

// Draws spec.classes classes of the split (seeded), splits each class's images into training,
// validation and test parts, and replaces the labels of round(noise · n_train) training examples
// (a seeded random subset) by a uniformly drawn other class. Features: pixels / 255 minus the
// mean training image, scaled so that the mean squared norm of a training feature is 1.
// UsageError when the split has too few classes or a class too few images.
HypercleanData make_hyperclean_data(const StoreContents& store, const HypercleanSpec& spec);

class HypercleanProblem : public BilevelProblem {
 public:
  // Keeps a reference to `data`, which must outlive the problem.
  HypercleanProblem(const HypercleanData& data, int rank = 0, int ranks = 1);

  int64_t dim_x() const override { return data_.train.n; }
  int64_t dim_y() const override { return static_cast<int64_t>(k_) * (d_ + 1); }
  void init(double* x, double* y) const override;  // x = 0 (weights ½), y = 0

  BilevelValues values(const double* x, const double* y) const override;
  void grad_y(Blend w, const double* x, const double* y, double* g) const override;
  void grad_x(Blend w, const double* x, const double* y, double* g) const override;
  void hvp_yy(Blend w, const double* x, const double* y, const double* v,
              double* Hv) const override;
  void mixed_xy(Blend w, const double* x, const double* y, const double* z,
                double* out) const override;

  // g ← ∇_y Σ_i c_i ℓ_i(y) over this rank's training examples, c indexed by global example.
  void weighted_train_grad(const double* c, const double* y, double* g) const;

 private:
  // This rank's examples of one set, gathered contiguously.
  struct Shard {
    int64_t m = 0;
    std::vector<int64_t> index;  // global index of each local example
    std::vector<double> a;       // [m, D]
    std::vector<int32_t> label;
  };
  Shard gather(const LabelledSet& s, int rank, int ranks) const;
  // P ← softmax(A Wᵀ + b) for a shard; returns Σ_i c_i ℓ_i when loss is non-null (ℓ into loss).
  void probs(const Shard& s, const double* y, std::vector<double>& P,
             std::vector<double>* loss) const;
  // S ← A Vᵀ + v_b: the logits' directional derivative along v.
  void directional(const Shard& s, const double* v, std::vector<double>& S) const;
  // g += [Gᵀ A, colsum G] for a per-example logit gradient G [m, K].
  void accumulate(const Shard& s, const std::vector<double>& G, double* g) const;
  // Per-example coefficients: c_i = b σ(x_i) / n_train (train), a / n_val (validation).
  std::vector<double> train_coef(double b, const double* x) const;

  const HypercleanData& data_;
  int k_, d_;
  Shard train_, val_;
};

// Test accuracy of the classifier y on a set (replicated work, no sharding).
double classifier_accuracy(const HypercleanData& data, const LabelledSet& set, const double* y);

// Plain gradient descent on Σ_i c_i ℓ_i / Σ c over the training set from y = 0, with the
// sl-BAMM y-schedule β_k = lr (k+1)^{−τ/2}: the baselines (noisy: c = 1; clean-only:
// c = 1 − corrupted). Single process. Returns y.
std::vector<double> train_weighted(const HypercleanData& data, const std::vector<double>& c,
                                   int64_t steps, double lr, double tau);

struct Detection {
  double precision = 0, recall = 0, f1 = 0;
  int64_t flagged = 0;  // examples with σ(x_i) < 0.5
};
// How well "σ(x_i) < 0.5" detects the corrupted training examples.
Detection detect_corrupted(const HypercleanData& data, const std::vector<double>& x);

}  // namespace mt
