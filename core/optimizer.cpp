// Adam and SGD with momentum (core/optimizer.h).
#include "core/optimizer.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"

namespace mt {

double LrSchedule::factor(int64_t t) const {
  double f = 1;
  if (kind == Kind::kCosine)
    f = 0.5 *
        (1 + std::cos(M_PI * std::min(1.0, static_cast<double>(t) /
                                               static_cast<double>(std::max<int64_t>(total, 1)))));
  if (warmup > 0 && t < warmup) f *= static_cast<double>(t + 1) / static_cast<double>(warmup);
  return f;
}

template <typename T>
Optimizer<T>::Optimizer(int64_t dim, std::vector<std::string> names) : dim_(dim) {
  for (auto& n : names) buffers_.emplace_back(std::move(n), std::vector<T>(dim, T(0)));
}

template <typename T>
Adam<T>::Adam(int64_t dim, double lr, double beta1, double beta2, double eps)
    : Optimizer<T>(dim, {"m", "v"}), lr_(lr), beta1_(beta1), beta2_(beta2), eps_(eps) {}

template <typename T>
void Adam<T>::step(T* theta, const T* grad) {
  const int64_t t = ++this->t_;
  const double c1 = 1 - std::pow(beta1_, static_cast<double>(t));
  const double c2 = 1 - std::pow(beta2_, static_cast<double>(t));
  const T step = static_cast<T>(this->lr_at(lr_, t - 1) / c1), b1 = static_cast<T>(beta1_),
          b2 = static_cast<T>(beta2_), e = static_cast<T>(eps_), rc2 = static_cast<T>(1 / c2);
  T* m = this->buffers_[0].second.data();
  T* v = this->buffers_[1].second.data();
  for (int64_t i = 0; i < this->dim_; ++i) {
    m[i] = b1 * m[i] + (1 - b1) * grad[i];
    v[i] = b2 * v[i] + (1 - b2) * grad[i] * grad[i];
    theta[i] -= step * m[i] / (std::sqrt(v[i] * rc2) + e);
  }
}

template <typename T>
SgdMomentum<T>::SgdMomentum(int64_t dim, double lr, double momentum)
    : Optimizer<T>(dim, {"velocity"}), lr_(lr), momentum_(momentum) {}

template <typename T>
void SgdMomentum<T>::step(T* theta, const T* grad) {
  const T mu = static_cast<T>(momentum_), lr = static_cast<T>(this->lr_at(lr_, this->t_++));
  T* vel = this->buffers_[0].second.data();
  for (int64_t i = 0; i < this->dim_; ++i) {
    vel[i] = mu * vel[i] + grad[i];
    theta[i] -= lr * vel[i];
  }
}

template <typename T>
std::unique_ptr<Optimizer<T>> make_optimizer(const std::string& name, int64_t dim, double lr,
                                             double momentum, const LrSchedule& schedule) {
  std::unique_ptr<Optimizer<T>> opt;
  if (name == "adam") {
    opt = std::make_unique<Adam<T>>(dim, lr);
  } else {
    MT_REQUIRE(name == "sgd", "outer.optimizer = ", name, ": must be adam or sgd");
    opt = std::make_unique<SgdMomentum<T>>(dim, lr, momentum);
  }
  opt->set_schedule(schedule);
  return opt;
}

template class Adam<float>;
template class Adam<double>;
template class SgdMomentum<float>;
template class SgdMomentum<double>;
template std::unique_ptr<Optimizer<float>> make_optimizer<float>(const std::string&, int64_t,
                                                                 double, double, const LrSchedule&);
template std::unique_ptr<Optimizer<double>> make_optimizer<double>(const std::string&, int64_t,
                                                                   double, double,
                                                                   const LrSchedule&);

}  // namespace mt
