// Outer optimizers on flat parameter buffers (DESIGN §3.8): Adam (β1 0.9, β2 0.999, ε 1e-8)
// and SGD with momentum. Their state (moments, step count) is exposed for checkpoints.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace mt {

// The outer step size over a run: the update that follows t earlier updates uses lr·factor(t).
// constant: 1; cosine: ½(1 + cos(π·t/total)), annealed from lr to 0 at `total` (the run's outer
// steps; MAML++ and most recent few-shot work anneal so). With warmup = w > 0 the factor is
// further scaled by (t + 1)/w during the first w updates. A function of t only, so a resumed
// run (whose optimizer step count is restored) continues the same schedule.
struct LrSchedule {
  enum class Kind { kConstant, kCosine } kind = Kind::kConstant;
  int64_t warmup = 0;
  int64_t total = 1;
  double factor(int64_t t) const;
};

template <typename T>
class Optimizer {
 public:
  virtual ~Optimizer() = default;
  virtual std::string name() const = 0;
  // θ ← update(θ, g), in place. g is the averaged meta-gradient.
  virtual void step(T* theta, const T* grad) = 0;
  int64_t steps() const { return t_; }
  // Named state buffers in the parameter layout (e.g. "m", "v"), for checkpoints.
  std::vector<std::pair<std::string, std::vector<T>*>> state() {
    std::vector<std::pair<std::string, std::vector<T>*>> s;
    for (auto& [name, buf] : buffers_) s.emplace_back(name, &buf);
    return s;
  }
  void set_steps(int64_t t) { t_ = t; }
  void set_schedule(const LrSchedule& s) { schedule_ = s; }

 protected:
  Optimizer(int64_t dim, std::vector<std::string> names);
  // The step size of the update that follows t earlier updates.
  double lr_at(double lr, int64_t t) const { return lr * schedule_.factor(t); }
  LrSchedule schedule_;
  std::vector<std::pair<std::string, std::vector<T>>> buffers_;
  int64_t dim_;
  int64_t t_ = 0;
};

template <typename T>
class Adam : public Optimizer<T> {
 public:
  Adam(int64_t dim, double lr, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8);
  std::string name() const override { return "adam"; }
  void step(T* theta, const T* grad) override;

 private:
  double lr_, beta1_, beta2_, eps_;
};

template <typename T>
class SgdMomentum : public Optimizer<T> {
 public:
  SgdMomentum(int64_t dim, double lr, double momentum);
  std::string name() const override { return "sgd"; }
  void step(T* theta, const T* grad) override;  // v ← μ v + g; θ ← θ − lr v

 private:
  double lr_, momentum_;
};

template <typename T>
std::unique_ptr<Optimizer<T>> make_optimizer(const std::string& name, int64_t dim, double lr,
                                             double momentum, const LrSchedule& schedule = {});

}  // namespace mt
