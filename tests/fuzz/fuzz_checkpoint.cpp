// libFuzzer target for the checkpoint reader (core/checkpoint.h): decodes the input into a small
// valid checkpoint plus a list of edits, writes the checkpoint with write_checkpoint, applies the
// edits to the file, and reads it back with read_checkpoint. Run by tests/fuzz/run_fuzz.sh.
//
// Structure-aware for the reason given in fuzz_store.cpp (raw bytes would exercise libhdf5's own
// parser). The edits: a field, attribute or tensor element set to an interesting value (negative,
// huge, NaN, ±Inf, just out of range); a field or tensor removed, turned into a group, given the
// wrong type, rank or shape, declared huge but never written, or written in the old form
// (scalar dataspace, variable-length string, no checksum); a stored byte of a chunk flipped.
// Reading must succeed or throw mt::UsageError; anything else, a crash, a leak or a hang is a
// bug. The harness also models what the reader must decide: edits of values keep a model of the
// fields, from which it knows whether the file is valid (the reader must agree) and what a
// successful read returns (every value, bit for bit); after any other edit the file is invalid,
// a flipped byte alone must fail with h5::ChecksumError.
//
// With MT_FUZZ_WRITE_SEEDS=DIR set, the binary writes a few inputs to DIR and exits.
#include <hdf5.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/checkpoint.h"
#include "core/hdf5.h"

namespace {

constexpr int kMaxEdits = 4;

[[noreturn]] void bug(const std::string& what) {
  std::fprintf(stderr, "fuzz_checkpoint: BUG: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

std::string temp_path() { return "/dev/shm/mt_fuzz_ckpt_" + std::to_string(getpid()) + ".h5"; }

class Decoder {
 public:
  Decoder(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint8_t byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  int pick(int n) { return byte() % n; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

const int64_t kInts[] = {0,         1,         -1, 2,  7, 1 << 30, (int64_t{1} << 30) + 1,
                         INT64_MAX, INT64_MIN, -2, 41, 3};
const double kDoubles[] = {0.0,
                           -0.0,
                           0.5,
                           1.0,
                           1.5,
                           -0.5,
                           1e308,
                           std::numeric_limits<double>::quiet_NaN(),
                           std::numeric_limits<double>::infinity(),
                           -std::numeric_limits<double>::infinity(),
                           std::numeric_limits<double>::denorm_min(),
                           0.999999999};
const float kFloats[] = {std::numeric_limits<float>::quiet_NaN(),
                         std::numeric_limits<float>::infinity(),
                         -std::numeric_limits<float>::infinity(),
                         -1.0f,
                         0.0f,
                         3.5f};
const char* const kNames[] = {"adam", "sgd", "", "x"};
const char* const kBufferLists[] = {"",    "m",  "v",   "m,v",   "v,m",
                                    "m,m", "v,", "a/b", "m,v,x", "velocity"};

// The checkpoint as the reader must return it, kept up to date by the edits.
struct Model {
  mt::CheckpointState s;
  int64_t format_version = mt::kCheckpointFormatVersion;
  int64_t world_size = 1;                 // as stored (s.world_size is an int)
  std::string buffers_attr;               // as stored
  std::set<std::string> written_buffers;  // groups present under /optimizer
  bool grad_evals_present = true;
  // Datasets (by path) and attributes ("@<object>:<name>") an edit has spoiled: removed, a
  // group, the wrong type or shape, declared and never written. A later write of a good value
  // repairs them.
  std::set<std::string> broken;
  std::string flipped;  // the dataset with a flipped stored byte, if any
};

mt::ParamLayout decode_layout(Decoder& d) {
  mt::ParamLayout l;
  const int n = 1 + d.pick(3);
  for (int i = 0; i < n; ++i) {
    std::vector<int64_t> shape(static_cast<size_t>(1 + d.pick(3)));
    for (int64_t& s : shape) s = 1 + d.pick(4);
    l.add("t" + std::to_string(i) + (i % 2 ? ".weight" : ".bias"), shape);
  }
  return l;
}

Model decode_state(Decoder& d) {
  Model m;
  mt::CheckpointState& s = m.s;
  s.layout = decode_layout(d);
  const auto n = static_cast<size_t>(s.layout.total());
  uint32_t state = 1 + d.byte();
  auto next = [&] {  // deterministic values in (-1, 1), exact in float
    state = state * 1664525u + 1013904223u;
    return static_cast<float>(static_cast<int32_t>(state >> 8) - (1 << 23)) / (1 << 23);
  };
  s.params.resize(n);
  for (float& v : s.params) v = next();
  switch (d.pick(3)) {
    case 0:
      s.optimizer.name = "adam";
      s.optimizer.buffers = {{"m", {}}, {"v", {}}};
      break;
    case 1:
      s.optimizer.name = "sgd";
      s.optimizer.buffers = {{"velocity", {}}};
      break;
    default:
      s.optimizer.name = "sgd";
      break;
  }
  for (auto& [name, buf] : s.optimizer.buffers) {
    buf.resize(n);
    for (float& v : buf) v = name == "v" ? std::fabs(next()) : next();
    m.written_buffers.insert(name);
    m.buffers_attr += (m.buffers_attr.empty() ? "" : ",") + name;
  }
  s.step = d.pick(50);
  s.optimizer.step = s.step - d.pick(2) * std::min<int64_t>(s.step, 1);
  s.data_cursor = s.step;
  s.seed = static_cast<uint64_t>(d.byte()) << (d.pick(8) * 8);
  s.world_size = 1 + d.pick(4);
  m.world_size = s.world_size;
  s.grad_evals = 8 * s.step;
  s.ufom = {0.25 * d.pick(5), 0.5 * d.pick(3), d.pick(9), 0.1 * d.pick(11)};
  s.config_yaml = "algo: ufom\nseed: " + std::to_string(s.seed) + "\n";
  return m;
}

std::vector<std::string> listed_buffers(const std::string& list) {
  std::vector<std::string> out;
  if (list.empty()) return out;
  size_t start = 0;
  while (true) {
    const size_t comma = list.find(',', start);
    out.push_back(list.substr(start, comma == std::string::npos ? comma : comma - start));
    if (comma == std::string::npos) return out;
    start = comma + 1;
  }
}

// Whether read_checkpoint reads dataset `path`: everything but the tensors of unlisted buffers.
bool is_read(const Model& m, const std::string& path) {
  if (path.rfind("/optimizer/", 0) != 0) return true;
  const std::string b = path.substr(11, path.find('/', 11) - 11);
  for (const std::string& l : listed_buffers(m.buffers_attr))
    if (l == b) return true;
  return false;
}

// Whether the file passes every rule of read_checkpoint (core/checkpoint.h); with_flip = false
// ignores the flipped byte.
bool model_valid(const Model& m, bool with_flip = true) {
  const mt::CheckpointState& s = m.s;
  for (const std::string& b : m.broken)
    if (is_read(m, b)) return false;
  if (with_flip && !m.flipped.empty() && is_read(m, m.flipped)) return false;
  if (m.format_version != mt::kCheckpointFormatVersion) return false;
  if (s.step < 0 || s.optimizer.step < 0 || s.optimizer.step > s.step) return false;
  if (s.optimizer.name.empty()) return false;
  if (s.data_cursor != s.step || m.world_size < 1 || m.world_size > (1 << 30)) return false;
  if (m.grad_evals_present && s.grad_evals < 0) return false;
  for (double v : {s.ufom.v2_ema, s.ufom.d2_ema})
    if (!std::isfinite(v) || v < 0) return false;
  if (s.ufom.count < 0 || !(s.ufom.q >= 0 && s.ufom.q <= 1)) return false;
  for (float v : s.params)
    if (!std::isfinite(v)) return false;
  std::set<std::string> seen;
  for (const std::string& b : listed_buffers(m.buffers_attr))
    if (b.empty() || b.find('/') != std::string::npos || !seen.insert(b).second ||
        m.written_buffers.count(b) == 0)
      return false;
  for (const auto& [name, buf] : s.optimizer.buffers) {
    if (seen.count(name) == 0) continue;
    for (float v : buf)
      if (!std::isfinite(v) || (s.optimizer.name == "adam" && name == "v" && v < 0)) return false;
  }
  return true;
}

// ---- edits ---------------------------------------------------------------------------------

const char* const kIntFields[] = {"/state/step", "/state/data_cursor", "/state/world_size",
                                  "/state/grad_evals", "/state/ufom/count"};
const char* const kDoubleFields[] = {"/state/ufom/v2_ema", "/state/ufom/d2_ema", "/state/ufom/q"};
const char* const kAllFields[] = {"/state/step",        "/state/seed",
                                  "/state/data_cursor", "/state/world_size",
                                  "/state/grad_evals",  "/state/ufom/v2_ema",
                                  "/state/ufom/d2_ema", "/state/ufom/count",
                                  "/state/ufom/q",      "/config"};

int64_t* int_field(mt::CheckpointState& s, int i) {
  int64_t* fields[] = {&s.step, &s.data_cursor, nullptr, &s.grad_evals, &s.ufom.count};
  return fields[i];
}

double* double_field(mt::CheckpointState& s, int i) {
  double* fields[] = {&s.ufom.v2_ema, &s.ufom.d2_ema, &s.ufom.q};
  return fields[i];
}

// A tensor's dataset path and its values in the model: params or a written buffer.
struct TensorRef {
  std::string path;
  float* data = nullptr;
  int64_t size = 0;
  std::vector<int64_t> shape;
};

TensorRef tensor_ref(Model& m, Decoder& d) {
  mt::CheckpointState& s = m.s;
  const int group = d.pick(1 + static_cast<int>(s.optimizer.buffers.size()));
  const auto& tensors = s.layout.tensors();
  const mt::TensorSpec& t = tensors[d.pick(static_cast<int>(tensors.size()))];
  std::vector<float>& flat = group == 0 ? s.params : s.optimizer.buffers[group - 1].second;
  const std::string prefix =
      group == 0 ? "/params/" : "/optimizer/" + s.optimizer.buffers[group - 1].first + "/";
  return {prefix + t.name, flat.data() + t.offset, t.size(), t.shape};
}

void raw_delete(const std::string& path, const std::string& name) {
  const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  if (f < 0) bug("cannot reopen the checkpoint");
  H5Ldelete(f, name.c_str(), H5P_DEFAULT);  // may be absent already
  H5Eclear2(H5E_DEFAULT);
  H5Fclose(f);
}

// Replaces `name` by a dataset of `dims` that is declared but never written.
void raw_unwritten(const std::string& path, const std::string& name, hid_t type,
                   const std::vector<hsize_t>& dims) {
  const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  if (f < 0) bug("cannot reopen the checkpoint");
  H5Ldelete(f, name.c_str(), H5P_DEFAULT);
  const hid_t space = H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
  const hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  std::vector<hsize_t> chunk(dims.size(), 1);
  H5Pset_chunk(dcpl, static_cast<int>(chunk.size()), chunk.data());
  const hid_t ds = H5Dcreate2(f, name.c_str(), type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  if (ds < 0) bug("cannot declare " + name);
  H5Dclose(ds);
  H5Pclose(dcpl);
  H5Sclose(space);
  H5Fclose(f);
}

// The old form of /config: one variable-length string in a scalar dataspace.
void raw_vlen_config(const std::string& path, const std::string& text) {
  const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  if (f < 0) bug("cannot reopen the checkpoint");
  H5Ldelete(f, "/config", H5P_DEFAULT);
  const hid_t type = H5Tcopy(H5T_C_S1);
  H5Tset_size(type, H5T_VARIABLE);
  const hid_t space = H5Screate(H5S_SCALAR);
  const hid_t ds = H5Dcreate2(f, "/config", type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  const char* p = text.c_str();
  if (ds < 0 || H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, &p) < 0)
    bug("cannot write the old /config");
  H5Dclose(ds);
  H5Sclose(space);
  H5Tclose(type);
  H5Fclose(f);
}

// Flips a stored byte of the first chunk of `name` (data or checksum); false when it has no
// chunk (removed, a group, never written, or contiguous: no checksum).
bool flip_byte(const std::string& path, const std::string& name, int which) {
  const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) bug("cannot reopen the checkpoint");
  const hid_t ds = H5Dopen2(f, name.c_str(), H5P_DEFAULT);
  haddr_t addr = HADDR_UNDEF;
  hsize_t size = 0;
  herr_t r = -1;
  if (ds >= 0) {
    const hid_t space = H5Dget_space(ds);
    std::vector<hsize_t> origin(static_cast<size_t>(H5Sget_simple_extent_ndims(space)), 0);
    unsigned mask = 0;
    r = H5Dget_chunk_info_by_coord(ds, origin.data(), &mask, &addr, &size);
    H5Sclose(space);
    H5Dclose(ds);
  }
  H5Eclear2(H5E_DEFAULT);
  H5Fclose(f);
  if (r < 0 || addr == HADDR_UNDEF || size == 0) return false;
  FILE* file = std::fopen(path.c_str(), "r+b");
  if (!file) bug("cannot open the checkpoint to damage it");
  const long at = static_cast<long>(addr + static_cast<hsize_t>(which) % size);
  std::fseek(file, at, SEEK_SET);
  const int c = std::fgetc(file);
  std::fseek(file, at, SEEK_SET);
  std::fputc(c ^ 0xFF, file);
  std::fclose(file);
  return true;
}

// Applies one edit, decoded from d, to the file and the model.
void edit(const std::string& path, Model& m, Decoder& d) {
  mt::CheckpointState& s = m.s;
  const int kind = d.pick(11);
  // Edits through the C API, on the closed file.
  if (kind == 8) {  // declared huge, never written
    const int which = d.pick(3);
    const hsize_t huge = hsize_t{1} << (20 + d.pick(24));
    std::string name = "/config";
    if (which == 0) {
      name = tensor_ref(m, d).path;
      raw_unwritten(path, name, H5T_IEEE_F32LE, {huge});
    } else {
      if (which == 1) name = kAllFields[d.pick(9)];
      raw_unwritten(path, name, H5T_STD_I64LE, {huge});
    }
    m.broken.insert(name);
    return;
  }
  if (kind == 9) {  // the old form of /config
    const std::string text = "seed: " + std::to_string(d.byte()) + "\n";
    raw_vlen_config(path, text);
    s.config_yaml = text;
    m.broken.erase("/config");
    return;
  }
  if (kind == 5) {  // something removed
    const int which = d.pick(3);
    if (which == 2) {
      const bool root = d.pick(2);
      const hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
      const char* attr = root ? "format_version" : "name";
      H5Adelete_by_name(id, root ? "/" : "/optimizer", attr, H5P_DEFAULT);
      H5Eclear2(H5E_DEFAULT);
      H5Fclose(id);
      m.broken.insert(std::string("@") + (root ? "/" : "/optimizer") + ":" + attr);
      return;
    }
    const std::string name = which == 0 ? kAllFields[d.pick(10)] : tensor_ref(m, d).path;
    raw_delete(path, name);
    if (name == "/state/grad_evals") {
      m.grad_evals_present = false;
      s.grad_evals = 0;
      m.broken.erase(name);
    } else {
      m.broken.insert(name);
    }
    return;
  }
  if (kind == 6) {  // a group instead of a dataset
    const std::string name = d.pick(2) ? tensor_ref(m, d).path : kAllFields[d.pick(10)];
    raw_delete(path, name);
    mt::h5::File f = mt::h5::File::open_write(path);
    f.create_group(name);
    f.close();
    m.broken.insert(name);
    if (name == "/state/grad_evals") m.grad_evals_present = true;
    return;
  }
  mt::h5::File f = mt::h5::File::open_write(path);
  switch (kind) {
    case 0: {  // an integer field, in the new or the old (scalar dataspace) form
      const int i = d.pick(5);
      const int64_t v = kInts[d.pick(12)];
      if (i == 2)
        m.world_size = v;
      else
        *int_field(s, i) = v;
      if (i == 3) m.grad_evals_present = true;
      if (d.pick(2))
        f.write_scalar<int64_t>(kIntFields[i], v);
      else
        f.write<int64_t>(kIntFields[i], {}, &v);
      m.broken.erase(kIntFields[i]);
      break;
    }
    case 1: {  // a floating-point field
      const int i = d.pick(3);
      const double v = kDoubles[d.pick(12)];
      *double_field(s, i) = v;
      f.write_scalar<double>(kDoubleFields[i], v);
      m.broken.erase(kDoubleFields[i]);
      break;
    }
    case 2: {  // an attribute
      switch (d.pick(4)) {
        case 0:
          m.format_version = kInts[d.pick(12)];
          f.set_attr("/", "format_version", m.format_version);
          m.broken.erase("@/:format_version");
          break;
        case 1:
          s.optimizer.step = kInts[d.pick(12)];
          f.set_attr("/optimizer", "step", s.optimizer.step);
          break;
        case 2:
          s.optimizer.name = kNames[d.pick(4)];
          f.set_attr("/optimizer", "name", s.optimizer.name);
          m.broken.erase("@/optimizer:name");
          break;
        default:
          m.buffers_attr = kBufferLists[d.pick(10)];
          f.set_attr("/optimizer", "buffers", m.buffers_attr);
          break;
      }
      break;
    }
    case 3: {  // a tensor element; the tensor rewritten with or without a checksum
      const TensorRef t = tensor_ref(m, d);
      t.data[d.pick(static_cast<int>(t.size))] = kFloats[d.pick(6)];
      f.write<float>(t.path, t.shape, t.data, {{}, 0, d.pick(2) == 0});
      m.broken.erase(t.path);
      break;
    }
    case 4: {  // a tensor of another type or shape
      const TensorRef t = tensor_ref(m, d);
      std::vector<int64_t> shape = t.shape;
      if (d.pick(2)) {
        const std::vector<double> wide(t.data, t.data + t.size);
        f.write<double>(t.path, shape, wide.data());
      } else {
        shape.push_back(1);  // the same values with one more dimension
        f.write<float>(t.path, shape, t.data);
      }
      m.broken.insert(t.path);
      break;
    }
    case 7: {  // a field of the wrong type or size (a string is a valid /config)
      const std::string name = kAllFields[d.pick(10)];
      const int form = d.pick(3);
      if (form == 0) {
        f.write_scalar<float>(name, 1.0f);
      } else if (form == 1) {
        const int64_t two[] = {1, 1};
        f.write<int64_t>(name, {2}, two);
      } else {
        f.write_string(name, "7");
      }
      if (name == "/config" && form == 2) {
        s.config_yaml = "7";
        m.broken.erase(name);
      } else {
        m.broken.insert(name);
        if (name == "/state/grad_evals") m.grad_evals_present = true;
      }
      break;
    }
    default: {  // a tensor the model does not have
      const float one = 1;
      f.write<float>("/params/extra", {1}, &one);
      m.broken.insert("/params/extra");
      break;
    }
  }
  f.close();
}

void check_equal(const mt::CheckpointState& got, const mt::CheckpointState& want, const Model& m) {
  auto same = [](const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
  };
  auto same_d = [](double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; };
  if (!same(got.params, want.params)) bug("params differ from those written");
  if (got.step != want.step || got.optimizer.step != want.optimizer.step ||
      got.data_cursor != want.data_cursor || got.world_size != m.world_size ||
      got.grad_evals != want.grad_evals || got.seed != want.seed ||
      got.ufom.count != want.ufom.count || !same_d(got.ufom.v2_ema, want.ufom.v2_ema) ||
      !same_d(got.ufom.d2_ema, want.ufom.d2_ema) || !same_d(got.ufom.q, want.ufom.q))
    bug("a state field differs from the one written");
  if (got.optimizer.name != want.optimizer.name) bug("optimizer name differs");
  if (got.config_yaml != want.config_yaml) bug("config text differs");
  std::string listed;
  for (const auto& [name, buf] : got.optimizer.buffers) {
    listed += (listed.empty() ? "" : ",") + name;
    bool found = false;
    for (const auto& [wname, wbuf] : want.optimizer.buffers)
      if (wname == name) found = same(buf, wbuf);
    if (!found) bug("optimizer buffer " + name + " differs");
  }
  if (listed != m.buffers_attr) bug("optimizer buffers listed differ");
}

// With MT_FUZZ_STATS set, how many inputs read back, were refused, were refused for a checksum;
// with MT_FUZZ_VERBOSE, every refusal's message.
struct Stats {
  long ok = 0, refused = 0, checksum = 0;
  ~Stats() {
    if (std::getenv("MT_FUZZ_STATS"))
      std::fprintf(stderr, "fuzz_checkpoint: %ld read back, %ld refused (%ld for a checksum)\n", ok,
                   refused, checksum);
  }
} stats;

void run(Decoder& d) {
  Model m = decode_state(d);
  const std::string path = temp_path();
  mt::write_checkpoint(path, m.s);
  const int edits = d.pick(kMaxEdits + 1);
  for (int i = 0; i < edits; ++i) edit(path, m, d);
  if (d.pick(3) == 0) {  // last, so that no edit rewrites the damaged dataset
    const int which = d.pick(3);
    const std::string name = which == 0   ? tensor_ref(m, d).path
                             : which == 1 ? std::string(kAllFields[d.pick(10)])
                                          : std::string("/config");
    if (flip_byte(path, name, d.byte())) m.flipped = name;
  }
  const bool valid = model_valid(m);
  try {
    const mt::CheckpointState got = mt::read_checkpoint(path, m.s.layout);
    if (!valid) bug("read_checkpoint accepted an invalid checkpoint");
    check_equal(got, m.s, m);
    if (mt::read_checkpoint_config(path) != m.s.config_yaml) bug("read_checkpoint_config differs");
    ++stats.ok;
  } catch (const mt::UsageError& e) {
    const std::string msg = e.what();
    ++stats.refused;
    if (msg.find("Fletcher-32") != std::string::npos) ++stats.checksum;
    if (std::getenv("MT_FUZZ_VERBOSE")) std::fprintf(stderr, "refused: %s\n", msg.c_str());
    if (msg.rfind("checkpoint " + path + ": ", 0) != 0)
      bug("message does not start with the checkpoint: " + msg);
    if (valid) bug("read_checkpoint refused a valid checkpoint: " + msg);
    // A flipped byte in a file otherwise valid must be reported as such.
    if (!m.flipped.empty() && is_read(m, m.flipped) && model_valid(m, false) &&
        msg.find("dataset " + m.flipped + " fails its Fletcher-32 checksum") == std::string::npos)
      bug("the flipped byte in " + m.flipped + " was not reported as a checksum failure: " + msg);
  }
}

void write_seeds(const std::string& dir) {
  // All zeros: a valid checkpoint, no edits; then a few shapes, optimizers and single edits.
  const std::vector<std::vector<uint8_t>> seeds = {
      std::vector<uint8_t>(32, 0),
      {2, 1, 2, 3, 2, 1, 0, 5, 9, 0, 17, 3, 2, 1, 4, 2, 3, 1, 0},
      {1, 2, 1, 1, 7, 1, 33, 2, 1, 1, 3, 2, 8, 1, 0, 2, 0, 5},
      {0, 0, 0, 1, 0, 3, 4, 0, 0, 1, 2, 3, 4, 1, 11, 0, 0, 0},
      {2, 2, 3, 3, 3, 1, 1, 1, 9, 0, 40, 5, 7, 2, 4, 1, 2, 5, 2, 3, 2, 1, 1},
  };
  int i = 0;
  for (const auto& s : seeds) {
    Decoder d(s.data(), s.size());
    run(d);
    std::ofstream(dir + "/seed" + std::to_string(i++), std::ios::binary)
        .write(reinterpret_cast<const char*>(s.data()), static_cast<std::streamsize>(s.size()));
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  if (const char* dir = std::getenv("MT_FUZZ_WRITE_SEEDS")) {
    write_seeds(dir);
    std::remove(temp_path().c_str());
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Decoder d(data, size);
  try {
    run(d);
  } catch (const std::exception& e) {
    bug(std::string("exception other than mt::UsageError escaped: ") + e.what());
  } catch (...) {
    bug("a non-std exception escaped");
  }
  std::remove(temp_path().c_str());
  return 0;
}
