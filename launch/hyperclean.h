// Data hyper-cleaning as a bilevel problem (DESIGN §3.7) on the framework's models: y is the
// flat parameter vector of a classifier (a Sequential<double>: one Linear layer on the pixels, or
// Conv-4), x_i is a logit per training example whose weight σ(x_i) scales that example's loss.
//   f(x, y) = Σ_i σ(x_i) ℓ_i(y) / n_train      (weighted training loss, lower level)
//   F(x, y) = Σ_j ℓ_j(y) / n_val               (clean validation loss, upper level)
// Every derivative comes from the model's layer passes (DESIGN §3.2): ∇_y and ∇²_yy · v from
// loss_grad / hvp on batches weighted per example (Batch::weight), ∂f/∂x_i = σ'(x_i) ℓ_i / n_train
// from example_losses, and ∇²_xy f · z = σ'(x_i) ⟨∇_y ℓ_i, z⟩ / n_train from loss_directional.
// Sharding: rank r of N owns training and validation examples with index ≡ r (mod N) and runs
// them as one batch; it returns partial sums, and x-derivatives only for its own entries (zeros
// elsewhere). With Conv-4, batch norm uses the statistics of each rank's batch, so f and F on N
// ranks are a different (equally valid) function than on one rank, not a reordering of it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/bilevel.h"
#include "data/episode_store.h"
#include "models/sequential.h"

namespace mt {

// A labelled set of images [n, c, h, w] row-major, in the two scalings the classifiers use.
struct LabelledSet {
  int64_t n = 0;
  std::vector<double> pixels;    // pixel / 255, in [0, 1] (Conv-4 input)
  std::vector<double> features;  // standardised pixels (linear classifier input)
  std::vector<int32_t> labels;
};

struct HypercleanData {
  int classes = 0;                    // K
  Shape item;                         // shape of one image
  int dim = 0;                        // D = item.size() values per example
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
// (a seeded random subset) by a uniformly drawn other class. pixels: image / 255; features:
// pixels minus the mean training image, scaled so that the mean squared norm of a training
// feature is 1. UsageError when the split has too few classes or a class too few images.
HypercleanData make_hyperclean_data(const StoreContents& store, const HypercleanSpec& spec);

// The classifier y. linear: Linear(D → K) on the standardised features, y = [W (K×D), b (K)].
// conv4: make_conv4 (max-pool) with `filters` channels on the pixels in [0, 1]; batch norm uses
// the statistics of the batch at hand (a shard of the training or validation set, the test set).
struct HypercleanModel {
  std::string name = "linear";  // linear | conv4
  int filters = 16;             // conv4 only
  uint64_t seed = 0;            // initial y = the model's init(seed)
};

class HypercleanProblem : public BilevelProblem {
 public:
  // Keeps a reference to `data`, which must outlive the problem. Not thread-safe (one
  // workspace and the weights of the shard's batches are reused by every call).
  HypercleanProblem(const HypercleanData& data, const HypercleanModel& model = {}, int rank = 0,
                    int ranks = 1);

  int64_t dim_x() const override { return data_.train.n; }
  int64_t dim_y() const override { return model_->layout().total(); }
  void init(double* x, double* y) const override;  // x = 0 (weights ½), y = the model's init

  BilevelValues values(const double* x, const double* y) const override;
  void grad_y(Blend w, const double* x, const double* y, double* g) const override;
  void grad_x(Blend w, const double* x, const double* y, double* g) const override;
  void hvp_yy(Blend w, const double* x, const double* y, const double* v,
              double* Hv) const override;
  void mixed_xy(Blend w, const double* x, const double* y, const double* z,
                double* out) const override;

  const HypercleanData& data() const { return data_; }
  const Model<double>& model() const { return *model_; }
  // A batch of all of `set`'s examples with indices ≡ rank (mod ranks), in the model's scaling.
  Batch<double> batch(const LabelledSet& set, int rank = 0, int ranks = 1) const;

 private:
  // Sets the shard batches' weights for a·F + b·f so that the model's weighted mean equals this
  // shard's share of the blend: w_i = b σ(x_i) m_train / n_train, w_j = a m_val / n_val.
  void weigh_train(double b, const double* x) const;
  void weigh_val(double a) const;
  // σ'(x_i) / n_train of training example i of the shard.
  double dsigma(const double* x, int64_t i) const;

  const HypercleanData& data_;
  std::unique_ptr<Sequential<double>> model_;
  bool pixels_;  // conv4 reads pixels, linear the standardised features
  uint64_t seed_;
  std::vector<int64_t> train_index_;  // global index of each local training example
  mutable Batch<double> train_, val_;
  mutable std::unique_ptr<Workspace> ws_;
  mutable std::vector<double> scratch_;  // dim_y doubles
};

// Accuracy of the classifier y on all of a set (one batch, replicated work).
double classifier_accuracy(const HypercleanProblem& problem, const LabelledSet& set,
                           const double* y);

// Plain gradient descent on Σ_i c_i ℓ_i / Σ c over the whole training set from the problem's
// initial y, with the sl-BAMM y-schedule β_k = lr (k+1)^{−τ/2}: the baselines (noisy: c = 1;
// clean-only: c = 1 − corrupted). Single process. Returns y.
std::vector<double> train_weighted(const HypercleanProblem& problem, const std::vector<double>& c,
                                   int64_t steps, double lr, double tau);

struct Detection {
  double precision = 0, recall = 0, f1 = 0;
  int64_t flagged = 0;  // examples with σ(x_i) < 0.5
};
// How well "σ(x_i) < 0.5" detects the corrupted training examples.
Detection detect_corrupted(const HypercleanData& data, const std::vector<double>& x);

}  // namespace mt
