// Meta-parameter layout, rate initialisation and multi-step loss weights (core/meta_params.h).
#include "core/meta_params.h"

#include <algorithm>

#include "core/check.h"

namespace mt {

AlgoPreset algo_preset(Algo algo) {
  constexpr Rates fixed = Rates::kFixed;
  constexpr Adapt all = Adapt::kAll;
  constexpr Method unrolled = Method::kUnrolled;
  switch (algo) {
    case Algo::kMaml:
    case Algo::kFomaml:
    case Algo::kUfom:
      return {algo, fixed, all, unrolled, false};
    case Algo::kMetaSgd:  // Li et al. 2017
      return {Algo::kMaml, Rates::kPerParam, all, unrolled, false};
    case Algo::kMamlpp:  // Antoniou et al. 2019: LSLR and the multi-step loss
      return {Algo::kMaml, Rates::kPerLayerStep, all, unrolled, true};
    case Algo::kAnil:  // Raghu et al. 2020
      return {Algo::kMaml, fixed, Adapt::kHead, unrolled, false};
    case Algo::kBoil:  // Oh et al. 2021
      return {Algo::kMaml, fixed, Adapt::kBody, unrolled, false};
    case Algo::kReptile:  // Nichol et al. 2018: no exact path
      return {Algo::kFomaml, fixed, all, Method::kReptile, false};
    case Algo::kImaml:  // Rajeswaran et al. 2019
      return {Algo::kMaml, fixed, all, Method::kImplicit, false};
    case Algo::kSlbamm:
      break;
  }
  throw UsageError("algo = slbamm is a bilevel solver, not a meta-gradient algorithm");
}

bool adapts(const InnerLoop& inner, const std::string& name) {
  const bool head = name.rfind("head.", 0) == 0;
  switch (inner.adapt) {
    case Adapt::kHead:
      return head;
    case Adapt::kBody:
      return !head;
    case Adapt::kAll:
      break;
  }
  return true;
}

ParamLayout meta_layout(const ParamLayout& theta, const InnerLoop& inner) {
  ParamLayout meta = theta;
  if (inner.rates == Rates::kFixed) return meta;
  for (const TensorSpec& t : theta.tensors()) {
    if (!adapts(inner, t.name)) continue;
    if (inner.rates == Rates::kPerParam)
      meta.add("lr." + t.name, t.shape);
    else
      meta.add("lslr." + t.name, {std::max(inner.steps, 1)});
  }
  return meta;
}

template <typename T>
void init_rates(const ParamLayout& theta, const InnerLoop& inner, T* psi) {
  const ParamLayout meta = meta_layout(theta, inner);
  std::fill(psi + theta.total(), psi + meta.total(), static_cast<T>(inner.lr));
}

std::vector<double> msl_weights(int r, int64_t step, int64_t anneal_steps) {
  std::vector<double> w(static_cast<size_t>(std::max(r, 0)), 0.0);
  if (r <= 0) return w;
  const double uniform = 1.0 / r, floor = 0.03 / r;
  double early = uniform;
  if (anneal_steps > 0)
    early = std::max(uniform * (1.0 - static_cast<double>(step) / anneal_steps), floor);
  double rest = 1.0;
  for (int j = 0; j + 1 < r; ++j) {
    w[j] = early;
    rest -= early;
  }
  w[r - 1] = rest;
  return w;
}

template void init_rates<float>(const ParamLayout&, const InnerLoop&, float*);
template void init_rates<double>(const ParamLayout&, const InnerLoop&, double*);

}  // namespace mt
