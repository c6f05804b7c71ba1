// Checkpoints (DESIGN §8) and the debug dump of one outer step (§9), both HDF5. A checkpoint
// holds everything a run needs to resume bit for bit; it is written to "<path>.tmp.<pid>",
// fsync'd and renamed, so a kill at any moment leaves the previous checkpoint intact.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "core/episode.h"
#include "core/param_layout.h"

namespace mt {

// State of the outer optimizer; each buffer (Adam's "m" and "v", SGD's "momentum") is a flat
// vector in the parameter layout.
struct OptimizerState {
  std::string name;  // "adam", "sgd"
  int64_t step = 0;
  std::vector<std::pair<std::string, std::vector<float>>> buffers;
};

// Adaptive UFOM's running statistics (DESIGN §3.6).
struct AdaptiveQState {
  double v2_ema = 0, d2_ema = 0;
  int64_t count = 0;  // exact samples seen, for the bias correction
  double q = 0;
};

struct CheckpointState {
  ParamLayout layout;
  std::vector<float> params;  // flat, in layout
  OptimizerState optimizer;
  int64_t step = 0;  // outer steps completed
  uint64_t seed = 0;
  AdaptiveQState ufom;
  int64_t data_cursor = 0;
  std::string config_yaml;  // the full effective config
  int world_size = 1;       // ranks at save time
  int64_t grad_evals = 0;   // gradient evaluations spent so far, all ranks (0 in older files)
};

constexpr int kCheckpointFormatVersion = 1;

// File layout: /params/<tensor> float32 of the tensor's shape; /optimizer (attrs name, step,
// buffers = comma-separated buffer names in order) with /optimizer/<buffer>/<tensor>;
// /state/{step,seed,data_cursor,world_size,grad_evals}; /state/ufom/{v2_ema,d2_ema,count,q};
// /config (the YAML text); root attributes format_version and created_by = "metatrain".
// /state/grad_evals was added within format version 1: a file without it reads as 0. Creates the
// parent directory when missing; an unusable directory throws UsageError.
//
// Integrity (also within format version 1, so that older builds read these files): every dataset
// is chunked with a Fletcher-32 checksum (core/hdf5.h), the /state values as one-element [1]
// datasets and /config as a fixed-length string. Files of older builds, with scalar /state
// values, a variable-length /config and no checksums, read as before, unverified.
void write_checkpoint(const std::string& path, const CheckpointState& s);

// Reads and validates; any problem throws UsageError "checkpoint <path>: <problem>; <advice>"
// naming the dataset or attribute and, for a bad value, the value:
// - format version 1; every tensor of the layout present with its shape, and no other; the
//   types and sizes of all fields;
// - checksums: a dataset failing its Fletcher-32 checksum ("dataset /params/w fails its
//   Fletcher-32 checksum: the file is damaged; resume from an earlier checkpoint");
// - values: parameters and optimizer buffers finite (Adam's "v" also >= 0); step >= 0;
//   optimizer step in [0, step]; data_cursor == step (episodes are keyed by (seed, step, task));
//   world_size in [1, 2^30]; grad_evals >= 0; v2_ema, d2_ema finite and >= 0; count >= 0;
//   q in [0, 1] (0 is FOMAML's); optimizer name non-empty, buffer names distinct.
// The config text is parsed, and /state/seed compared with it, by the programs (launch/).
CheckpointState read_checkpoint(const std::string& path, const ParamLayout& expected_layout);

// The /config text of a checkpoint (after the format check), with read_checkpoint's errors: what
// a program needs to rebuild the model before it can call read_checkpoint.
std::string read_checkpoint_config(const std::string& path);

// A directory of checkpoints <dir>/ckpt_<step, 8 digits>.h5 plus latest.h5 (a hard link to the
// newest, or a copy where links are not supported). Keeps the newest `keep` ckpt_ files.
class CheckpointManager {
 public:
  CheckpointManager(std::string dir, int keep);
  // Writes the checkpoint of s.step, updates latest.h5, prunes; returns the ckpt_ path.
  std::string save(const CheckpointState& s);
  // The same for any kind of checkpoint (core/bilevel_checkpoint.h): `write(path)` writes the
  // file of `step` atomically, then latest.h5 is updated and old files pruned.
  std::string save(int64_t step, const std::function<void(const std::string& path)>& write);
  std::string latest_path() const;
  std::string path_for_step(int64_t step) const;

 private:
  std::string dir_;
  int keep_;
};

// One task of the debug dump: the episode exactly as fed to the model and its two
// meta-gradients, flat in the parameter layout.
struct DumpTask {
  Episode<float> episode;
  std::vector<float> g_fo, g_exact;
};

// Writes /params/<tensor> (θ); /layout/names and /layout/offsets, the tensors in flat order
// with their first element, to read the flat gradients; /tasks/<t>/{support_x [n,c,h,w] float32,
// support_y [n] int32, query_x, query_y, g_fo [d], g_exact [d]}; /config; and root attributes
// inner_lr, inner_steps.
void write_debug_dump(const std::string& path, const ParamLayout& layout,
                      const std::vector<float>& theta, const std::vector<DumpTask>& tasks,
                      const std::string& config_yaml, double inner_lr, int inner_steps);

}  // namespace mt
