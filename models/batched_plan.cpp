// The plan of a task-batched network (models/batched_net.h) from the per-task CPU model: each
// layer becomes a node, each residual block (models/residual.h) its branches' nodes, an add node
// and its post-activation; the parameter tensors are numbered in the model's layout order.
#include <string>

#include "core/check.h"
#include "models/batch_norm.h"
#include "models/batched_net.h"
#include "models/conv2d.h"
#include "models/relu.h"
#include "models/residual.h"

namespace mt {

namespace {

// The node of one plain layer reading node `input`; throws naming a layer the plan lacks.
template <typename T>
NetLayer plain_node(const Layer<T>& layer, int input) {
  NetLayer l;
  l.in = layer.in_shape();
  l.out = layer.out_shape();
  l.input = {input, kNetInput};
  const std::string kind = layer.kind();
  if (const auto* conv = dynamic_cast<const Conv2d<T>*>(&layer)) {
    l.kind = NetLayer::kConv;
    l.stride = conv->stride();
    l.kernel = conv->kernel();
  } else if (const auto* relu = dynamic_cast<const Relu<T>*>(&layer)) {
    l.kind = NetLayer::kRelu;
    l.slope = static_cast<double>(relu->slope());
  } else if (kind == "batch_norm") {
    l.kind = NetLayer::kBatchNorm;
  } else if (kind == "max_pool2") {
    l.kind = NetLayer::kMaxPool;
  } else if (kind == "global_mean_pool") {
    l.kind = NetLayer::kMeanPool;
  } else if (kind == "linear") {
    l.kind = NetLayer::kLinear;
  } else {
    throw Error(ExitCode::kRuntime,
                detail::concat("the batched backends have no layer '", kind, "'"));
  }
  return l;
}

// Appends `layer` reading node `input` and returns the new node; `tensor` counts the parameter
// tensors of the nodes so far. A batch norm that ends in its activation (models/batch_norm.h)
// becomes two nodes, the batch norm and a (leaky) ReLU reading it.
template <typename T>
int append_layer(std::vector<NetLayer>& plan, const Layer<T>& layer, int input, int& tensor) {
  NetLayer l = plain_node(layer, input);
  const int params = static_cast<int>(layer.param_shapes().size());
  if (params > 0) l.param = tensor;
  tensor += params;
  plan.push_back(l);
  const int node = static_cast<int>(plan.size()) - 1;
  const auto* bn = dynamic_cast<const BatchNorm<T>*>(&layer);
  if (!bn || !bn->has_activation()) return node;
  NetLayer act;
  act.kind = NetLayer::kRelu;
  act.in = act.out = l.out;
  act.input = {node, kNetInput};
  act.slope = static_cast<double>(bn->slope());
  plan.push_back(act);
  return node + 1;
}

// A residual block: main branch, shortcut (both from `input`), their sum, post; returns the
// block's output node. The order of parameters is the block's (main, shortcut, post).
template <typename T>
int append_block(std::vector<NetLayer>& plan, const Residual<T>& block, int input, int& tensor) {
  int main = input, shortcut = input;
  for (const Layer<T>* l : block.main_layers()) main = append_layer(plan, *l, main, tensor);
  for (const Layer<T>* l : block.shortcut_layers())
    shortcut = append_layer(plan, *l, shortcut, tensor);
  MT_CHECK(main != input, "a residual block without a main branch");
  NetLayer sum;
  sum.kind = NetLayer::kAdd;
  sum.in = sum.out = plan[main].out;
  sum.input = {main, shortcut};
  plan.push_back(sum);
  const int out = static_cast<int>(plan.size()) - 1;
  return block.post() ? append_layer(plan, *block.post(), out, tensor) : out;
}

// A graph BatchedNet can run: topological, every node but the last read by some node, add
// nodes summing equal shapes, and a linear head last.
void check_plan(const std::vector<NetLayer>& plan) {
  MT_CHECK(!plan.empty() && plan.back().kind == NetLayer::kLinear,
           "a batched net must end in a linear head");
  const std::vector<int> readers = consumers(plan);
  for (size_t l = 0; l < plan.size(); ++l) {
    const NetLayer& L = plan[l];
    for (int s = 0; s < L.arity(); ++s)
      MT_CHECK(L.input[s] >= kNetInput && L.input[s] < static_cast<int>(l), "plan node ", l,
               " reads node ", L.input[s], ": not in topological order");
    MT_CHECK(L.kind != NetLayer::kAdd || L.input[0] != L.input[1] || L.input[0] != kNetInput,
             "plan node ", l, " adds the network input to itself");
    MT_CHECK(readers[l] > 0 || l + 1 == plan.size(), "plan node ", l, "'s output is never read");
  }
}

}  // namespace

template <typename T>
std::vector<NetLayer> batched_plan(const Sequential<T>& net) {
  std::vector<NetLayer> plan;
  int tensor = 0, last = kNetInput;
  for (const auto& layer : net.layers()) {
    const auto* block = dynamic_cast<const Residual<T>*>(layer.get());
    last =
        block ? append_block(plan, *block, last, tensor) : append_layer(plan, *layer, last, tensor);
  }
  check_plan(plan);
  MT_CHECK(tensor == static_cast<int>(net.layout().tensors().size()), "the plan numbers ", tensor,
           " parameter tensors; the model has ", net.layout().tensors().size());
  return plan;
}

template std::vector<NetLayer> batched_plan<float>(const Sequential<float>&);
template std::vector<NetLayer> batched_plan<double>(const Sequential<double>&);

}  // namespace mt
