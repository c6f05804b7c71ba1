// Checkpoints of sl-BAMM runs (algo=slbamm): the solver state (core/slbamm.h) as float64
// datasets, beside the effective config, written atomically like every checkpoint (DESIGN §8)
// and validated field by field when read back, so that a resumed run continues bit for bit.
#pragma once

#include <cstdint>
#include <string>

#include "core/slbamm.h"

namespace mt {

struct BilevelCheckpoint {
  SlBammState solver;
  std::string config_yaml;  // the full effective config
  int world_size = 1;       // ranks at save time
};

constexpr int kBilevelCheckpointFormatVersion = 1;
// Root attribute "kind" of these files. The meta-learning checkpoints of core/checkpoint.h carry
// no such attribute.
constexpr const char* kSlbammCheckpointKind = "slbamm";

// File layout: root attributes format_version, created_by = "metatrain", kind = "slbamm";
// /state/step (int64, iterations done), /state/world_size (int64); /slbamm/x [dim_x],
// /slbamm/y [dim_y], /slbamm/z [dim_y] (float64); /config (the YAML text). Written to
// "<path>.tmp.<pid>", fsync'd and renamed (core/atomic_file.h).
void write_bilevel_checkpoint(const std::string& path, const BilevelCheckpoint& c);

// Reads and validates: kind, format version, step >= 0, world_size >= 1, x, y, z present as
// float64 vectors of dim_x, dim_y, dim_y finite values. Any problem throws UsageError
// "checkpoint <path>: <field>: <problem>; <what to do>".
BilevelCheckpoint read_bilevel_checkpoint(const std::string& path, int64_t dim_x, int64_t dim_y);

}  // namespace mt
