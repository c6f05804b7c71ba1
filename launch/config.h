// Configuration of the programs (DESIGN §9): the built-in defaults (launch/configs/default.yaml,
// compiled in), overlaid by an optional YAML file and then by dotted key=value overrides, parsed
// into typed fields and validated. Every user mistake throws mt::UsageError naming the key.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/meta_gradient.h"  // Algo, TrajectoryMode

namespace mt {

// Typed mirror of default.yaml. Field values are filled by load_config; the defaults live in
// default.yaml only, so a default-constructed Config is not meaningful.
struct Config {
  struct Task {
    int ways = 0;
    int shots = 0;
    int queries = 0;
  };
  struct Inner {
    int steps = 0;
    int eval_steps = 0;
    double lr = 0;
    TrajectoryMode trajectory;
    int truncate = -1;  // -1: all `steps` steps; else the adjoint runs through the last k steps
    // The algorithm's choices (core/meta_params.h), "auto" until resolved from algo's preset:
    std::string rates = "auto";            // fixed | per_param | per_layer_step
    std::string adapt = "auto";            // all | head | body
    std::string multi_step_loss = "auto";  // true | false
    int64_t msl_anneal_steps = 0;
    int64_t first_order_steps = 0;  // derivative-order annealing of exact estimators
  };
  struct Imaml {
    double prox = 0;  // μ of the proximal term
    int cg_steps = 0;
  };
  struct Outer {
    enum class Optimizer { kAdam, kSgd } optimizer = Optimizer::kAdam;
    double lr = 0;
    double momentum = 0;                // SGD only
    std::string schedule = "constant";  // constant | cosine (annealed to 0 at `steps`)
    int64_t warmup = 0;                 // outer steps of linear warm-up
  };
  Imaml imaml;
  struct Ufom {
    bool adaptive = false;  // when true, q is chosen per step and `q` is unused
    double q = 0;
    double q_min = 0;
    double d2_scale = 0;
    double adjoint_clip = 0;  // 0 = off
  };
  struct Model {
    std::string name;  // conv4 | resnet12
    int filters = 0;   // conv4's channels per conv layer (its one width)
    // The channels of each stage, resolved by the loaders: conv4 {filters}; resnet12 four, one
    // per residual block (model.widths: auto = 64,160,320,640).
    std::vector<int> widths;
    std::string activation;  // relu | leaky_relu (model.activation: auto = the model's own)
    enum class Pool { kMax, kStride } pool = Pool::kMax;
  };
  struct Data {
    std::string path;  // "glyphs" = built-in synthetic data set
    std::string train_split;
    std::string eval_split;
    int prefetch = 0;  // producer threads of the episode stream; 0 = draw inline
    // auto | host | device | off: where the store's images live (data/residency.h)
    std::string resident;
  };
  struct Budget {
    int64_t grad_evals = 0;  // stop once this many gradient evaluations are spent; 0 = off
  };
  struct Eval {
    int64_t every = 0;  // 0 = only at the end
    int episodes = 0;
  };
  struct Checkpoint {
    std::string dir;
    int64_t every = 0;  // 0 = only at the end
    int keep = 0;
    bool overwrite = false;  // a fresh run may clear the files of an earlier run in dir
  };
  struct Log {
    std::string jsonl;  // "" = <checkpoint.dir>/metrics.jsonl, see metrics_jsonl_path
    int every = 0;
    int64_t bias_every = 0;  // probe the first-order bias every this many steps; 0 = off
    int bias_tasks = 0;      // fresh training-split tasks per probe (>= 2)
  };
  struct Debug {
    std::string dump;  // "" = off
    // debug.stall "RANK:STEP:SECONDS": that rank sleeps before that step (for fault tests of
    // dist.timeout); text "" = off.
    struct Stall {
      std::string text;
      int rank = -1;
      int64_t step = 0;
      double seconds = 0;
    } stall;
  };
  struct Dist {
    std::string backend;      // auto | single | mpi | nccl
    std::string assign;       // modulo | balanced (UFOM: even out predicted cost)
    std::string reduce;       // exact (same bits for any N, core/exact_sum.h) | float
    int64_t check_every = 0;  // 0 = never
    double timeout = 300;     // seconds a collective may wait for its peers (×3 at start-up)
  };
  // sl-BAMM (algo: slbamm; DESIGN §3.7, core/slbamm.h). Steps, seed, data.path, log.* and
  // dist.backend come from the top-level keys.
  struct Slbamm {
    std::string problem;  // toy | hyperclean
    std::string variant;  // averaged | plain (μ ≡ 0) | regularised (μ ≡ 0, f + ε/2 ‖y‖²)
    double mu0 = 0, p = 0, tau = 0;
    double y_lr = 0, x_lr = 0;
    std::string z_step;  // line_search | scheduled
    double z_lr = 0, z_lr_max = 0;
    double reg = 0;   // ε of the regularised variant
    int toy_dim = 0;  // n of the toy
    int classes = 0;  // hyper-cleaning: classes of data.train_split
    int train_per_class = 0, val_per_class = 0, test_per_class = 0;
    double noise = 0;   // fraction of corrupted training labels
    std::string model;  // hyper-cleaning classifier: linear | conv4
    int filters = 0;    // channels of the conv4 classifier
  };
  enum class Device { kCpu, kCuda };
  struct Cuda {
    bool graphs = true;         // replay captured CUDA Graphs of the inner and adjoint steps
    std::string conv = "auto";  // auto (= gemm, or timed with tune) | cudnn | gemm
    bool tune = false;          // time the conv forms at start-up (gives up reproducibility)
  };

  Algo algo = Algo::kMaml;
  int64_t seed = 0;
  int64_t steps = 0;
  Budget budget;
  int meta_batch = 0;
  int threads = 0;  // 0 = all cores
  Task task;
  Inner inner;
  Outer outer;
  Ufom ufom;
  Model model;
  Data data;
  Eval eval;
  Checkpoint checkpoint;
  std::string resume;  // "none" | "latest" | path to a checkpoint file
  Device device = Device::kCpu;
  Cuda cuda;
  Dist dist;
  Log log;
  Debug debug;
  Slbamm slbamm;

  std::string effective_yaml;  // to_yaml(*this), set by the loaders
  // The layers the user gave, as the loaders read them, so that a resumed run can lay them over
  // the config stored in its checkpoint (merge_config).
  std::string user_yaml;         // text of the YAML file or text loaded
  std::string user_yaml_source;  // its name in messages; "" = no file
  std::vector<std::string> overrides;
};

// Builds the effective config: defaults <- YAML file (if yaml_path is non-empty) <- overrides
// ("inner.lr=0.1", "ufom.q=adaptive"; each value is one YAML scalar). Validates everything.
Config load_config(const std::string& yaml_path, const std::vector<std::string>& overrides);
// Same, with the YAML given as text (e.g. the config stored in a checkpoint); `source` names it
// in error messages.
Config load_config_text(const std::string& yaml_text, const std::string& source,
                        const std::vector<std::string>& overrides);

// The config of `user` over another base than the built-in defaults: defaults <- base_yaml (the
// config stored in a checkpoint; `base_source` names it) <- user's YAML file <- user's overrides
// <- `extra` overrides. Validated like load_config; keeps user's layers. Like every config with
// resume != none, the model keys are resolved but not checked against each other: a resumed run
// keeps its checkpoint's architecture, and launch_config refuses another, naming both.
Config merge_config(const std::string& base_yaml, const std::string& base_source,
                    const Config& user, const std::vector<std::string>& extra);
// "key=value" that sets `key` to its value in cfg, readable as an override.
std::string setting_of(const Config& cfg, const std::string& key);
// The keys whose values differ between two configs, in the order of default.yaml, with their
// values as to_yaml writes them.
struct ConfigChange {
  std::string key, before, after;
};
std::vector<ConfigChange> config_changes(const Config& before, const Config& after);

// Parses a program's arguments: [--config FILE | --config=FILE] [key=value ...]. The caller
// handles --help / -h first (see has_help_flag). Throws UsageError on malformed arguments.
Config config_from_args(int argc, char** argv);
bool has_help_flag(int argc, char** argv);

// The effective config as YAML, loadable again by load_config with the same result.
std::string to_yaml(const Config& cfg);
// The part of the effective config a run prints at start: the keys that apply to cfg.algo and
// cfg.device (no slbamm: block in a MAML run, no task:/inner:/ufom: blocks in an sl-BAMM run,
// no cuda: block on the CPU), ending with a comment that counts the keys left out. Checkpoints
// keep the full to_yaml text.
std::string printed_config(const Config& cfg);
// Whether key (e.g. "ufom.q") affects a run of cfg: the filter of printed_config.
bool key_applies(const Config& cfg, const std::string& key);
// The architecture of cfg.model in words, e.g. "resnet12 (widths 64,160,320,640, leaky_relu)" or
// "conv4 (64 filters, relu, max-pool)": equal for two configs exactly when they build the same net.
std::string describe_model(const Config& cfg);
// The commented built-in defaults: the reference of every key, e.g. for --help.
std::string_view default_config_yaml();
// Where the metrics log goes: log.jsonl, or <checkpoint.dir>/metrics.jsonl when it is empty.
std::string metrics_jsonl_path(const Config& cfg);

Algo parse_algo(const std::string& s);
std::string to_string(Algo algo);
// "store" | "recompute" | "checkpoint:C" with integer C >= 1.
TrajectoryMode parse_trajectory(const std::string& s);
std::string to_string(TrajectoryMode mode);

}  // namespace mt
