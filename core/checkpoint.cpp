// Writing, validating and rotating HDF5 checkpoints, and the debug dump. Files are written by
// write_atomically (core/atomic_file.h): filled under a temporary name, fsync'd, then renamed.
#include "core/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <set>

#include "core/atomic_file.h"
#include "core/hdf5.h"

namespace mt {

namespace fs = std::filesystem;

namespace {

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string join(const std::vector<std::string>& parts, char sep) {
  std::string s;
  for (size_t i = 0; i < parts.size(); ++i) s += (i ? std::string(1, sep) : "") + parts[i];
  return s;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  if (s.empty()) return parts;
  size_t i = 0;
  for (size_t j; (j = s.find(sep, i)) != std::string::npos; i = j + 1)
    parts.push_back(s.substr(i, j - i));
  parts.push_back(s.substr(i));
  return parts;
}

void write_tensors(h5::File& f, const std::string& group, const ParamLayout& layout,
                   const std::vector<float>& flat) {
  MT_CHECK(static_cast<int64_t>(flat.size()) == layout.total(), group, " holds ", flat.size(),
           " values, the layout ", layout.total());
  f.create_group(group);
  for (const TensorSpec& t : layout.tensors()) {
    MT_CHECK(!t.name.empty() && t.name.find('/') == std::string::npos, "tensor name '", t.name,
             "' cannot name an HDF5 dataset");
    f.write(group + "/" + t.name, t.shape, flat.data() + t.offset);
  }
}

// A problem found while validating a checkpoint; the message is final.
class CheckpointError : public UsageError {
 public:
  CheckpointError(const std::string& path, const std::string& problem, const char* advice)
      : UsageError(detail::concat("checkpoint ", path, ": ", problem, "; ", advice)) {}
};

constexpr const char* kOtherModel =
    "it was written for a different model; resume with the model settings it was trained with";

// Reads group/<tensor> for every tensor of the layout into one flat buffer, requiring exactly
// the layout's names and shapes.
std::vector<float> read_tensors(const h5::File& f, const std::string& group,
                                const ParamLayout& layout) {
  if (!f.exists(group)) throw CheckpointError(f.path(), "missing " + group, kOtherModel);
  for (const std::string& name : f.list(group))
    if (!layout.find(name))
      throw CheckpointError(f.path(), group + "/" + name + " is not a parameter of the model",
                            kOtherModel);
  std::vector<float> flat(static_cast<size_t>(layout.total()));
  for (const TensorSpec& t : layout.tensors()) {
    const std::string p = group + "/" + t.name;
    if (!f.exists(p)) throw CheckpointError(f.path(), "missing " + p, kOtherModel);
    // The shape first: a small file may declare a huge dataset.
    const std::vector<int64_t> shape = f.shape(p);
    if (shape != t.shape)
      throw CheckpointError(
          f.path(),
          p + " has shape " + shape_string(shape) + ", the model expects " + shape_string(t.shape),
          kOtherModel);
    const std::vector<float> v = f.read<float>(p);
    std::copy(v.begin(), v.end(), flat.begin() + t.offset);
  }
  return flat;
}

constexpr const char* kDamaged = "the file is damaged; resume from an earlier checkpoint";

// The first element of v that is NaN or infinite (or, with non_negative, below zero) as
// "holds nan at element 7 of 80", or "" when there is none.
std::string bad_value(const float* v, int64_t n, bool non_negative) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(v[i]) || (non_negative && v[i] < 0))
      return detail::concat("holds ", v[i], " at element ", i, " of ", n,
                            std::isfinite(v[i]) ? " (it must be >= 0)" : "");
  return "";
}

// Parameters or optimizer buffers must be finite: NaN or Inf would poison every later step.
void require_finite(const std::string& path, const std::string& group, const ParamLayout& layout,
                    const std::vector<float>& flat, bool non_negative) {
  for (const TensorSpec& t : layout.tensors()) {
    const std::string problem = bad_value(flat.data() + t.offset, t.size(), non_negative);
    if (!problem.empty())
      throw CheckpointError(path, group + "/" + t.name + " " + problem, kDamaged);
  }
}

template <typename T>
void require_range(const std::string& path, const char* field, T value, bool ok,
                   const char* expected) {
  if (!ok)
    throw CheckpointError(path, detail::concat(field, " is ", value, ", expected ", expected),
                          kDamaged);
}

void require_format(const h5::File& f) {
  const std::string& path = f.path();
  if (!f.has_attr("/", "format_version"))
    throw CheckpointError(path, "not a metatrain checkpoint (no format_version attribute)",
                          "pass a checkpoint written by metatrain");
  const int64_t version = f.get_attr_int("/", "format_version");
  if (version != kCheckpointFormatVersion)
    throw CheckpointError(
        path,
        detail::concat("format version ", version, ", this build reads ", kCheckpointFormatVersion),
        "resume with the metatrain version that wrote it, or set resume: none");
}

// Every field is checked before it is used: types and shapes by the reads, values here.
CheckpointState read_validated(const std::string& path, const ParamLayout& layout) {
  h5::File f = h5::File::open_read(path);
  require_format(f);

  CheckpointState s;
  s.layout = layout;
  s.params = read_tensors(f, "/params", layout);
  require_finite(path, "/params", layout, s.params, false);

  s.step = f.read_scalar<int64_t>("/state/step");
  require_range(path, "/state/step", s.step, s.step >= 0, ">= 0");

  s.optimizer.name = f.get_attr_string("/optimizer", "name");
  if (s.optimizer.name.empty())
    throw CheckpointError(path, "attribute name of /optimizer is empty", kDamaged);
  s.optimizer.step = f.get_attr_int("/optimizer", "step");
  require_range(path, "attribute step of /optimizer", s.optimizer.step,
                s.optimizer.step >= 0 && s.optimizer.step <= s.step,
                detail::concat("0 to /state/step = ", s.step).c_str());
  std::set<std::string> seen;
  for (const std::string& b : split(f.get_attr_string("/optimizer", "buffers"), ',')) {
    if (b.empty() || b.find('/') != std::string::npos || !seen.insert(b).second)
      throw CheckpointError(path,
                            "attribute buffers of /optimizer names buffer '" + b +
                                "' (empty, repeated or holding '/')",
                            kDamaged);
    s.optimizer.buffers.emplace_back(b, read_tensors(f, "/optimizer/" + b, layout));
    // Adam's second moment is an average of squares.
    require_finite(path, "/optimizer/" + b, layout, s.optimizer.buffers.back().second,
                   s.optimizer.name == "adam" && b == "v");
  }

  s.seed = f.read_scalar<uint64_t>("/state/seed");
  s.data_cursor = f.read_scalar<int64_t>("/state/data_cursor");
  require_range(path, "/state/data_cursor", s.data_cursor, s.data_cursor == s.step,
                detail::concat("/state/step = ", s.step).c_str());
  const int64_t world_size = f.read_scalar<int64_t>("/state/world_size");
  require_range(path, "/state/world_size", world_size, world_size >= 1 && world_size <= (1 << 30),
                "1 to 2^30");
  s.world_size = static_cast<int>(world_size);
  s.ufom.v2_ema = f.read_scalar<double>("/state/ufom/v2_ema");
  s.ufom.d2_ema = f.read_scalar<double>("/state/ufom/d2_ema");
  s.ufom.count = f.read_scalar<int64_t>("/state/ufom/count");
  s.ufom.q = f.read_scalar<double>("/state/ufom/q");
  for (const auto& [field, v] :
       {std::pair<const char*, double>{"/state/ufom/v2_ema", s.ufom.v2_ema},
        {"/state/ufom/d2_ema", s.ufom.d2_ema}})
    require_range(path, field, v, std::isfinite(v) && v >= 0, "a finite number >= 0");
  require_range(path, "/state/ufom/count", s.ufom.count, s.ufom.count >= 0, ">= 0");
  // q = 0 is FOMAML's (and UFOM's with ufom.q=0), q = 1 MAML's.
  require_range(path, "/state/ufom/q", s.ufom.q, s.ufom.q >= 0 && s.ufom.q <= 1, "in [0, 1]");
  // Added within format version 1; older checkpoints lack it.
  if (f.exists("/state/grad_evals")) {
    s.grad_evals = f.read_scalar<int64_t>("/state/grad_evals");
    require_range(path, "/state/grad_evals", s.grad_evals, s.grad_evals >= 0, ">= 0");
  }
  s.config_yaml = f.read_string("/config");
  return s;
}

// Runs read(), turning every problem into CheckpointError "checkpoint <path>: ...".
template <typename F>
auto with_checkpoint_errors(const std::string& path, F&& read) {
  // Errors of the HDF5 layer start with the file name; say it once.
  auto problem_of = [&](const Error& e) {
    std::string problem = e.what();
    if (problem.rfind(path + ": ", 0) == 0) problem.erase(0, path.size() + 2);
    return problem;
  };
  try {
    return read();
  } catch (const CheckpointError&) {
    throw;
  } catch (const h5::ChecksumError& e) {
    throw CheckpointError(path, problem_of(e), "resume from an earlier checkpoint");
  } catch (const Error& e) {
    throw CheckpointError(path, problem_of(e),
                          "resume from another checkpoint, or start afresh with resume: none");
  }
}

}  // namespace

void write_checkpoint(const std::string& path, const CheckpointState& s) {
  std::vector<std::string> names;
  for (const auto& [name, buf] : s.optimizer.buffers) {
    MT_CHECK(!name.empty() && name.find_first_of(",/") == std::string::npos,
             "optimizer buffer name '", name, "' must be non-empty without ',' or '/'");
    names.push_back(name);
  }
  write_atomically(path, [&](h5::File& f) {
    f.set_attr("/", "format_version", kCheckpointFormatVersion);
    f.set_attr("/", "created_by", "metatrain");
    write_tensors(f, "/params", s.layout, s.params);

    f.create_group("/optimizer");
    f.set_attr("/optimizer", "name", s.optimizer.name);
    f.set_attr("/optimizer", "step", s.optimizer.step);
    f.set_attr("/optimizer", "buffers", join(names, ','));
    for (const auto& [name, buf] : s.optimizer.buffers)
      write_tensors(f, "/optimizer/" + name, s.layout, buf);

    f.write_scalar<int64_t>("/state/step", s.step);
    f.write_scalar<uint64_t>("/state/seed", s.seed);
    f.write_scalar<int64_t>("/state/data_cursor", s.data_cursor);
    f.write_scalar<int64_t>("/state/world_size", s.world_size);
    f.write_scalar<int64_t>("/state/grad_evals", s.grad_evals);
    f.write_scalar<double>("/state/ufom/v2_ema", s.ufom.v2_ema);
    f.write_scalar<double>("/state/ufom/d2_ema", s.ufom.d2_ema);
    f.write_scalar<int64_t>("/state/ufom/count", s.ufom.count);
    f.write_scalar<double>("/state/ufom/q", s.ufom.q);
    f.write_string("/config", s.config_yaml);
  });
}

CheckpointState read_checkpoint(const std::string& path, const ParamLayout& expected_layout) {
  return with_checkpoint_errors(path, [&] { return read_validated(path, expected_layout); });
}

std::string read_checkpoint_config(const std::string& path) {
  return with_checkpoint_errors(path, [&] {
    const h5::File f = h5::File::open_read(path);
    require_format(f);
    if (!f.exists("/config"))  // an episode store has a format_version too
      throw CheckpointError(path, "not a metatrain checkpoint (no /config)",
                            "pass a checkpoint written by metatrain");
    return f.read_string("/config");
  });
}

CheckpointManager::CheckpointManager(std::string dir, int keep)
    : dir_(std::move(dir)), keep_(keep) {
  MT_REQUIRE(!dir_.empty(), "checkpoint.dir is empty; set it to a directory for checkpoints");
  MT_REQUIRE(keep_ >= 1, "checkpoint.keep is ", keep_, "; it must be at least 1");
}

std::string CheckpointManager::latest_path() const {
  return (fs::path(dir_) / "latest.h5").string();
}

std::string CheckpointManager::path_for_step(int64_t step) const {
  char name[40];
  std::snprintf(name, sizeof(name), "ckpt_%08lld.h5", static_cast<long long>(step));
  return (fs::path(dir_) / name).string();
}

std::string CheckpointManager::save(const CheckpointState& s) {
  return save(s.step, [&s](const std::string& path) { write_checkpoint(path, s); });
}

std::string CheckpointManager::save(int64_t step,
                                    const std::function<void(const std::string&)>& write) {
  const std::string path = path_for_step(step);
  write(path);

  // latest.h5 is replaced by a rename too, so it is always a complete checkpoint.
  const std::string latest = latest_path();
  const std::string tmp = temp_name(latest);
  std::remove(tmp.c_str());
  if (link(path.c_str(), tmp.c_str()) != 0) {
    std::error_code ec;
    fs::copy_file(path, tmp, fs::copy_options::overwrite_existing, ec);
    if (ec) {
      std::remove(tmp.c_str());
      throw UsageError(detail::concat("cannot write ", tmp, ": ", ec.message(),
                                      "; check free space and permissions of ", dir_));
    }
    fsync_path(tmp, false);
  }
  if (std::rename(tmp.c_str(), latest.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    throw UsageError(detail::concat("cannot rename ", tmp, " to ", latest, ": ", std::strerror(err),
                                    "; check permissions of ", dir_));
  }
  // rename() between two links of one file does nothing and leaves the source.
  std::remove(tmp.c_str());
  fsync_path(dir_, true);

  std::vector<std::pair<int64_t, fs::path>> ckpts;
  for (const auto& entry : fs::directory_iterator(dir_)) {
    const std::string name = entry.path().filename().string();
    if (name.size() <= 8 || name.rfind("ckpt_", 0) != 0 ||
        name.compare(name.size() - 3, 3, ".h5") != 0)
      continue;
    const std::string digits = name.substr(5, name.size() - 8);
    if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    ckpts.emplace_back(std::stoll(digits), entry.path());
  }
  std::sort(ckpts.begin(), ckpts.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t i = static_cast<size_t>(keep_); i < ckpts.size(); ++i) {
    std::error_code ec;
    fs::remove(ckpts[i].second, ec);
  }
  return path;
}

void write_debug_dump(const std::string& path, const ParamLayout& layout,
                      const std::vector<float>& theta, const std::vector<DumpTask>& tasks,
                      const std::string& config_yaml, double inner_lr, int inner_steps) {
  const auto d = static_cast<size_t>(layout.total());
  auto write_batch = [](h5::File& f, const std::string& prefix, const Batch<float>& b) {
    MT_CHECK(b.x.size() == static_cast<size_t>(b.n) * b.item.size() &&
                 b.y.size() == static_cast<size_t>(b.n),
             prefix, ": batch of ", b.n, " examples holds ", b.x.size(), " values and ", b.y.size(),
             " labels");
    f.write(prefix + "_x", {b.n, b.item.c, b.item.h, b.item.w}, b.x.data());
    f.write(prefix + "_y", {b.n}, b.y.data());
  };
  write_atomically(path, [&](h5::File& f) {
    f.set_attr("/", "created_by", "metatrain");
    f.set_attr("/", "inner_lr", inner_lr);
    f.set_attr("/", "inner_steps", inner_steps);
    write_tensors(f, "/params", layout, theta);
    std::vector<std::string> names;
    std::vector<int64_t> offsets;
    for (const TensorSpec& t : layout.tensors()) {
      names.push_back(t.name);
      offsets.push_back(t.offset);
    }
    f.write_strings("/layout/names", names);
    f.write("/layout/offsets", {static_cast<int64_t>(offsets.size())}, offsets.data());
    f.create_group("/tasks");
    for (size_t t = 0; t < tasks.size(); ++t) {
      const std::string g = "/tasks/" + std::to_string(t);
      MT_CHECK(tasks[t].g_fo.size() == d && tasks[t].g_exact.size() == d, "task ", t,
               ": gradients of ", tasks[t].g_fo.size(), " and ", tasks[t].g_exact.size(),
               " values, the layout has ", d);
      write_batch(f, g + "/support", tasks[t].episode.support);
      write_batch(f, g + "/query", tasks[t].episode.query);
      f.write(g + "/g_fo", {static_cast<int64_t>(d)}, tasks[t].g_fo.data());
      f.write(g + "/g_exact", {static_cast<int64_t>(d)}, tasks[t].g_exact.data());
    }
    f.write_string("/config", config_yaml);
  });
}

}  // namespace mt
