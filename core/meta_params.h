// The meta-parameters ψ of the algorithm family (DESIGN §4.1): θ followed by the learned inner
// rates, described by one ParamLayout, so that the optimizer, the exact reduction, checkpoints,
// dumps and the metrics treat the rates as they treat θ's tensors. Meta-SGD adds "lr.<tensor>"
// (the tensor's shape) and LSLR "lslr.<tensor>" (shape [r]) for every tensor the inner loop
// adapts; a fixed rate adds nothing (ψ = θ). Also MAML++'s multi-step loss weights.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/meta_gradient.h"
#include "core/param_layout.h"

namespace mt {

// What an algorithm name stands for: the estimator of its gradient path (maml, fomaml or ufom:
// which tasks take the exact path and how it mixes with the first-order one) and its default
// inner rates, adapted tensors, gradient method and objective. maml, fomaml and ufom are the
// unrolled method with a fixed rate on every tensor; the others are the literature's settings.
struct AlgoPreset {
  Algo estimator;
  Rates rates;
  Adapt adapt;
  Method method;
  bool multi_step_loss;
};
// Throws UsageError for slbamm (a bilevel solver, no preset).
AlgoPreset algo_preset(Algo algo);

// Whether the inner loop adapts tensor `name` (the head is every tensor named "head.*").
bool adapts(const InnerLoop& inner, const std::string& name);

// θ's tensors, then one rate tensor per adapted tensor of θ (in θ's order) when rates are learned.
ParamLayout meta_layout(const ParamLayout& theta, const InnerLoop& inner);

// Writes the learned rates' initial value α into ψ after θ (ψ in meta_layout's layout).
template <typename T>
void init_rates(const ParamLayout& theta, const InnerLoop& inner, T* psi);

// MAML++'s weights of L_Q(φ_1) … L_Q(φ_r) at outer step `step`: 1/r each at step 0; the first
// r − 1 fall linearly to 0.03/r over anneal_steps outer steps (stay 1/r when anneal_steps is 0),
// and the last one takes the rest, so they always sum to 1.
std::vector<double> msl_weights(int r, int64_t step, int64_t anneal_steps);

}  // namespace mt
