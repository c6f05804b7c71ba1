// Writing and validating sl-BAMM checkpoints (core/bilevel_checkpoint.h).
#include "core/bilevel_checkpoint.h"

#include <cmath>
#include <vector>

#include "core/atomic_file.h"
#include "core/check.h"
#include "core/hdf5.h"

namespace mt {

namespace {

constexpr const char* kDamaged = "the file is damaged; resume from another checkpoint";

UsageError bad(const std::string& path, const std::string& field, const std::string& problem,
               const char* advice = kDamaged) {
  return UsageError(detail::concat("checkpoint ", path, ": ", field, ": ", problem, "; ", advice));
}

// A float64 vector of n finite values.
std::vector<double> read_vector(const h5::File& f, const std::string& field, int64_t n) {
  if (!f.exists(field)) throw bad(f.path(), field, "missing");
  std::vector<int64_t> shape;
  std::vector<double> v = f.read<double>(field, &shape);
  if (shape.size() != 1 || shape[0] != n)
    throw bad(f.path(), field,
              detail::concat("holds ", v.size(), " values in ", shape.size(),
                             " dimension(s), the problem has ", n),
              "it was written for another problem (slbamm.problem, toy_dim, classes, "
              "*_per_class, model or data differ); resume with the settings it was written with");
  for (size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i]))
      throw bad(f.path(), detail::concat(field, "[", i, "]"),
                detail::concat("is not finite (", v[i], ")"),
                "the run had diverged or the file is damaged; resume from an earlier checkpoint");
  return v;
}

int64_t read_count(const h5::File& f, const std::string& field, int64_t lo, int64_t hi) {
  if (!f.exists(field)) throw bad(f.path(), field, "missing");
  const int64_t v = f.read_scalar<int64_t>(field);
  if (v < lo || v > hi) throw bad(f.path(), field, detail::concat(v, " is out of range"));
  return v;
}

BilevelCheckpoint read_validated(const std::string& path, int64_t dim_x, int64_t dim_y) {
  const h5::File f = h5::File::open_read(path);
  const std::string kind = f.has_attr("/", "kind") ? f.get_attr_string("/", "kind") : "";
  if (kind != kSlbammCheckpointKind)
    throw bad(path, "kind",
              kind.empty() ? "absent: not an sl-BAMM checkpoint" : "'" + kind + "', not slbamm",
              "pass a checkpoint written by an algo=slbamm run");
  if (!f.has_attr("/", "format_version")) throw bad(path, "format_version", "missing");
  const int64_t version = f.get_attr_int("/", "format_version");
  if (version != kBilevelCheckpointFormatVersion)
    throw bad(path, "format_version",
              detail::concat(version, ", this build reads ", kBilevelCheckpointFormatVersion),
              "resume with the metatrain version that wrote it, or set resume: none");
  BilevelCheckpoint c;
  c.solver.step = read_count(f, "/state/step", 0, int64_t{1} << 53);
  c.world_size = static_cast<int>(read_count(f, "/state/world_size", 1, int64_t{1} << 30));
  c.solver.x = read_vector(f, "/slbamm/x", dim_x);
  c.solver.y = read_vector(f, "/slbamm/y", dim_y);
  c.solver.z = read_vector(f, "/slbamm/z", dim_y);
  if (!f.exists("/config")) throw bad(path, "/config", "missing");
  c.config_yaml = f.read_string("/config");
  return c;
}

}  // namespace

void write_bilevel_checkpoint(const std::string& path, const BilevelCheckpoint& c) {
  const SlBammState& s = c.solver;
  MT_CHECK(s.y.size() == s.z.size(), "sl-BAMM state: y has ", s.y.size(), " values, z ",
           s.z.size());
  write_atomically(path, [&](h5::File& f) {
    f.set_attr("/", "format_version", kBilevelCheckpointFormatVersion);
    f.set_attr("/", "created_by", "metatrain");
    f.set_attr("/", "kind", kSlbammCheckpointKind);
    f.write_scalar<int64_t>("/state/step", s.step);
    f.write_scalar<int64_t>("/state/world_size", c.world_size);
    f.write<double>("/slbamm/x", {static_cast<int64_t>(s.x.size())}, s.x.data());
    f.write<double>("/slbamm/y", {static_cast<int64_t>(s.y.size())}, s.y.data());
    f.write<double>("/slbamm/z", {static_cast<int64_t>(s.z.size())}, s.z.data());
    f.write_string("/config", c.config_yaml);
  });
}

BilevelCheckpoint read_bilevel_checkpoint(const std::string& path, int64_t dim_x, int64_t dim_y) {
  try {
    return read_validated(path, dim_x, dim_y);
  } catch (const Error& e) {
    std::string problem = e.what();
    if (problem.rfind("checkpoint " + path + ": ", 0) == 0) throw;  // already final
    // Errors of the HDF5 layer start with the file name; say it once.
    if (problem.rfind(path + ": ", 0) == 0) problem.erase(0, path.size() + 2);
    throw UsageError(detail::concat("checkpoint ", path, ": ", problem,
                                    "; resume from another checkpoint, or set resume: none"));
  }
}

}  // namespace mt
