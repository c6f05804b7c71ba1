// libFuzzer target for the HDF5 episode-store reader (data/episode_store.h): decodes the input into
// a store description, writes it as an HDF5 file, opens it with EpisodeStore and, when that works,
// serves episodes and checks them against what was written. Run by tests/fuzz/run_fuzz.sh.
//
// Why structure-aware: libhdf5 1.10's own parser of the file format crashes on arbitrary bytes
// (known upstream bugs, not ours to fix), so feeding raw fuzz bytes as an .h5 file would only find
// those. Instead the bytes pick the store's fields (image shape, class sizes, labels, offsets,
// names, splits, fixed episodes, attributes) and how each is spoiled (missing, wrong type or shape,
// a group instead of a dataset, an empty dataspace, declared but never written, edited values),
// and a structurally valid HDF5 file is written from them with h5::File (not write_store, which
// refuses invalid contents) plus a few raw HDF5 calls for forms h5::File does not write
// (h5py-style fixed-length strings, unsigned and null-dataspace attributes, unwritten datasets).
// Opening must then either succeed or throw mt::UsageError; any other exception, a crash, a leak
// or a hang is a bug. Where the harness knows the file's exact contents it also checks that the
// reader accepts exactly the stores that store_problem() calls valid, and that every served image
// is the one written.
//
// With MT_FUZZ_WRITE_SEEDS=DIR set, the binary writes encodings of valid stores to DIR and exits.
#include <hdf5.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/episode.h"
#include "core/hdf5.h"
#include "data/episode_store.h"

namespace {

// Limits that keep one execution to a few milliseconds.
constexpr int kMaxClasses = 8;
constexpr int kMaxPerClass = 8;
constexpr int kMaxImages = 64;
constexpr int kMaxSide = 16;
constexpr int kMaxChannels = 4;
constexpr int kMaxEdits = 4;
constexpr int kMaxProbes = 3;
constexpr int kMaxDim = 72;  // any dimension of a reshaped /images

// Declared sizes of never-written datasets (kUnallocated): a file of a few KB may declare up to
// 2^43 elements, or /images dimensions up to 4096^3. The reader must reject such sizes before it
// allocates anything (it once read them whole and let std::bad_alloc escape).
hsize_t declared_length(int alt) { return hsize_t{1} << (16 + alt % 28); }
hsize_t declared_dim(int d) { return static_cast<hsize_t>(d) * d * d; }

[[noreturn]] void bug(const std::string& what) {
  std::fprintf(stderr, "fuzz_store: BUG: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

// ---- the store description and its byte encoding -----------------------------------------------

// How an attribute is written. kInt/kString/kInts/kDouble go through h5::File; the rest are raw
// HDF5 calls.
enum AttrKind : int {
  kAttrMissing,
  kAttrInt,
  kAttrString,
  kAttrDouble,
  kAttrInts,
  kAttrFixedString,  // fixed-length string, as h5py writes numpy bytes
  kAttrUint64,
  kAttrNullSpace,  // int64 with an empty (H5S_NULL) dataspace
  kAttrKinds
};

struct Attr {
  int kind = kAttrMissing;
  int64_t num = 0;            // kAttrInt, kAttrDouble (its value as a double), kAttrUint64
  std::vector<int64_t> nums;  // kAttrInts
  std::string text;           // kAttrString, kAttrFixedString
};

// How a dataset is written.
enum Form : int {
  kNatural,       // the reader's type, 1-D
  kMissing,       // not written
  kWrongType,     // another element type (alt picks which)
  kReshaped,      // the right type as [1, n], [n, 1] or a scalar (alt picks)
  kGroup,         // a group of that name
  kNullSpace,     // the right type with an empty (H5S_NULL) dataspace
  kFixedStrings,  // fixed-length strings (class names only; others: natural)
  kUnallocated,   // the right type, declared long (alt picks how long) but never written
  kForms
};

struct Dataset {
  int form = kNatural;
  int alt = 0;
};

// One change applied to the derived arrays before writing.
struct Edit {
  int target = 0;  // index into the arrays below (kTargets)
  int op = 0;      // 0 set element, 1 resize, 2 append
  int index = 0;
  int64_t value = 0;
};
enum Target : int { kLabels, kOffsets, kNames, kTrain, kVal, kTest, kSupport, kQuery, kTargets };
const char* const kSplitNames[] = {"train", "val", "test"};

// One request made of an opened store.
struct Probe {
  int split = 0;  // train, val, test or an unknown name
  int ways = 2, shots = 1, queries = 1;
  int seed = 0;
};

struct Spec {
  Attr format_version, dataset, image_shape, source_sha256, created_by, split_method;
  int height = 1, width = 1, channels = 1;
  std::vector<int> class_sizes;
  uint32_t pixel_seed = 0;
  Dataset images;
  int images_layout = 0;         // 0 chunked per image, 1 contiguous, 2 chunked + deflate
  std::vector<int> images_dims;  // kReshaped: the dims written (any rank 0..5)
  Dataset labels, offsets, names;
  int splits_form = 0;  // 0 group, 1 absent, 2 a dataset named /splits
  Dataset split_ds[3];
  std::vector<int32_t> split_members[3];
  int episodes_form = 0;  // 0 none, 1 group, 2 a dataset named /episodes
  Attr ways, shots, queries;
  Dataset support_ds, query_ds;
  int episode_rows = 0, support_cols = 0, query_cols = 0;
  std::vector<int64_t> support, query;
  std::vector<Edit> edits;
  std::vector<Probe> probes;
};

// Reads the encoding; past the end every byte reads as 0. Small values are taken modulo their
// range, so every input decodes to some spec.
class Decoder {
 public:
  Decoder(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint8_t byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  void small(int& v, int max) { v = byte() % (max + 1); }
  void i8(int32_t& v) { v = static_cast<int8_t>(byte()); }
  void i8(int64_t& v) { v = static_cast<int8_t>(byte()); }
  void u32(uint32_t& v) {
    v = 0;
    for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(byte()) << (8 * i);
  }
  void i64(int64_t& v) {
    uint64_t u = 0;
    for (int i = 0; i < 8; ++i) u |= static_cast<uint64_t>(byte()) << (8 * i);
    std::memcpy(&v, &u, sizeof v);
  }
  // A number in one byte when in [-127, 127], else the escape byte 0x80 and eight bytes: the
  // values that matter are small, and a short encoding keeps mutations on the structure.
  void num(int64_t& v) {
    const int8_t b = static_cast<int8_t>(byte());
    if (b == INT8_MIN)
      i64(v);
    else
      v = b;
  }
  void text(std::string& s, int max) {
    int n = 0;
    small(n, max);
    s.resize(n);
    for (char& c : s) c = static_cast<char>(byte());
  }
  template <typename T, typename F>
  void list(std::vector<T>& v, int max, F&& each) {
    int n = 0;
    small(n, max);
    v.resize(n);
    for (T& x : v) each(x);
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// The inverse of Decoder, for the seed corpus.
class Encoder {
 public:
  std::vector<uint8_t> bytes;
  void byte(uint8_t b) { bytes.push_back(b); }
  void small(int& v, int max) {
    if (v < 0 || v > max) bug("encoder: value out of range");
    byte(static_cast<uint8_t>(v));
  }
  void i8(int32_t& v) { byte(static_cast<uint8_t>(static_cast<int8_t>(v))); }
  void i8(int64_t& v) { byte(static_cast<uint8_t>(static_cast<int8_t>(v))); }
  void u32(uint32_t& v) {
    for (int i = 0; i < 4; ++i) byte(static_cast<uint8_t>(v >> (8 * i)));
  }
  void i64(int64_t& v) {
    uint64_t u = 0;
    std::memcpy(&u, &v, sizeof u);
    for (int i = 0; i < 8; ++i) byte(static_cast<uint8_t>(u >> (8 * i)));
  }
  void num(int64_t& v) {
    if (v >= -127 && v <= 127) {
      byte(static_cast<uint8_t>(static_cast<int8_t>(v)));
    } else {
      byte(0x80);
      i64(v);
    }
  }
  void text(std::string& s, int max) {
    int n = static_cast<int>(s.size());
    small(n, max);
    for (char c : s) byte(static_cast<uint8_t>(c));
  }
  template <typename T, typename F>
  void list(std::vector<T>& v, int max, F&& each) {
    int n = static_cast<int>(v.size());
    small(n, max);
    for (T& x : v) each(x);
  }
};

// Walks every field of the spec in one order, decoding or encoding it.
template <typename Coder>
void code(Coder& c, Attr& a) {
  c.small(a.kind, kAttrKinds - 1);
  switch (a.kind) {
    case kAttrInt:
    case kAttrDouble:
    case kAttrUint64:
    case kAttrNullSpace:
      c.num(a.num);
      break;
    case kAttrString:
    case kAttrFixedString:
      c.text(a.text, 24);
      break;
    case kAttrInts:
      c.list(a.nums, 5, [&](int64_t& x) { c.num(x); });
      break;
    default:
      break;
  }
}

template <typename Coder>
void code(Coder& c, Dataset& d) {
  c.small(d.form, kForms - 1);
  c.small(d.alt, 255);
}

template <typename Coder>
void code(Coder& c, Spec& s) {
  for (Attr* a : {&s.format_version, &s.dataset, &s.image_shape, &s.source_sha256, &s.created_by,
                  &s.split_method})
    code(c, *a);
  int h = s.height - 1, w = s.width - 1, ch = s.channels - 1;
  c.small(h, kMaxSide - 1);
  c.small(w, kMaxSide - 1);
  c.small(ch, kMaxChannels - 1);
  s.height = h + 1;
  s.width = w + 1;
  s.channels = ch + 1;
  c.list(s.class_sizes, kMaxClasses, [&](int& n) { c.small(n, kMaxPerClass); });
  c.u32(s.pixel_seed);
  code(c, s.images);
  c.small(s.images_layout, 2);
  c.list(s.images_dims, 5, [&](int& d) { c.small(d, kMaxDim); });
  for (Dataset* d : {&s.labels, &s.offsets, &s.names}) code(c, *d);
  c.small(s.splits_form, 2);
  for (int i = 0; i < 3; ++i) {
    code(c, s.split_ds[i]);
    c.list(s.split_members[i], kMaxClasses + 1, [&](int32_t& k) { c.i8(k); });
  }
  c.small(s.episodes_form, 2);
  if (s.episodes_form != 0) {
    for (Attr* a : {&s.ways, &s.shots, &s.queries}) code(c, *a);
    code(c, s.support_ds);
    code(c, s.query_ds);
    c.small(s.episode_rows, 3);
    c.small(s.support_cols, 16);
    c.small(s.query_cols, 16);
    s.support.resize(static_cast<size_t>(s.episode_rows) * s.support_cols);
    s.query.resize(static_cast<size_t>(s.episode_rows) * s.query_cols);
    for (int64_t& i : s.support) c.i8(i);
    for (int64_t& i : s.query) c.i8(i);
  }
  c.list(s.edits, kMaxEdits, [&](Edit& e) {
    c.small(e.target, kTargets - 1);
    c.small(e.op, 2);
    c.small(e.index, 255);
    c.num(e.value);
  });
  c.list(s.probes, kMaxProbes, [&](Probe& p) {
    c.small(p.split, 3);
    c.small(p.ways, 6);
    c.small(p.shots, 4);
    c.small(p.queries, 4);
    c.small(p.seed, 255);
  });
}

// ---- what the spec stands for ----------------------------------------------------------------

// The arrays of the store after the edits, and the pixels.
struct Arrays {
  std::vector<int32_t> labels;
  std::vector<int64_t> offsets;
  std::vector<std::string> names;
  std::vector<int32_t> splits[3];
  std::vector<int64_t> support, query;
  int64_t num_images = 0;       // images written (from the class sizes, not the edited labels)
  std::vector<uint8_t> pixels;  // [num_images, H, W, C]
};

uint64_t splitmix(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

template <typename T>
void apply_edit(std::vector<T>& v, const Edit& e, T value) {
  switch (e.op) {
    case 0:
      if (!v.empty()) v[e.index % v.size()] = value;
      break;
    case 1:
      v.resize(static_cast<size_t>(e.index) % (kMaxImages + 2));
      break;
    default:
      v.push_back(value);
      break;
  }
}

Arrays derive(const Spec& s) {
  Arrays a;
  a.offsets.push_back(0);
  for (size_t k = 0; k < s.class_sizes.size(); ++k) {
    const int n = std::min<int>(s.class_sizes[k], kMaxImages - static_cast<int>(a.labels.size()));
    for (int i = 0; i < n; ++i) a.labels.push_back(static_cast<int32_t>(k));
    a.offsets.push_back(static_cast<int64_t>(a.labels.size()));
    a.names.push_back("class" + std::to_string(k));
  }
  a.num_images = static_cast<int64_t>(a.labels.size());
  for (int i = 0; i < 3; ++i) a.splits[i] = s.split_members[i];
  a.support = s.support;
  a.query = s.query;
  for (const Edit& e : s.edits) {
    switch (e.target) {
      case kLabels:
        apply_edit(a.labels, e, static_cast<int32_t>(e.value));
        break;
      case kOffsets:
        apply_edit(a.offsets, e, e.value);
        break;
      case kNames:
        apply_edit(a.names, e, std::to_string(e.value));
        break;
      case kTrain:
      case kVal:
      case kTest:
        apply_edit(a.splits[e.target - kTrain], e, static_cast<int32_t>(e.value));
        break;
      case kSupport:
        apply_edit(a.support, e, e.value);
        break;
      default:
        apply_edit(a.query, e, e.value);
        break;
    }
  }
  a.pixels.resize(static_cast<size_t>(a.num_images) * s.height * s.width * s.channels);
  uint64_t state = s.pixel_seed;
  for (uint8_t& p : a.pixels) p = static_cast<uint8_t>(splitmix(state) >> 56);
  return a;
}

// ---- writing the file ------------------------------------------------------------------------

// Raw HDF5 calls, for the forms h5::File does not write. Failures here are harness bugs.
hid_t ok(hid_t id, const char* what) {
  if (id < 0) bug(std::string("raw HDF5 call failed: ") + what);
  return id;
}

hid_t fixed_string_type(size_t size) {
  const hid_t t = ok(H5Tcopy(H5T_C_S1), "H5Tcopy");
  ok(H5Tset_size(t, std::max<size_t>(size, 1)), "H5Tset_size");
  ok(H5Tset_strpad(t, H5T_STR_NULLPAD), "H5Tset_strpad");
  return t;
}

void raw_attr(const std::string& file, const std::string& obj, const char* name, const Attr& a) {
  const hid_t f = ok(H5Fopen(file.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), "H5Fopen");
  const hid_t o = ok(H5Oopen(f, obj.c_str(), H5P_DEFAULT), "H5Oopen");
  hid_t type = -1, space = -1;
  const void* data = nullptr;
  const uint64_t u = static_cast<uint64_t>(a.num);
  if (a.kind == kAttrFixedString) {
    type = fixed_string_type(a.text.size());
    space = ok(H5Screate(H5S_SCALAR), "H5Screate");
    data = a.text.data();
  } else if (a.kind == kAttrUint64) {
    type = ok(H5Tcopy(H5T_STD_U64LE), "H5Tcopy");
    space = ok(H5Screate(H5S_SCALAR), "H5Screate");
    data = &u;
  } else {
    type = ok(H5Tcopy(H5T_STD_I64LE), "H5Tcopy");
    space = ok(H5Screate(H5S_NULL), "H5Screate");
  }
  const hid_t at = ok(H5Acreate2(o, name, type, space, H5P_DEFAULT, H5P_DEFAULT), "H5Acreate2");
  if (data && a.kind == kAttrFixedString && a.text.empty()) {
    const char zero = 0;
    ok(H5Awrite(at, type, &zero), "H5Awrite");
  } else if (data) {
    ok(H5Awrite(at, a.kind == kAttrUint64 ? H5T_NATIVE_UINT64 : type, data), "H5Awrite");
  }
  H5Aclose(at);
  H5Sclose(space);
  H5Tclose(type);
  H5Oclose(o);
  ok(H5Fclose(f), "H5Fclose");
}

// Writes a dataset: fixed-length strings (with data), or nothing (an empty dataspace, or a
// chunked layout given by dcpl and never written).
void raw_dataset(const std::string& file, const std::string& path, hid_t type, hid_t space,
                 const void* data, hid_t dcpl = H5P_DEFAULT) {
  const hid_t f = ok(H5Fopen(file.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), "H5Fopen");
  const hid_t lcpl = ok(H5Pcreate(H5P_LINK_CREATE), "H5Pcreate");
  ok(H5Pset_create_intermediate_group(lcpl, 1), "H5Pset_create_intermediate_group");
  const hid_t ds =
      ok(H5Dcreate2(f, path.c_str(), type, space, lcpl, dcpl, H5P_DEFAULT), "H5Dcreate2");
  if (data) ok(H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), "H5Dwrite");
  H5Dclose(ds);
  H5Pclose(lcpl);
  ok(H5Fclose(f), "H5Fclose");
}

// A dataset the h5::File pass leaves to the raw pass: an empty dataspace, or unallocated.
struct RawDataset {
  std::string path;
  hid_t type;  // H5T_STD_*, or -1 for variable-length strings
  bool null_space = false;
  std::vector<hsize_t> dims;  // unallocated: the declared shape
};

void raw_later(const std::string& file, const RawDataset& d) {
  hid_t type = d.type;
  if (type < 0) {
    type = ok(H5Tcopy(H5T_C_S1), "H5Tcopy");
    ok(H5Tset_size(type, H5T_VARIABLE), "H5Tset_size");
  }
  if (d.null_space) {
    const hid_t space = ok(H5Screate(H5S_NULL), "H5Screate");
    raw_dataset(file, d.path, type, space, nullptr);
    H5Sclose(space);
  } else {
    const std::vector<hsize_t> maxdims(d.dims.size(), H5S_UNLIMITED);
    std::vector<hsize_t> chunk(d.dims.size(), 1);
    const hid_t space =
        ok(H5Screate_simple(static_cast<int>(d.dims.size()), d.dims.data(), maxdims.data()),
           "H5Screate_simple");
    const hid_t dcpl = ok(H5Pcreate(H5P_DATASET_CREATE), "H5Pcreate");
    if (!chunk.empty()) {
      chunk.back() = 64;
      ok(H5Pset_chunk(dcpl, static_cast<int>(chunk.size()), chunk.data()), "H5Pset_chunk");
    }
    raw_dataset(file, d.path, type, space, nullptr, dcpl);
    H5Pclose(dcpl);
    H5Sclose(space);
  }
  if (type != d.type) H5Tclose(type);
}

void raw_fixed_strings(const std::string& file, const std::string& path,
                       const std::vector<std::string>& v) {
  size_t size = 1;
  for (const auto& s : v) size = std::max(size, s.size());
  std::vector<char> buf(v.size() * size, 0);
  for (size_t i = 0; i < v.size(); ++i)
    std::memcpy(buf.data() + i * size, v[i].data(), v[i].size());
  const hid_t type = fixed_string_type(size);
  const hsize_t n = v.size();
  const hid_t space = ok(H5Screate_simple(1, &n, nullptr), "H5Screate_simple");
  raw_dataset(file, path, type, space, v.empty() ? nullptr : buf.data());
  H5Sclose(space);
  H5Tclose(type);
}

bool is_raw(const Attr& a) { return a.kind >= kAttrFixedString; }

void write_attr(mt::h5::File& f, const std::string& obj, const char* name, const Attr& a) {
  switch (a.kind) {
    case kAttrInt:
      f.set_attr(obj, name, a.num);
      break;
    case kAttrString:
      f.set_attr(obj, name, a.text);
      break;
    case kAttrDouble:
      f.set_attr(obj, name, static_cast<double>(a.num));
      break;
    case kAttrInts:
      f.set_attr(obj, name, a.nums);
      break;
    default:
      break;  // missing, or raw (written after the file is closed)
  }
}

template <typename T>
std::vector<T> converted(const std::vector<int64_t>& v) {
  return std::vector<T>(v.begin(), v.end());
}

// Writes a 1-D integer array of element type Natural in the given form. Raw forms are queued.
template <typename Natural, typename V>
void write_ints(mt::h5::File& f, const std::string& path, const V& values, const Dataset& d,
                std::vector<RawDataset>& raw) {
  const std::vector<int64_t> v(values.begin(), values.end());
  const int64_t n = static_cast<int64_t>(v.size());
  switch (d.form) {
    case kMissing:
      break;
    case kWrongType:
      switch (d.alt % 4) {
        case 0:
          if (std::is_same_v<Natural, int64_t>)
            f.write<int32_t>(path, {n}, converted<int32_t>(v).data());
          else
            f.write<int64_t>(path, {n}, v.data());
          break;
        case 1:
          f.write<float>(path, {n}, converted<float>(v).data());
          break;
        case 2:
          f.write<uint8_t>(path, {n}, converted<uint8_t>(v).data());
          break;
        default:
          f.write_strings(path, std::vector<std::string>(v.size(), "7"));
          break;
      }
      break;
    case kReshaped: {
      const std::vector<Natural> nat = converted<Natural>(v);
      const Natural zero = 0;
      if (d.alt % 3 == 0)
        f.write<Natural>(path, {1, n}, nat.data());
      else if (d.alt % 3 == 1)
        f.write<Natural>(path, {n, 1}, nat.data());
      else
        f.write<Natural>(path, {}, nat.empty() ? &zero : nat.data());
      break;
    }
    case kGroup:
      f.create_group(path);
      break;
    case kNullSpace:
    case kUnallocated: {
      const hid_t type = std::is_same_v<Natural, int64_t> ? H5T_STD_I64LE : H5T_STD_I32LE;
      if (d.form == kNullSpace)
        raw.push_back({path, type, true, {}});
      else
        raw.push_back({path, type, false, {declared_length(d.alt)}});
      break;
    }
    default:
      f.write<Natural>(path, {n}, converted<Natural>(v).data());
      break;
  }
}

// Everything the harness can say about the file it wrote.
struct Written {
  bool known = false;  // every field natural: the reader sees exactly `contents`
  mt::StoreContents contents;
  bool valid = false;  // known, and the reader must accept it
};

Written write_file(const std::string& path, const Spec& s, const Arrays& a) {
  using mt::h5::File;
  std::vector<RawDataset> raw;
  bool fixed_names = false;
  {
    File f = File::create(path);
    const int64_t n = a.num_images;
    const int64_t h = s.height, w = s.width, c = s.channels;
    // /images
    switch (s.images.form) {
      case kMissing:
        break;
      case kWrongType:
        if (s.images.alt % 2)
          f.write<float>("/images", {n, h, w, c},
                         std::vector<float>(a.pixels.begin(), a.pixels.end()).data());
        else
          f.write<int32_t>("/images", {n, h, w, c},
                           std::vector<int32_t>(a.pixels.begin(), a.pixels.end()).data());
        break;
      case kReshaped: {
        std::vector<int64_t> dims(s.images_dims.begin(), s.images_dims.end());
        int64_t count = 1;
        for (int64_t d : dims) count *= d;
        if (count > kMaxImages * kMaxSide * kMaxSide * kMaxChannels) {
          count = 1;
          for (int64_t& d : dims) count *= (d %= 8);
        }
        std::vector<uint8_t> data(static_cast<size_t>(count));
        for (size_t i = 0; i < data.size() && !a.pixels.empty(); ++i)
          data[i] = a.pixels[i % a.pixels.size()];
        f.write<uint8_t>("/images", dims, data.data());
        break;
      }
      case kGroup:
        f.create_group("/images");
        break;
      case kNullSpace:
        raw.push_back({"/images", H5T_STD_U8LE, true, {}});
        break;
      case kUnallocated: {
        // Any declared shape: [n, H, W, C] as declared by image_shape passes the reader's checks.
        std::vector<hsize_t> dims;
        for (int d : s.images_dims) dims.push_back(declared_dim(d));
        raw.push_back({"/images", H5T_STD_U8LE, false, dims});
        break;
      }
      default: {
        mt::h5::WriteOptions opt;
        if (n > 0 && s.images_layout != 1) {
          opt.chunk = {1, h, w, c};
          opt.deflate = s.images_layout == 2 ? 1 : 0;
        }
        f.write<uint8_t>("/images", {n, h, w, c}, a.pixels.data(), opt);
        break;
      }
    }
    write_ints<int32_t>(f, "/labels", a.labels, s.labels, raw);
    write_ints<int64_t>(f, "/class_offsets", a.offsets, s.offsets, raw);
    // /class_names
    switch (s.names.form) {
      case kNatural:
        f.write_strings("/class_names", a.names);
        break;
      case kFixedStrings:
        fixed_names = true;
        break;
      case kReshaped:
        f.write_string("/class_names", a.names.empty() ? std::string() : a.names[0]);
        break;
      case kUnallocated:
        raw.push_back({"/class_names", -1, false, {declared_length(s.names.alt)}});
        break;
      default:
        write_ints<int32_t>(f, "/class_names", std::vector<int64_t>(a.names.size(), 1), s.names,
                            raw);
        break;
    }
    // /splits
    if (s.splits_form == 2) {
      f.write<int32_t>("/splits", {static_cast<int64_t>(a.splits[0].size())}, a.splits[0].data());
    } else if (s.splits_form == 0) {
      f.create_group("/splits");
      for (int i = 0; i < 3; ++i)
        write_ints<int32_t>(f, std::string("/splits/") + kSplitNames[i], a.splits[i], s.split_ds[i],
                            raw);
    }
    // /episodes
    if (s.episodes_form == 2) {
      f.write<int64_t>("/episodes", {static_cast<int64_t>(a.support.size())}, a.support.data());
    } else if (s.episodes_form == 1) {
      f.create_group("/episodes");
      const int64_t rows = s.episode_rows;
      auto write_episodes = [&](const char* name, const std::vector<int64_t>& v, int cols,
                                const Dataset& d) {
        const std::string p = std::string("/episodes/") + name;
        // Natural is [rows, cols] when no edit changed the size; else 1-D.
        if (d.form == kNatural && static_cast<int64_t>(v.size()) == rows * cols && cols > 0)
          f.write<int64_t>(p, {rows, cols}, v.data());
        else
          write_ints<int64_t>(f, p, v, d, raw);
      };
      write_episodes("support", a.support, s.support_cols, s.support_ds);
      write_episodes("query", a.query, s.query_cols, s.query_ds);
    }
    if (s.episodes_form != 0) {
      write_attr(f, "/episodes", "ways", s.ways);
      write_attr(f, "/episodes", "shots", s.shots);
      write_attr(f, "/episodes", "queries", s.queries);
    }
    write_attr(f, "/", "format_version", s.format_version);
    write_attr(f, "/", "dataset", s.dataset);
    write_attr(f, "/", "image_shape", s.image_shape);
    write_attr(f, "/", "source_sha256", s.source_sha256);
    write_attr(f, "/", "created_by", s.created_by);
    write_attr(f, "/", "split_method", s.split_method);
    f.close();
  }
  // The raw forms, through the C API on the closed file.
  for (const RawDataset& d : raw) raw_later(path, d);
  if (fixed_names) raw_fixed_strings(path, "/class_names", a.names);
  const std::pair<const char*, const Attr*> root_attrs[] = {
      {"format_version", &s.format_version}, {"dataset", &s.dataset},
      {"image_shape", &s.image_shape},       {"source_sha256", &s.source_sha256},
      {"created_by", &s.created_by},         {"split_method", &s.split_method}};
  for (const auto& [name, attr] : root_attrs)
    if (is_raw(*attr)) raw_attr(path, "/", name, *attr);
  if (s.episodes_form != 0)
    for (const auto& [name, attr] : {std::pair<const char*, const Attr*>{"ways", &s.ways},
                                     {"shots", &s.shots},
                                     {"queries", &s.queries}})
      if (is_raw(*attr)) raw_attr(path, "/episodes", name, *attr);

  // Does the harness know exactly what the reader will see?
  Written out;
  auto natural = [](const Dataset& d) { return d.form == kNatural; };
  bool known = natural(s.images) && natural(s.labels) && natural(s.offsets) && natural(s.names) &&
               s.splits_form == 0;
  for (const Dataset& d : s.split_ds) known = known && natural(d);
  if (s.episodes_form == 2) known = false;
  if (s.episodes_form == 1)
    known = known && natural(s.support_ds) && natural(s.query_ds) && s.ways.kind == kAttrInt &&
            s.shots.kind == kAttrInt && s.queries.kind == kAttrInt;
  for (const Attr* attr : {&s.source_sha256, &s.created_by, &s.split_method})
    known = known && (attr->kind == kAttrMissing || attr->kind == kAttrString);
  known = known && s.format_version.kind == kAttrInt && s.dataset.kind == kAttrString &&
          s.image_shape.kind == kAttrInts;
  if (!known) return out;
  out.known = true;
  mt::StoreContents& c = out.contents;
  c.dataset = s.dataset.text;
  c.height = s.height;
  c.width = s.width;
  c.channels = s.channels;
  c.images = a.pixels;
  c.labels = a.labels;
  c.class_offsets = a.offsets;
  c.class_names = a.names;
  for (int i = 0; i < 3; ++i) c.splits[kSplitNames[i]] = a.splits[i];
  if (s.episodes_form == 1) {
    c.episodes.ways = static_cast<int>(s.ways.num);
    c.episodes.shots = static_cast<int>(s.shots.num);
    c.episodes.queries = static_cast<int>(s.queries.num);
    c.episodes.support = a.support;
    c.episodes.query = a.query;
  }
  const std::vector<int64_t> shape = {s.height, s.width, s.channels};
  out.valid = s.format_version.num == mt::kStoreFormatVersion && s.image_shape.nums == shape &&
              !c.class_offsets.empty() && mt::store_problem(c).empty() &&
              // The reader (unlike store_problem) rejects an /episodes group without episodes,
              // and attribute values that do not fit an int.
              !(s.episodes_form == 1 && a.support.empty());
  // The reader also wants the episodes as [E, ways*shots] and [E, ways*queries] (write_episodes
  // writes [rows, cols] or, after an edit, 1-D).
  if (s.episodes_form == 1) {
    auto as_matrix = [&](const Dataset& d, const std::vector<int64_t>& v, int cols,
                         int64_t want_cols) {
      return d.form == kNatural && static_cast<int64_t>(v.size()) == s.episode_rows * cols &&
             cols > 0 && cols == want_cols;
    };
    auto product = [](const Attr& x, const Attr& y) {  // no overflow for out-of-int values
      const bool fits =
          x.num >= INT32_MIN && x.num <= INT32_MAX && y.num >= INT32_MIN && y.num <= INT32_MAX;
      return fits ? x.num * y.num : int64_t{-1};
    };
    out.valid = out.valid &&
                as_matrix(s.support_ds, a.support, s.support_cols, product(s.ways, s.shots)) &&
                as_matrix(s.query_ds, a.query, s.query_cols, product(s.ways, s.queries));
  }
  for (const Attr* attr : {&s.ways, &s.shots, &s.queries})
    if (s.episodes_form == 1 && (attr->num < INT32_MIN || attr->num > INT32_MAX))
      out.valid = out.known = false;  // the reader truncates; store_problem sees other values
  return out;
}

// ---- checking what the reader serves -----------------------------------------------------------

// The image bytes of every written image, to find where a served image came from.
std::vector<uint8_t> image_bytes(const mt::StoreContents& c, int64_t i) {
  const int64_t size = c.image_bytes();
  return std::vector<uint8_t>(c.images.begin() + i * size, c.images.begin() + (i + 1) * size);
}

// Converts a served example ([C, H, W] floats in [0, 1]) back to [H, W, C] bytes.
std::vector<uint8_t> served_bytes(const mt::StoreContents& c, const float* x) {
  const int64_t pixels = int64_t{c.height} * c.width;
  std::vector<uint8_t> out(static_cast<size_t>(pixels * c.channels));
  for (int64_t p = 0; p < pixels; ++p)
    for (int ch = 0; ch < c.channels; ++ch) {
      const float v = x[ch * pixels + p];
      if (!(v >= 0.0f && v <= 1.0f)) bug("served pixel " + std::to_string(v) + " outside [0, 1]");
      out[p * c.channels + ch] = static_cast<uint8_t>(std::lround(v * 255.0f));
    }
  return out;
}

void check_batch(const mt::Batch<float>& b, int ways, int per_class, const mt::Shape& shape) {
  if (b.n != ways * per_class || b.item.c != shape.c || b.item.h != shape.h ||
      b.item.w != shape.w || b.x.size() != static_cast<size_t>(b.n) * shape.size() ||
      b.y.size() != static_cast<size_t>(b.n))
    bug("episode batch has the wrong size");
  for (int i = 0; i < b.n; ++i)
    if (b.y[i] != i / per_class) bug("episode label " + std::to_string(b.y[i]) + " out of place");
  for (float v : b.x)
    if (!(v >= 0.0f && v <= 1.0f)) bug("served pixel outside [0, 1]");
}

void probe(const mt::EpisodeStore& store, const Spec& s, const Written& w) {
  const mt::Shape shape = store.image_shape();
  if (w.known && (shape.c != s.channels || shape.h != s.height || shape.w != s.width))
    bug("image_shape differs from the written one");
  // Images keyed by their bytes, with the classes that hold them (tiny images may repeat).
  std::map<std::vector<uint8_t>, std::set<int32_t>> classes_of;
  if (w.known)
    for (int64_t i = 0; i < w.contents.num_images(); ++i)
      classes_of[image_bytes(w.contents, i)].insert(w.contents.labels[i]);

  for (const Probe& p : s.probes) {
    mt::EpisodeSpec spec;
    spec.split = p.split < 3 ? kSplitNames[p.split] : "nonesuch";
    spec.ways = p.ways;
    spec.shots = p.shots;
    spec.queries = p.queries;
    try {
      store.validate(spec);
    } catch (const mt::UsageError&) {
      continue;  // the spec does not fit this store: fine
    }
    mt::Episode<float> ep;
    try {
      store.sample(spec, static_cast<uint64_t>(p.seed), 3, 1, ep);
    } catch (const mt::UsageError& e) {
      // Validation passed: only images of the wrong type may still fail, and those are not known.
      if (w.known) bug(std::string("sample threw on a valid store: ") + e.what());
      continue;
    }
    if (ep.ways != spec.ways) bug("episode has the wrong number of ways");
    check_batch(ep.support, spec.ways, spec.shots, shape);
    check_batch(ep.query, spec.ways, spec.queries, shape);
    if (!w.known) continue;
    // Every example of episode class c must come from one store class k_c of the split, and the
    // k_c must be distinct. (Images are matched by their bytes; tiny images may repeat.)
    const std::vector<int32_t>& members = w.contents.splits.at(spec.split);
    std::set<int32_t> used;
    for (int cls = 0; cls < spec.ways; ++cls) {
      std::set<int32_t> common(members.begin(), members.end());
      auto take = [&](const float* x) {
        const std::vector<uint8_t> bytes = served_bytes(w.contents, x);
        const auto it = classes_of.find(bytes);
        if (it == classes_of.end()) bug("served an image that was never written");
        std::set<int32_t> both;
        for (int32_t k : it->second)
          if (common.count(k)) both.insert(k);
        common.swap(both);
      };
      const int64_t item = shape.size();
      for (int i = 0; i < spec.shots; ++i)
        take(ep.support.x.data() + (cls * spec.shots + i) * item);
      for (int i = 0; i < spec.queries; ++i)
        take(ep.query.x.data() + (cls * spec.queries + i) * item);
      if (common.empty()) bug("an episode class mixes images of different store classes");
      if (common.size() == 1 && !used.insert(*common.begin()).second)
        bug("two episode classes drawn from the same store class");
    }
  }

  // Fixed episodes: each served image must be the one the index names.
  const int64_t count = store.num_fixed_episodes();
  for (int64_t e = 0; e < std::min<int64_t>(count, 2); ++e) {
    mt::Episode<float> ep;
    store.fixed_episode(e, ep);
    const mt::FixedEpisodes& f = store.fixed_episodes();
    check_batch(ep.support, f.ways, f.shots, shape);
    check_batch(ep.query, f.ways, f.queries, shape);
    if (!w.known) continue;
    const int64_t ns = int64_t{f.ways} * f.shots, nq = int64_t{f.ways} * f.queries;
    for (int64_t i = 0; i < ns; ++i)
      if (served_bytes(w.contents, ep.support.x.data() + i * shape.size()) !=
          image_bytes(w.contents, w.contents.episodes.support[e * ns + i]))
        bug("fixed episode support image differs from the indexed one");
    for (int64_t i = 0; i < nq; ++i)
      if (served_bytes(w.contents, ep.query.x.data() + i * shape.size()) !=
          image_bytes(w.contents, w.contents.episodes.query[e * nq + i]))
        bug("fixed episode query image differs from the indexed one");
  }
  bool threw = false;
  try {
    mt::Episode<float> ep;
    store.fixed_episode(count, ep);
  } catch (const mt::UsageError&) {
    threw = true;
  }
  if (!threw) bug("fixed_episode(count) did not throw UsageError");
}

// A path of this process's own, on a RAM disk when there is one.
const std::string& temp_path() {
  static const std::string path = [] {
    namespace fs = std::filesystem;
    std::error_code ec;
    fs::path dir = "/dev/shm";
    if (!fs::is_directory(dir, ec) || access(dir.c_str(), W_OK) != 0)
      dir = fs::temp_directory_path();
    return (dir / ("mt_fuzz_store_" + std::to_string(getpid()) + ".h5")).string();
  }();
  return path;
}

// Outcomes, printed at exit with MT_FUZZ_STATS=1 (e.g. `fuzz_store -runs=0 CORPUS` tells how
// much of a corpus gets past validation to the sampler).
struct Stats {
  const bool enabled = std::getenv("MT_FUZZ_STATS") != nullptr;
  long runs = 0, opened = 0, known = 0, fixed = 0;
  std::map<std::string, long> rejections;  // by the start of the message
  ~Stats() {
    if (!enabled) return;
    std::fprintf(
        stderr,
        "fuzz_store: %ld stores, %ld opened (%ld of known contents, %ld with fixed episodes)\n",
        runs, opened, known, fixed);
    for (const auto& [message, n] : rejections)
      std::fprintf(stderr, "%8ld  %s\n", n, message.c_str());
  }
} stats;

void run(const Spec& s) {
  ++stats.runs;
  const Arrays a = derive(s);
  const std::string& path = temp_path();
  Written w;
  try {
    w = write_file(path, s, a);
  } catch (const std::exception& e) {
    bug(std::string("harness: writing the store failed: ") + e.what());
  }
  try {
    const mt::EpisodeStore store(path);
    if (w.known && !w.valid)
      bug("the reader accepted a store that store_problem rejects: " +
          mt::store_problem(w.contents));
    ++stats.opened;
    stats.known += w.known;
    stats.fixed += store.num_fixed_episodes() > 0;
    probe(store, s, w);
  } catch (const mt::UsageError& e) {
    const std::string message = e.what();
    const size_t colon = message.find(": ");  // after the file name
    if (stats.enabled)
      ++stats.rejections[message.substr(colon == std::string::npos ? 0 : colon + 2, 48)];
    if (w.valid) bug(std::string("the reader rejected a valid store: ") + e.what());
  }
  // Every HDF5 object the reader opened must be closed again, on success and on error paths.
  const ssize_t open_objects = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
  if (open_objects != 0)
    bug("HDF5 objects left open after the store was closed: " + std::to_string(open_objects));
}

// Seeds: valid stores of a few shapes, with and without fixed episodes and probes that fit.
std::vector<Spec> seed_specs() {
  std::vector<Spec> seeds;
  auto base = [](int h, int w, int c, std::vector<int> sizes) {
    Spec s;
    s.format_version = {kAttrInt, mt::kStoreFormatVersion, {}, ""};
    s.dataset = {kAttrString, 0, {}, "omni"};
    s.image_shape = {kAttrInts, 0, {h, w, c}, ""};
    s.source_sha256 = {kAttrString, 0, {}, "ab"};
    s.height = h;
    s.width = w;
    s.channels = c;
    s.class_sizes = std::move(sizes);
    s.pixel_seed = static_cast<uint32_t>(h * 1000 + w * 10 + c);
    const int k = static_cast<int>(s.class_sizes.size());
    for (int i = 0; i < k; ++i) s.split_members[i % 3].push_back(i);
    return s;
  };
  Spec a = base(4, 4, 1, {4, 4, 4, 4, 4, 4});
  a.probes = {{0, 2, 1, 1, 0}, {1, 2, 2, 2, 1}, {2, 2, 1, 3, 2}};
  seeds.push_back(a);

  Spec b = base(3, 5, 3, {3, 5, 2, 6});
  b.split_members[0] = {0, 1, 2};
  b.split_members[1] = {};
  b.split_members[2] = {3};
  b.images_layout = 2;
  b.probes = {{0, 3, 1, 1, 7}};
  seeds.push_back(b);

  Spec c = base(2, 2, 1, {2, 2, 2});
  c.split_members[0] = {};
  c.split_members[1] = {};
  c.split_members[2] = {0, 1, 2};
  c.episodes_form = 1;
  c.ways = {kAttrInt, 3, {}, ""};
  c.shots = {kAttrInt, 1, {}, ""};
  c.queries = {kAttrInt, 1, {}, ""};
  c.episode_rows = 2;
  c.support_cols = 3;
  c.query_cols = 3;
  c.support = {0, 2, 4, 1, 3, 5};
  c.query = {1, 3, 5, 0, 2, 4};
  c.probes = {{2, 3, 1, 1, 3}};
  seeds.push_back(c);

  Spec d = base(16, 16, 1, {8, 8, 8, 8, 8, 8, 8, 8});
  d.split_members[0] = {0, 1, 2, 3, 4};
  d.split_members[1] = {5, 6};
  d.split_members[2] = {7};
  d.images_layout = 1;
  d.probes = {{0, 5, 1, 4, 9}, {1, 2, 4, 4, 0}};
  seeds.push_back(d);

  Spec e = base(1, 1, 1, {});  // no classes at all: opens, serves nothing
  e.probes = {{0, 2, 1, 1, 0}};
  seeds.push_back(e);

  // Fixed episodes without probes, 2-way 2-shot 1-query, three of them, deflated 3-channel images.
  Spec f = base(5, 3, 3, {3, 3, 3, 3});
  f.split_members[0] = {0, 1};
  f.split_members[1] = {};
  f.split_members[2] = {2, 3};
  f.images_layout = 2;
  f.episodes_form = 1;
  f.ways = {kAttrInt, 2, {}, ""};
  f.shots = {kAttrInt, 2, {}, ""};
  f.queries = {kAttrInt, 1, {}, ""};
  f.episode_rows = 3;
  f.support_cols = 4;
  f.query_cols = 2;
  f.support = {6, 7, 9, 10, 0, 1, 3, 4, 9, 11, 6, 8};
  f.query = {8, 11, 2, 5, 10, 7};
  seeds.push_back(f);
  return seeds;
}

void write_seeds(const std::string& dir) {
  int i = 0;
  for (Spec& s : seed_specs()) {
    Encoder enc;
    code(enc, s);
    // Each seed must decode to itself and open as a valid store.
    Decoder dec(enc.bytes.data(), enc.bytes.size());
    Spec back;
    code(dec, back);
    Encoder again;
    code(again, back);
    if (again.bytes != enc.bytes) bug("seed " + std::to_string(i) + " does not round-trip");
    const Written w = write_file(temp_path(), back, derive(back));
    if (!w.valid) bug("seed " + std::to_string(i) + " is not a valid store");
    run(back);
    std::ofstream(dir + "/seed" + std::to_string(i++), std::ios::binary)
        .write(reinterpret_cast<const char*>(enc.bytes.data()),
               static_cast<std::streamsize>(enc.bytes.size()));
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // errors surface as exceptions, not prints
  if (const char* dir = std::getenv("MT_FUZZ_WRITE_SEEDS")) {
    write_seeds(dir);
    std::remove(temp_path().c_str());
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Decoder dec(data, size);
  Spec s;
  code(dec, s);
  try {
    run(s);
  } catch (const std::exception& e) {
    bug(std::string("exception other than mt::UsageError escaped: ") + e.what());
  } catch (...) {
    bug("a non-std exception escaped");
  }
  std::remove(temp_path().c_str());
  return 0;
}
