// Config loading: flattens the built-in default.yaml, a user file and key=value overrides into
// one value per dotted key (remembering where each came from), then parses and validates them
// through one table of fields, which also drives to_yaml.
#include "launch/config.h"

#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <type_traits>

#include "core/check.h"
#include "core/meta_params.h"
#include "default_config_yaml.h"  // generated from launch/configs/default.yaml
#include "models/resnet12.h"      // ResNet12Spec: the default widths

namespace mt {
namespace {

using detail::concat;

// The value of one dotted key and where it was set, for error messages.
struct Setting {
  YAML::Node value;
  std::string origin;
};
using Settings = std::map<std::string, Setting>;

// Replaces a setting. Not by assignment: YAML::Node's operator= writes through to the node it
// refers to, which would alter the document an earlier layer came from.
void put(Settings& settings, const std::string& key, const Setting& s) {
  settings.erase(key);
  settings.emplace(key, s);
}

// One leaf of the schema: parses + validates its value into the Config, and writes it back as a
// YAML scalar.
struct Field {
  std::string key;
  std::function<void(Config&, const std::string& key, const YAML::Node&)> parse;
  std::function<std::string(const Config&)> emit;
};

// ---- scalar parsing ------------------------------------------------------------------------

const std::string& scalar(const std::string& key, const YAML::Node& v,
                          const std::string& expected) {
  if (v.IsScalar()) return v.Scalar();
  const char* got = v.IsMap() ? "a map" : v.IsSequence() ? "a list" : "no value";
  throw UsageError(concat(key, ": expected ", expected, ", got ", got));
}

std::string shown(const std::string& text) { return text.empty() ? "\"\"" : text; }

[[noreturn]] void reject(const std::string& key, const std::string& text, const std::string& why) {
  throw UsageError(concat(key, " = ", shown(text), ": ", why));
}

template <typename Int>
Int parse_integer(const std::string& key, const YAML::Node& v) {
  const std::string& text = scalar(key, v, "an integer");
  long long x = 0;
  if (!YAML::convert<long long>::decode(v, x)) reject(key, text, "expected an integer");
  if (x < std::numeric_limits<Int>::min() || x > std::numeric_limits<Int>::max())
    reject(key, text, concat("out of range (at most ", std::numeric_limits<Int>::max(), ")"));
  return static_cast<Int>(x);
}

double parse_real(const std::string& key, const YAML::Node& v, const std::string& expected) {
  const std::string& text = scalar(key, v, expected);
  double x = 0;
  if (!YAML::convert<double>::decode(v, x)) reject(key, text, concat("expected ", expected));
  if (!std::isfinite(x)) reject(key, text, "must be a finite number");
  return x;
}

// Shortest decimal text that reads back as the same double; always looks like a real number.
// Whole numbers below 1e15 in plain digits (300.0, not 3e+02).
std::string format_real(double x) {
  char buf[40];
  if (x == std::floor(x) && std::fabs(x) < 1e15) {
    std::snprintf(buf, sizeof buf, "%.1f", x);
    return buf;
  }
  for (int digits = 1; digits <= 17; ++digits) {
    std::snprintf(buf, sizeof buf, "%.*g", digits, x);
    if (std::strtod(buf, nullptr) == x) break;
  }
  std::string s = buf;
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

// Plain YAML when that reads back as the same string, else double-quoted with escapes.
std::string format_string(const std::string& s) {
  bool plain = !s.empty() && s != "null" && s != "Null" && s != "NULL" && s.front() != '-';
  for (char c : s) {
    const bool safe = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '_' || c == '.' || c == '/' || c == '-' || c == '+';
    plain = plain && safe;
  }
  if (plain) return s;
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      char esc[8];
      std::snprintf(esc, sizeof esc, "\\x%02x", c);
      out += esc;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

// ---- named choices -------------------------------------------------------------------------

template <typename E>
struct Choice {
  const char* name;
  E value;
};

constexpr Choice<Algo> kAlgos[] = {{"maml", Algo::kMaml},       {"fomaml", Algo::kFomaml},
                                   {"ufom", Algo::kUfom},       {"slbamm", Algo::kSlbamm},
                                   {"metasgd", Algo::kMetaSgd}, {"mamlpp", Algo::kMamlpp},
                                   {"anil", Algo::kAnil},       {"boil", Algo::kBoil},
                                   {"reptile", Algo::kReptile}, {"imaml", Algo::kImaml}};
constexpr Choice<const char*> kRates[] = {{"auto", "auto"},
                                          {"fixed", "fixed"},
                                          {"per_param", "per_param"},
                                          {"per_layer_step", "per_layer_step"}};
constexpr Choice<const char*> kAdapts[] = {
    {"auto", "auto"}, {"all", "all"}, {"head", "head"}, {"body", "body"}};
constexpr Choice<const char*> kAutoSwitches[] = {
    {"auto", "auto"}, {"true", "true"}, {"false", "false"}};
constexpr Choice<Config::Outer::Optimizer> kOptimizers[] = {
    {"adam", Config::Outer::Optimizer::kAdam}, {"sgd", Config::Outer::Optimizer::kSgd}};
constexpr Choice<Config::Model::Pool> kPools[] = {{"max", Config::Model::Pool::kMax},
                                                  {"stride", Config::Model::Pool::kStride}};
constexpr Choice<Config::Device> kDevices[] = {{"cpu", Config::Device::kCpu},
                                               {"cuda", Config::Device::kCuda}};
constexpr Choice<const char*> kModels[] = {{"conv4", "conv4"}, {"resnet12", "resnet12"}};
constexpr Choice<const char*> kActivations[] = {
    {"auto", "auto"}, {"relu", "relu"}, {"leaky_relu", "leaky_relu"}};
constexpr Choice<bool> kSwitches[] = {{"true", true}, {"false", false}};
constexpr Choice<const char*> kLrSchedules[] = {{"constant", "constant"}, {"cosine", "cosine"}};
constexpr Choice<const char*> kConvForms[] = {
    {"auto", "auto"}, {"cudnn", "cudnn"}, {"gemm", "gemm"}};
constexpr Choice<const char*> kBackends[] = {
    {"auto", "auto"}, {"single", "single"}, {"mpi", "mpi"}, {"nccl", "nccl"}};
constexpr Choice<const char*> kBilevelProblems[] = {{"toy", "toy"}, {"hyperclean", "hyperclean"}};
constexpr Choice<const char*> kBilevelVariants[] = {
    {"averaged", "averaged"}, {"plain", "plain"}, {"regularised", "regularised"}};
constexpr Choice<const char*> kHypercleanModels[] = {{"linear", "linear"}, {"conv4", "conv4"}};
constexpr Choice<const char*> kZSteps[] = {{"line_search", "line_search"},
                                           {"scheduled", "scheduled"}};
constexpr Choice<const char*> kAssignments[] = {{"modulo", "modulo"}, {"balanced", "balanced"}};
constexpr Choice<const char*> kReductions[] = {{"exact", "exact"}, {"float", "float"}};
constexpr Choice<const char*> kResidentModes[] = {
    {"auto", "auto"}, {"host", "host"}, {"device", "device"}, {"off", "off"}};

template <typename E, size_t N>
E parse_choice(const std::string& key, const std::string& text, const Choice<E> (&table)[N],
               const char* meaning) {
  std::string names;
  for (const auto& c : table) {
    if (text == c.name) return c.value;
    names += names.empty() ? c.name : concat(", ", c.name);
  }
  reject(key, text, concat("must be one of ", names, " (", meaning, ")"));
}

template <typename V, typename E, size_t N>
std::string choice_name(const V& value, const Choice<E> (&table)[N]) {
  for (const auto& c : table)
    if (c.value == value) return c.name;
  throw Error(ExitCode::kRuntime, "config: enum value without a name");
}

TrajectoryMode parse_trajectory_value(const std::string& key, const std::string& text) {
  if (text == "store") return {TrajectoryMode::kStore, 1};
  if (text == "recompute") return {TrajectoryMode::kRecompute, 1};
  const std::string prefix = "checkpoint:";
  const std::string digits =
      text.compare(0, prefix.size(), prefix) == 0 ? text.substr(prefix.size()) : std::string();
  const bool numeric = !digits.empty() && digits.size() <= 9 &&
                       digits.find_first_not_of("0123456789") == std::string::npos;
  const int every = numeric ? std::atoi(digits.c_str()) : 0;
  if (every < 1)
    reject(key, text,
           "must be store, recompute or checkpoint:C with an integer C >= 1 (keep every C-th "
           "inner step)");
  return {TrajectoryMode::kCheckpoint, every};
}

// ---- the schema ----------------------------------------------------------------------------
// Accessors are generic lambdas `[](auto& c) -> auto& { return c.x; }` (REF(x) in the table) so
// that one accessor serves both parsing (Config&) and emitting (const Config&).

template <typename Ref>
Field integer(const char* key, Ref ref, long long min, const char* meaning) {
  return {key,
          [ref, min, meaning](Config& c, const std::string& k, const YAML::Node& v) {
            using Int = std::remove_reference_t<decltype(ref(c))>;
            const Int x = parse_integer<Int>(k, v);
            if (x < min) reject(k, v.Scalar(), concat("must be >= ", min, " (", meaning, ")"));
            ref(c) = x;
          },
          [ref](const Config& c) { return std::to_string(ref(c)); }};
}

// A real number in the interval from lo to hi (hi = inf: unbounded), ends open or closed.
struct Interval {
  double lo;
  bool lo_open;
  double hi = std::numeric_limits<double>::infinity();
  bool hi_open = true;

  bool contains(double x) const {
    return (lo_open ? x > lo : x >= lo) && (hi_open ? x < hi : x <= hi);
  }
  std::string describe() const {
    if (std::isinf(hi)) return concat(lo_open ? "> " : ">= ", lo);
    return concat("in ", lo_open ? "(" : "[", lo, ", ", hi, hi_open ? ")" : "]");
  }
};

template <typename Ref>
Field real(const char* key, Ref ref, Interval range, const char* meaning) {
  return {key,
          [ref, range, meaning](Config& c, const std::string& k, const YAML::Node& v) {
            const double x = parse_real(k, v, "a number");
            if (!range.contains(x))
              reject(k, v.Scalar(), concat("must be ", range.describe(), " (", meaning, ")"));
            ref(c) = x;
          },
          [ref](const Config& c) { return format_real(ref(c)); }};
}

template <typename Ref, typename E, size_t N>
Field choice(const char* key, Ref ref, const Choice<E> (&table)[N], const char* meaning) {
  return {key,
          [ref, &table, meaning](Config& c, const std::string& k, const YAML::Node& v) {
            ref(c) = parse_choice(k, scalar(k, v, "a name"), table, meaning);
          },
          [ref, &table](const Config& c) { return choice_name(ref(c), table); }};
}

template <typename Ref>
Field text(const char* key, Ref ref, bool allow_empty, const char* meaning) {
  return {key,
          [ref, allow_empty, meaning](Config& c, const std::string& k, const YAML::Node& v) {
            const std::string& s = scalar(k, v, "a string");
            if (s.empty() && !allow_empty)
              reject(k, s, concat("must not be empty (", meaning, ")"));
            ref(c) = s;
          },
          [ref](const Config& c) { return format_string(ref(c)); }};
}

// debug.stall: "RANK:STEP:SECONDS" or "" (off), checked when read.
Field debug_stall() {
  return {"debug.stall",
          [](Config& c, const std::string& k, const YAML::Node& v) {
            const std::string& s = scalar(k, v, "a string");
            c.debug.stall = {};
            if (s.empty()) return;
            int rank = -1;
            long long step = 0;
            double seconds = 0;
            char extra = 0;
            if (std::sscanf(s.c_str(), "%d:%lld:%lf%c", &rank, &step, &seconds, &extra) != 3 ||
                rank < 0 || step < 1 || !(seconds > 0 && seconds < 1e6))
              reject(k, s,
                     "must be RANK:STEP:SECONDS, e.g. 1:5:120 (rank 1 sleeps 120 s before "
                     "step 5), or empty");
            c.debug.stall = {s, rank, static_cast<int64_t>(step), seconds};
          },
          [](const Config& c) { return format_string(c.debug.stall.text); }};
}

Field ufom_q() {
  return {"ufom.q",
          [](Config& c, const std::string& k, const YAML::Node& v) {
            const char* expected = "a number in [0, 1] or \"adaptive\"";
            const std::string& s = scalar(k, v, expected);
            c.ufom.adaptive = s == "adaptive";
            c.ufom.q = 0;
            if (c.ufom.adaptive) return;
            double q = -1;
            if (!YAML::convert<double>::decode(v, q) || !(q >= 0 && q <= 1))
              reject(k, s, concat("must be ", expected, " (probability of the exact path)"));
            c.ufom.q = q;
          },
          [](const Config& c) { return c.ufom.adaptive ? "adaptive" : format_real(c.ufom.q); }};
}

std::string widths_text(const std::vector<int>& widths) {
  std::string s;
  for (int w : widths) s += (s.empty() ? "" : ",") + std::to_string(w);
  return s;
}

// model.widths: "auto" (empty), or positive integers as a YAML list or separated by commas.
std::vector<int> parse_widths(const std::string& key, const YAML::Node& v) {
  const char* expected =
      "auto, or positive integers separated by commas (64,160,320,640) or as a list";
  std::vector<std::string> items;
  std::string text;
  if (v.IsSequence()) {
    for (const auto& e : v) {
      items.push_back(scalar(key, e, "a list of integers"));
      text += (text.empty() ? "" : ", ") + items.back();
    }
    text = "[" + text + "]";
  } else {
    text = scalar(key, v, expected);
    if (text == "auto") return {};
    std::stringstream in(text);
    for (std::string item; std::getline(in, item, ',');) items.push_back(item);
  }
  std::vector<int> widths;
  for (std::string item : items) {
    item.erase(0, item.find_first_not_of(' '));
    item.erase(item.find_last_not_of(' ') + 1);
    long long w = 0;
    if (item.empty() || !YAML::convert<long long>::decode(YAML::Node(item), w) || w < 1 ||
        w > std::numeric_limits<int>::max())
      reject(key, text, concat("expected ", expected));
    widths.push_back(static_cast<int>(w));
  }
  if (widths.empty()) reject(key, text, concat("expected ", expected));
  return widths;
}

// Conv-4 keeps its width in model.filters and writes model.widths as auto; ResNet-12 its four.
Field model_widths() {
  return {"model.widths",
          [](Config& c, const std::string& k, const YAML::Node& v) {
            c.model.widths = parse_widths(k, v);
          },
          [](const Config& c) {
            return c.model.name == "conv4" ? std::string("auto") : widths_text(c.model.widths);
          }};
}

Field inner_trajectory() {
  return {"inner.trajectory",
          [](Config& c, const std::string& k, const YAML::Node& v) {
            c.inner.trajectory = parse_trajectory_value(k, scalar(k, v, "a trajectory mode"));
          },
          [](const Config& c) { return to_string(c.inner.trajectory); }};
}

// Every key, in the order of default.yaml; to_yaml writes them in this order.
#define REF(member) \
  [](auto& c) -> auto& { return c.member; }
const std::vector<Field>& schema() {
  static const std::vector<Field> fields = {
      choice("algo", REF(algo), kAlgos, "training algorithm"),
      integer("seed", REF(seed), 0, "random seed"),
      integer("steps", REF(steps), 0, "number of outer steps"),
      integer("budget.grad_evals", REF(budget.grad_evals), 0,
              "gradient evaluations to spend, 0 = no budget"),
      integer("meta_batch", REF(meta_batch), 1, "tasks per outer step"),
      integer("threads", REF(threads), 0, "CPU worker threads, 0 = all cores"),
      integer("task.ways", REF(task.ways), 2, "classes per episode"),
      integer("task.shots", REF(task.shots), 1, "support examples per class"),
      integer("task.queries", REF(task.queries), 1, "query examples per class"),
      integer("inner.steps", REF(inner.steps), 0, "number of inner SGD steps r"),
      integer("inner.eval_steps", REF(inner.eval_steps), 0,
              "number of inner SGD steps at evaluation"),
      real("inner.lr", REF(inner.lr), {0, true}, "inner step size alpha"),
      inner_trajectory(),
      integer("inner.truncate", REF(inner.truncate), -1,
              "-1 = all inner steps, else the last k steps"),
      choice(
          "inner.rates", REF(inner.rates), kRates,
          "inner step sizes: fixed, learned per parameter or per tensor and step; auto = algo's"),
      choice("inner.adapt", REF(inner.adapt), kAdapts,
             "tensors the inner loop adapts: all, head, body; auto = algo's"),
      choice("inner.multi_step_loss", REF(inner.multi_step_loss), kAutoSwitches,
             "outer loss summed over the inner steps (MAML++); auto = algo's"),
      integer("inner.msl_anneal_steps", REF(inner.msl_anneal_steps), 0,
              "outer steps over which the multi-step loss moves to the last step"),
      integer("inner.first_order_steps", REF(inner.first_order_steps), 0,
              "outer steps of first order before the exact path (derivative-order annealing)"),
      choice("outer.optimizer", REF(outer.optimizer), kOptimizers, "outer optimizer"),
      real("outer.lr", REF(outer.lr), {0, true}, "outer step size"),
      real("outer.momentum", REF(outer.momentum), {0, false, 1, true}, "SGD momentum"),
      choice("outer.schedule", REF(outer.schedule), kLrSchedules,
             "outer step size over the run: constant, or cosine annealed to 0 at steps"),
      integer("outer.warmup", REF(outer.warmup), 0, "outer steps of linear step-size warm-up"),
      real("imaml.prox", REF(imaml.prox), {0, true}, "iMAML proximal weight"),
      integer("imaml.cg_steps", REF(imaml.cg_steps), 1, "iMAML conjugate-gradient steps"),
      ufom_q(),
      real("ufom.q_min", REF(ufom.q_min), {0, true, 1, false}, "floor of the adaptive q"),
      real("ufom.d2_scale", REF(ufom.d2_scale), {0, true}, "scale of D^2 in adaptive q"),
      real("ufom.adjoint_clip", REF(ufom.adjoint_clip), {0, false},
           "elementwise adjoint clip, 0 = off"),
      choice("model.name", REF(model.name), kModels, "backbone"),
      integer("model.filters", REF(model.filters), 1, "channels per conv layer of conv4"),
      model_widths(),
      choice("model.activation", REF(model.activation), kActivations,
             "activation; auto = relu for conv4, leaky_relu for resnet12"),
      choice("model.pool", REF(model.pool), kPools, "downsampling of conv4"),
      text("data.path", REF(data.path), false, "episode store file, or glyphs"),
      text("data.train_split", REF(data.train_split), false, "training split"),
      text("data.eval_split", REF(data.eval_split), false, "evaluation split"),
      integer("data.prefetch", REF(data.prefetch), 0,
              "background threads drawing training episodes ahead, 0 = inline"),
      choice("data.resident", REF(data.resident), kResidentModes,
             "where the store's images live: auto, host or device memory, or off (the file)"),
      integer("eval.every", REF(eval.every), 0,
              "outer steps between evaluations, 0 = only at the end"),
      integer("eval.episodes", REF(eval.episodes), 1, "episodes per evaluation"),
      text("checkpoint.dir", REF(checkpoint.dir), false, "checkpoint directory"),
      integer("checkpoint.every", REF(checkpoint.every), 0,
              "outer steps between checkpoints, 0 = only at the end"),
      integer("checkpoint.keep", REF(checkpoint.keep), 1, "checkpoints kept"),
      choice("checkpoint.overwrite", REF(checkpoint.overwrite), kSwitches,
             "a fresh run clears an earlier run's checkpoints and metrics from checkpoint.dir"),
      text("resume", REF(resume), false, "none, latest or a checkpoint file"),
      choice("dist.backend", REF(dist.backend), kBackends, "communicator backend"),
      choice("dist.assign", REF(dist.assign), kAssignments, "task-to-rank assignment"),
      choice("dist.reduce", REF(dist.reduce), kReductions,
             "meta-batch sum: exact (same bits for any rank count) or float"),
      integer("dist.check_every", REF(dist.check_every), 0,
              "steps between parameter checksum comparisons of the ranks, 0 = never"),
      real("dist.timeout", REF(dist.timeout), {0, true, 1e8},
           "seconds a collective (MPI or NCCL) may wait for its peers before the job aborts; "
           "three times that until the first step is done"),
      choice("device", REF(device), kDevices, "compute device"),
      choice("cuda.graphs", REF(cuda.graphs), kSwitches,
             "replay CUDA Graphs of the inner and adjoint steps (false = eager launches)"),
      choice("cuda.conv", REF(cuda.conv), kConvForms,
             "convolution form: gemm (batch-invariant bits), cudnn (grouped) or auto (gemm; "
             "with cuda.tune the faster per layer and pass)"),
      choice("cuda.tune", REF(cuda.tune), kSwitches,
             "time the convolution forms at start-up (not reproducible across runs or ranks)"),
      text("log.jsonl", REF(log.jsonl), true, "metrics log file"),
      integer("log.every", REF(log.every), 1, "outer steps between metrics lines"),
      integer("log.bias_every", REF(log.bias_every), 0,
              "outer steps between first-order bias probes, 0 = never"),
      integer("log.bias_tasks", REF(log.bias_tasks), 2, "tasks per first-order bias probe"),
      text("debug.dump", REF(debug.dump), true, "HDF5 dump file of the first outer step"),
      debug_stall(),
      choice("slbamm.problem", REF(slbamm.problem), kBilevelProblems, "bilevel problem"),
      choice("slbamm.variant", REF(slbamm.variant), kBilevelVariants,
             "averaging, none, or a lower-level regulariser"),
      real("slbamm.mu0", REF(slbamm.mu0), {0, true, 1, false}, "first averaging weight mu_0"),
      real("slbamm.p", REF(slbamm.p), {0, true}, "mu_k = mu_0 / (k+1)^(1/p)"),
      real("slbamm.tau", REF(slbamm.tau), {0, false}, "step-size decay exponent"),
      real("slbamm.y_lr", REF(slbamm.y_lr), {0, true}, "first y step"),
      real("slbamm.x_lr", REF(slbamm.x_lr), {0, true}, "first x step"),
      choice("slbamm.z_step", REF(slbamm.z_step), kZSteps, "z step rule"),
      real("slbamm.z_lr", REF(slbamm.z_lr), {0, true}, "first scheduled z step"),
      real("slbamm.z_lr_max", REF(slbamm.z_lr_max), {0, true}, "cap of the line-search z step"),
      real("slbamm.reg", REF(slbamm.reg), {0, true}, "lower-level regulariser epsilon"),
      integer("slbamm.toy_dim", REF(slbamm.toy_dim), 1, "dimension n of the toy"),
      integer("slbamm.classes", REF(slbamm.classes), 2, "hyper-cleaning classes"),
      integer("slbamm.train_per_class", REF(slbamm.train_per_class), 1,
              "training images per class"),
      integer("slbamm.val_per_class", REF(slbamm.val_per_class), 1, "validation images per class"),
      integer("slbamm.test_per_class", REF(slbamm.test_per_class), 1, "test images per class"),
      real("slbamm.noise", REF(slbamm.noise), {0, false, 1, false},
           "fraction of corrupted training labels"),
      choice("slbamm.model", REF(slbamm.model), kHypercleanModels, "hyper-cleaning classifier"),
      integer("slbamm.filters", REF(slbamm.filters), 1, "channels of the conv4 classifier"),
  };
  return fields;
}
#undef REF

// ---- key structure -------------------------------------------------------------------------

bool is_leaf(const std::string& key) {
  for (const Field& f : schema())
    if (f.key == key) return true;
  return false;
}

bool is_section(const std::string& key) {
  for (const Field& f : schema())
    if (f.key.size() > key.size() && f.key.compare(0, key.size() + 1, key + ".") == 0) return true;
  return false;
}

// The names directly under `section` ("" = top level), in schema order.
std::string keys_in(const std::string& section) {
  const std::string prefix = section.empty() ? "" : section + ".";
  std::vector<std::string> names;
  for (const Field& f : schema()) {
    if (f.key.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string rest = f.key.substr(prefix.size());
    const std::string name = rest.substr(0, rest.find('.'));
    if (names.empty() || names.back() != name) names.push_back(name);
  }
  std::string out;
  for (const auto& n : names) out += out.empty() ? n : ", " + n;
  return out;
}

[[noreturn]] void unknown_key(const std::string& key, const std::string& where) {
  const size_t dot = key.rfind('.');
  const std::string parent = dot == std::string::npos ? "" : key.substr(0, dot);
  if (is_leaf(parent))
    throw UsageError(
        concat("unknown key '", key, "' ", where, ": '", parent, "' is a value, not a section"));
  if (!parent.empty() && is_section(parent))
    throw UsageError(concat("unknown key '", key, "' ", where, "; valid keys in '", parent,
                            "': ", keys_in(parent)));
  throw UsageError(
      concat("unknown key '", key, "' ", where, "; valid top-level keys: ", keys_in("")));
}

std::string location(const std::string& source, const YAML::Node& node) {
  const YAML::Mark m = node.Mark();
  if (m.is_null()) return source;
  return concat(source, ":", m.line + 1, ":", m.column + 1);
}

// Records every leaf of the YAML map `node` (under `section`) into `out`.
void overlay_map(const YAML::Node& node, const std::string& section, const std::string& source,
                 Settings& out, std::set<std::string>& seen) {
  for (const auto& kv : node) {
    if (!kv.first.IsScalar())
      throw UsageError(concat(location(source, kv.first), ": keys must be plain names"));
    const std::string key = section.empty() ? kv.first.Scalar() : section + "." + kv.first.Scalar();
    const std::string where = location(source, kv.first);
    if (!seen.insert(key).second)
      throw UsageError(concat("key '", key, "' is given twice in ", where));
    if (is_leaf(key)) {
      put(out, key, {kv.second, location(source, kv.second.IsNull() ? kv.first : kv.second)});
    } else if (is_section(key)) {
      if (kv.second.IsNull()) continue;
      if (!kv.second.IsMap())
        throw UsageError(concat(key, ": expected a map of keys (", keys_in(key), ") at ", where));
      overlay_map(kv.second, key, source, out, seen);
    } else {
      unknown_key(key, concat("at ", where));
    }
  }
}

void overlay_document(const YAML::Node& root, const std::string& source, Settings& out) {
  if (root.IsNull()) return;
  if (!root.IsMap())
    throw UsageError(concat(source, ": the top level must be a map of keys (", keys_in(""), ")"));
  std::set<std::string> seen;
  overlay_map(root, "", source, out, seen);
}

YAML::Node parse_yaml(const std::string& text, const std::string& source) {
  try {
    return YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    throw UsageError(concat(source, ": malformed YAML at line ", e.mark.line + 1, ", column ",
                            e.mark.column + 1, ": ", e.msg));
  }
}

void overlay_override(const std::string& arg, Settings& out) {
  const size_t eq = arg.find('=');
  MT_REQUIRE(eq != std::string::npos && eq > 0, "override '", arg,
             "' is not key=value; write e.g. inner.lr=0.1");
  const std::string key = arg.substr(0, eq);
  const std::string where = concat("override '", arg, "'");
  if (is_section(key)) {
    const std::string keys = keys_in(key);
    throw UsageError(concat("'", key, "' in ", where,
                            " is a section; set its keys one by one, e.g. ", key, ".",
                            keys.substr(0, keys.find(',')), "=... (keys: ", keys, ")"));
  }
  if (!is_leaf(key)) unknown_key(key, concat("in ", where));
  const std::string text = arg.substr(eq + 1);
  YAML::Node value;
  try {
    value = text.empty() ? YAML::Node(std::string()) : YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    throw UsageError(
        concat(where, ": cannot read the value as YAML (", e.msg, "); quote it as a YAML string"));
  }
  put(out, key, {value, where});
}

// Resolves model.widths and model.activation (auto: the model's own) and, when `check`, requires
// widths that fit model.name and, for conv4, agree with model.filters (the same setting) when
// both are given. A resumed run (resume != none) is not checked here: its architecture is its
// checkpoint's, and launch_config refuses another one naming both.
void resolve_model(Config& cfg, const Settings& settings, const Settings& defaults, bool check) {
  Config::Model& m = cfg.model;
  const bool conv4 = m.name == "conv4";
  if (m.activation == "auto") m.activation = conv4 ? "relu" : "leaky_relu";
  if (m.widths.empty()) {
    const auto resnet = ResNet12Spec{}.widths;
    m.widths = conv4 ? std::vector<int>{m.filters} : std::vector<int>(resnet.begin(), resnet.end());
    return;
  }
  auto origin = [&](const char* key) { return settings.at(key).origin; };
  const std::string text = widths_text(m.widths);
  const std::string where =
      concat(" [", origin("model.widths"), "; model.name from ", origin("model.name"), "]");
  if (!conv4) {
    MT_REQUIRE(!check || m.widths.size() == 4, "model.widths = ", text,
               ": resnet12 takes 4 widths, one per residual block (e.g. 64,160,320,640)", where);
    return;
  }
  MT_REQUIRE(!check || m.widths.size() == 1, "model.widths = ", text,
             ": conv4 takes one width, the channels of every conv layer (model.filters)", where);
  const bool filters_given = origin("model.filters") != defaults.at("model.filters").origin;
  MT_REQUIRE(!check || !filters_given || m.filters == m.widths[0], "model.widths = ", text,
             " and model.filters = ", m.filters,
             " disagree: for conv4 they are the same setting; give one [", origin("model.widths"),
             "; ", origin("model.filters"), "]");
  if (m.widths.size() == 1) m.filters = m.widths[0];
}

// The algorithm's "auto" choices from its preset; a preset whose method forbids a choice the
// user set (learned rates or the multi-step loss with Reptile or iMAML) is a usage error.
void resolve_algorithm(Config& cfg, const Settings& settings) {
  if (cfg.algo == Algo::kSlbamm) return;
  const AlgoPreset p = algo_preset(cfg.algo);
  Config::Inner& in = cfg.inner;
  if (in.rates == "auto")
    in.rates = p.rates == Rates::kFixed      ? "fixed"
               : p.rates == Rates::kPerParam ? "per_param"
                                             : "per_layer_step";
  if (in.adapt == "auto")
    in.adapt = p.adapt == Adapt::kAll ? "all" : p.adapt == Adapt::kHead ? "head" : "body";
  if (in.multi_step_loss == "auto") in.multi_step_loss = p.multi_step_loss ? "true" : "false";
  if (p.method == Method::kUnrolled) return;
  const char* name = p.method == Method::kReptile ? "reptile" : "imaml";
  MT_REQUIRE(in.rates == "fixed", "inner.rates = ", in.rates, ": algo ", name,
             " takes a fixed inner rate (learned rates need the unrolled adjoint of maml, "
             "fomaml, ufom, metasgd, mamlpp, anil or boil) [",
             settings.at("inner.rates").origin, "]");
  MT_REQUIRE(in.multi_step_loss == "false", "inner.multi_step_loss = true: algo ", name,
             " has no per-step outer loss [", settings.at("inner.multi_step_loss").origin, "]");
}

// One YAML document laid over the defaults, and where it came from.
struct YamlLayer {
  const std::string& text;
  const std::string& source;
};

Config build(const std::vector<YamlLayer>& layers, const std::vector<std::string>& overrides) {
  Settings settings;
  try {
    overlay_document(YAML::Load(detail::kDefaultConfigYaml), "default.yaml", settings);
  } catch (const std::exception& e) {
    throw Error(ExitCode::kRuntime, concat("the built-in default.yaml is broken: ", e.what()));
  }
  for (const Field& f : schema())
    MT_CHECK(settings.count(f.key), "the built-in default.yaml lacks key ", f.key);
  const Settings defaults = settings;
  for (const YamlLayer& l : layers)
    overlay_document(parse_yaml(l.text, l.source), l.source, settings);
  for (const auto& arg : overrides) overlay_override(arg, settings);

  Config cfg;
  for (const Field& f : schema()) {
    const Setting& s = settings.at(f.key);
    try {
      f.parse(cfg, f.key, s.value);
    } catch (const UsageError& e) {
      throw UsageError(concat(e.what(), " [", s.origin, "]"));
    }
  }
  resolve_model(cfg, settings, defaults, cfg.resume == "none");
  resolve_algorithm(cfg, settings);
  const int r = cfg.inner.steps;
  MT_REQUIRE(cfg.inner.truncate == -1 || cfg.inner.truncate <= r,
             "inner.truncate = ", cfg.inner.truncate,
             ": must be -1 (all inner steps) or in 0..inner.steps = 0..", r, " [",
             settings.at("inner.truncate").origin, "; inner.steps from ",
             settings.at("inner.steps").origin, "]");
  MT_REQUIRE(cfg.data.resident != "device" || cfg.device == Config::Device::kCuda,
             "data.resident = device needs device = cuda (this run computes on the CPU); set "
             "data.resident = host, auto or off [",
             settings.at("data.resident").origin, "; device from ", settings.at("device").origin,
             "]");
  cfg.effective_yaml = to_yaml(cfg);
  cfg.overrides = overrides;
  return cfg;
}

}  // namespace

Config load_config_text(const std::string& yaml_text, const std::string& source,
                        const std::vector<std::string>& overrides) {
  Config cfg = build({{yaml_text, source}}, overrides);
  cfg.user_yaml = yaml_text;
  cfg.user_yaml_source = source;
  return cfg;
}

Config merge_config(const std::string& base_yaml, const std::string& base_source,
                    const Config& user, const std::vector<std::string>& extra) {
  std::vector<YamlLayer> layers = {{base_yaml, base_source}};
  if (!user.user_yaml_source.empty()) layers.push_back({user.user_yaml, user.user_yaml_source});
  std::vector<std::string> overrides = user.overrides;
  overrides.insert(overrides.end(), extra.begin(), extra.end());
  Config cfg = build(layers, overrides);
  cfg.user_yaml = user.user_yaml;
  cfg.user_yaml_source = user.user_yaml_source;
  cfg.overrides = user.overrides;
  return cfg;
}

Config load_config(const std::string& yaml_path, const std::vector<std::string>& overrides) {
  if (yaml_path.empty()) return build({}, overrides);
  std::ifstream in(yaml_path, std::ios::binary);
  MT_REQUIRE(in, "cannot open config file '", yaml_path, "': ", std::strerror(errno),
             "; check the path given to --config");
  std::ostringstream text;
  text << in.rdbuf();
  MT_REQUIRE(!in.bad(), "cannot read config file '", yaml_path, "'");
  return load_config_text(text.str(), yaml_path, overrides);
}

bool has_help_flag(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) return true;
  return false;
}

Config config_from_args(int argc, char** argv) {
  MT_CHECK(!has_help_flag(argc, argv), "--help must be handled before config_from_args");
  const char* usage = "usage: [--config FILE] [key=value ...]";
  std::string path;
  bool have_path = false;
  std::vector<std::string> overrides;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--config" || arg.compare(0, 9, "--config=") == 0) {
      MT_REQUIRE(!have_path, "--config is given twice; ", usage);
      if (arg == "--config") {
        MT_REQUIRE(i + 1 < argc, "--config needs a file name; ", usage);
        path = argv[++i];
      } else {
        path = arg.substr(9);
      }
      MT_REQUIRE(!path.empty(), "--config needs a file name; ", usage);
      have_path = true;
    } else if (arg.compare(0, 1, "-") == 0) {
      const bool dashed_override =
          arg.compare(0, 2, "--") == 0 && arg.find('=') != std::string::npos;
      throw UsageError(concat(
          "unknown option '", arg, "'",
          dashed_override ? "; write overrides without dashes: " + arg.substr(2) : std::string(),
          "; ", usage));
    } else {
      MT_REQUIRE(arg.find('=') != std::string::npos, "unexpected argument '", arg,
                 "': expected key=value (e.g. inner.lr=0.1) or --config FILE; ", usage);
      overrides.push_back(arg);
    }
  }
  return load_config(path, overrides);
}

namespace {

// The schema's keys as YAML, those for which keep(key) holds.
template <typename Keep>
std::string yaml_of(const Config& cfg, Keep&& keep) {
  std::string out;
  std::string section;
  for (const Field& f : schema()) {
    if (!keep(f.key)) continue;
    const size_t dot = f.key.find('.');
    const std::string sec = dot == std::string::npos ? "" : f.key.substr(0, dot);
    if (sec != section && !sec.empty()) out += sec + ":\n";
    section = sec;
    out += sec.empty() ? f.key : "  " + f.key.substr(dot + 1);
    out += ": " + f.emit(cfg) + "\n";
  }
  return out;
}

}  // namespace

std::string setting_of(const Config& cfg, const std::string& key) {
  for (const Field& f : schema())
    if (f.key == key) return key + "=" + f.emit(cfg);
  throw Error(ExitCode::kRuntime, concat("config: no key ", key));
}

std::vector<ConfigChange> config_changes(const Config& before, const Config& after) {
  std::vector<ConfigChange> changes;
  for (const Field& f : schema()) {
    std::string a = f.emit(before), b = f.emit(after);
    if (a != b) changes.push_back({f.key, std::move(a), std::move(b)});
  }
  return changes;
}

std::string to_yaml(const Config& cfg) {
  return yaml_of(cfg, [](const std::string&) { return true; });
}

bool key_applies(const Config& cfg, const std::string& key) {
  auto in = [&key](const char* section) {
    return key.compare(0, std::strlen(section), section) == 0;
  };
  if (key == "debug.stall") return true;  // both trainers
  if (cfg.algo == Algo::kSlbamm) {
    // The bilevel solver reads its own block, the data path and split, and the run's plumbing.
    static const char* const kMetaOnly[] = {
        "budget.",   "meta_batch",  "task.",           "inner.",        "outer.",
        "ufom.",     "model.",      "eval.",           "cuda.",         "debug.",
        "log.bias_", "dist.assign", "data.eval_split", "data.prefetch", "data.resident"};
    for (const char* s : kMetaOnly)
      if (in(s)) return false;
    return true;
  }
  if (in("slbamm.")) return false;
  if (in("cuda.")) return cfg.device == Config::Device::kCuda;
  const AlgoPreset preset = algo_preset(cfg.algo);
  const bool unrolled = preset.method == Method::kUnrolled;
  if (key == "ufom.adjoint_clip")  // clips the unrolled exact path
    return preset.estimator != Algo::kFomaml && unrolled;
  if (key == "inner.trajectory" || key == "inner.truncate") return unrolled;
  if (in("ufom.")) return cfg.algo == Algo::kUfom;
  if (in("imaml.")) return preset.method == Method::kImplicit;
  if (key == "inner.msl_anneal_steps") return cfg.inner.multi_step_loss == "true";
  if (key == "inner.first_order_steps") return preset.estimator == Algo::kMaml;
  if (key == "outer.momentum") return cfg.outer.optimizer == Config::Outer::Optimizer::kSgd;
  if (key == "log.bias_tasks") return cfg.log.bias_every > 0;
  if (key == "model.filters" || key == "model.pool") return cfg.model.name == "conv4";
  if (key == "model.widths") return cfg.model.name != "conv4";  // conv4's is model.filters
  return true;
}

std::string describe_model(const Config& cfg) {
  const Config::Model& m = cfg.model;
  if (m.name != "conv4")
    return concat(m.name, " (widths ", widths_text(m.widths), ", ", m.activation, ")");
  return concat("conv4 (", m.filters, " filters, ", m.activation, ", ",
                m.pool == Config::Model::Pool::kMax ? "max-pool" : "stride-2 convs", ")");
}

std::string printed_config(const Config& cfg) {
  int omitted = 0;
  std::string out = yaml_of(cfg, [&](const std::string& key) {
    const bool keep = key_applies(cfg, key);
    omitted += keep ? 0 : 1;
    return keep;
  });
  if (omitted > 0)
    out += concat("# ", omitted, " keys that do not apply to this run (algo ", to_string(cfg.algo),
                  ", device ", cfg.device == Config::Device::kCuda ? "cuda" : "cpu",
                  ") are not shown; checkpoints keep the full config\n");
  return out;
}

std::string_view default_config_yaml() { return detail::kDefaultConfigYaml; }

std::string metrics_jsonl_path(const Config& cfg) {
  if (!cfg.log.jsonl.empty()) return cfg.log.jsonl;
  return cfg.checkpoint.dir + "/metrics.jsonl";
}

Algo parse_algo(const std::string& s) {
  return parse_choice("algo", s, kAlgos, "training algorithm");
}
std::string to_string(Algo algo) { return choice_name(algo, kAlgos); }

TrajectoryMode parse_trajectory(const std::string& s) {
  return parse_trajectory_value("inner.trajectory", s);
}
std::string to_string(TrajectoryMode mode) {
  switch (mode.kind) {
    case TrajectoryMode::kStore:
      return "store";
    case TrajectoryMode::kRecompute:
      return "recompute";
    case TrajectoryMode::kCheckpoint:
      return concat("checkpoint:", mode.every);
  }
  throw Error(ExitCode::kRuntime, "config: unknown trajectory kind");
}

}  // namespace mt
