// HDF5 wrappers: error-stack capture, version shims (file locking, VL reclaim, format probe) and
// the File methods. Every entry point takes the process-wide library lock and turns off HDF5's
// automatic error printing for the calling thread, so errors surface only as exceptions.
#include "core/hdf5.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>

namespace mt::h5 {

using ::mt::detail::concat;

namespace {

std::recursive_mutex& library_mutex() {
  static std::recursive_mutex m;
  return m;
}

// Held by every call into HDF5 (the library may be built without thread safety).
class Guard {
 public:
  Guard() : lock_(library_mutex()) {
    thread_local bool quiet = H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr) >= 0;
    (void)quiet;
  }

 private:
  std::lock_guard<std::recursive_mutex> lock_;
};

void set_file_locking(hid_t fapl, bool use) {
#if H5_VERSION_GE(1, 12, 1) || (H5_VERS_MAJOR == 1 && H5_VERS_MINOR == 10 && H5_VERS_RELEASE >= 7)
  MT_H5_CHECK(H5Pset_file_locking(fapl, use, true));
#else
  // Older libraries only honour the environment variable HDF5_USE_FILE_LOCKING=FALSE.
  (void)fapl;
  (void)use;
#endif
}

htri_t is_hdf5(const std::string& path) {
#if H5_VERSION_GE(1, 12, 0)
  return H5Fis_accessible(path.c_str(), H5P_DEFAULT);
#else
  return H5Fis_hdf5(path.c_str());
#endif
}

herr_t reclaim_vlen(hid_t type, hid_t space, void* buf) {
#if H5_VERSION_GE(1, 12, 0)
  return H5Treclaim(type, space, H5P_DEFAULT, buf);
#else
  return H5Dvlen_reclaim(type, space, H5P_DEFAULT, buf);
#endif
}

hid_t mem_type(Element e) {
  switch (e) {
    case Element::kF32:
      return H5T_NATIVE_FLOAT;
    case Element::kF64:
      return H5T_NATIVE_DOUBLE;
    case Element::kI32:
      return H5T_NATIVE_INT32;
    case Element::kI64:
      return H5T_NATIVE_INT64;
    case Element::kU8:
      return H5T_NATIVE_UINT8;
    case Element::kU64:
      return H5T_NATIVE_UINT64;
  }
  throw Error(ExitCode::kRuntime, "unknown HDF5 element type");
}

hid_t file_type(Element e) {
  switch (e) {
    case Element::kF32:
      return H5T_IEEE_F32LE;
    case Element::kF64:
      return H5T_IEEE_F64LE;
    case Element::kI32:
      return H5T_STD_I32LE;
    case Element::kI64:
      return H5T_STD_I64LE;
    case Element::kU8:
      return H5T_STD_U8LE;
    case Element::kU64:
      return H5T_STD_U64LE;
  }
  throw Error(ExitCode::kRuntime, "unknown HDF5 element type");
}

const char* element_name(Element e) {
  switch (e) {
    case Element::kF32:
      return "float32";
    case Element::kF64:
      return "float64";
    case Element::kI32:
      return "int32";
    case Element::kI64:
      return "int64";
    case Element::kU8:
      return "uint8";
    case Element::kU64:
      return "uint64";
  }
  return "?";
}

// "float32", "uint8", "string", ... for a type found in a file.
std::string describe_type(hid_t type) {
  const H5T_class_t cls = H5Tget_class(type);
  const size_t bits = 8 * H5Tget_size(type);
  switch (cls) {
    case H5T_INTEGER:
      return concat(H5Tget_sign(type) == H5T_SGN_NONE ? "uint" : "int", bits);
    case H5T_FLOAT:
      return concat("float", bits);
    case H5T_STRING:
      return "string";
    case H5T_COMPOUND:
      return "compound";
    default:
      return concat("type class ", static_cast<int>(cls));
  }
}

bool type_matches(hid_t type, Element e) {
  const H5T_class_t cls = H5Tget_class(type);
  const size_t size = H5Tget_size(type);
  switch (e) {
    case Element::kF32:
      return cls == H5T_FLOAT && size == 4;
    case Element::kF64:
      return cls == H5T_FLOAT && size == 8;
    default:
      break;
  }
  if (cls != H5T_INTEGER) return false;
  const bool is_signed = H5Tget_sign(type) != H5T_SGN_NONE;
  switch (e) {
    case Element::kI32:
      return is_signed && size == 4;
    case Element::kI64:
      return is_signed && size == 8;
    case Element::kU8:
      return !is_signed && size == 1;
    case Element::kU64:
      return !is_signed && size == 8;
    default:
      return false;
  }
}

// "/a/b" for "a/b", "/a/b/" or "/a/b"; "/" for "" and "/".
std::string normalize(const std::string& path) {
  std::string out = "/";
  size_t i = 0;
  while (i < path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    if (j > i) {
      if (out.size() > 1) out += '/';
      out.append(path, i, j - i);
    }
    i = j + 1;
  }
  return out;
}

std::string dims_string(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? "," : "") + std::to_string(dims[i]);
  return s + "]";
}

Type vlen_string_type() {
  Type t(MT_H5_CHECK(H5Tcopy(H5T_C_S1)));
  MT_H5_CHECK(H5Tset_size(t.get(), H5T_VARIABLE));
  MT_H5_CHECK(H5Tset_cset(t.get(), H5T_CSET_UTF8));
  return t;
}

PropList intermediate_groups() {
  PropList lcpl(MT_H5_CHECK(H5Pcreate(H5P_LINK_CREATE)));
  MT_H5_CHECK(H5Pset_create_intermediate_group(lcpl.get(), 1));
  return lcpl;
}

// Creation properties of a file, group or dataset without modification times, so that writing
// the same content twice gives byte-identical files (a re-pack reproduces its store exactly).
PropList untimed(hid_t property_class) {
  PropList plist(MT_H5_CHECK(H5Pcreate(property_class)));
  MT_H5_CHECK(H5Pset_obj_track_times(plist.get(), false));
  return plist;
}

// Creates the missing groups above `p` ("/a/b/c" needs "/a" and "/a/b"), untimed.
void make_parents(hid_t file, const std::string& p) {
  for (size_t slash = p.find('/', 1); slash != std::string::npos; slash = p.find('/', slash + 1)) {
    const std::string parent = p.substr(0, slash);
    if (MT_H5_CHECK(H5Lexists(file, parent.c_str(), H5P_DEFAULT)) > 0) continue;
    PropList gcpl = untimed(H5P_GROUP_CREATE);
    Group grp(MT_H5_CHECK(H5Gcreate2(file, parent.c_str(), H5P_DEFAULT, gcpl.get(), H5P_DEFAULT)));
  }
}

// Chunks for a checksummed dataset without a chosen chunk shape: the whole dataset, with leading
// dimensions halved until a chunk holds at most 16 MiB (HDF5 caps a chunk at 4 GiB).
std::vector<hsize_t> auto_chunk(const std::vector<hsize_t>& dims, size_t element_bytes) {
  constexpr hsize_t kMaxChunkBytes = hsize_t{16} << 20;
  std::vector<hsize_t> chunk = dims;
  auto bytes = [&] {
    hsize_t b = element_bytes;
    for (hsize_t d : chunk) b *= d;
    return b;
  };
  for (size_t i = 0; i < chunk.size() && bytes() > kMaxChunkBytes; ++i)
    while (chunk[i] > 1 && bytes() > kMaxChunkBytes) chunk[i] = (chunk[i] + 1) / 2;
  return chunk;
}

// Chunked layout and Fletcher-32 on a dataset creation list, unless the data is empty (a chunk
// needs non-zero dimensions) or scalar.
void add_checksum(hid_t dcpl, const std::vector<hsize_t>& dims, size_t element_bytes) {
  if (dims.empty()) return;
  for (hsize_t d : dims)
    if (d == 0) return;
  const std::vector<hsize_t> chunk = auto_chunk(dims, element_bytes);
  MT_H5_CHECK(H5Pset_chunk(dcpl, static_cast<int>(chunk.size()), chunk.data()));
  MT_H5_CHECK(H5Pset_fletcher32(dcpl));
}

// H5Dread of an open dataset failed: the bytes on disk are damaged. A Fletcher-32 mismatch
// throws ChecksumError, anything else (a broken chunk index, a failing inflate) UsageError.
// `where` is "<file>: dataset <path>", `rows` "" or " in rows [a, b)".
[[noreturn]] void read_failed(const std::string& where, const std::string& rows) {
  const std::string stack = detail::error_stack();
  if (stack.find("Fletcher32") != std::string::npos)
    throw ChecksumError(
        concat(where, " fails its Fletcher-32 checksum", rows, ": the file is damaged"));
  throw UsageError(concat(where, rows, " cannot be read: the file is damaged (", stack, ")"));
}

// Reads every string of a dataset or attribute, fixed- or variable-length. `where` names a
// dataset for read_failed.
std::vector<std::string> read_string_values(hid_t obj, bool is_attr, const std::string& where) {
  Type ftype(MT_H5_CHECK(is_attr ? H5Aget_type(obj) : H5Dget_type(obj)));
  Dataspace space(MT_H5_CHECK(is_attr ? H5Aget_space(obj) : H5Dget_space(obj)));
  const auto n = static_cast<size_t>(MT_H5_CHECK(H5Sget_simple_extent_npoints(space.get())));
  auto read = [&](hid_t mtype, void* buf) {
    if (is_attr) return H5Aread(obj, mtype, buf);
    const herr_t r = H5Dread(obj, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
    if (r < 0) read_failed(where, "");
    return r;
  };
  std::vector<std::string> out;
  out.reserve(n);
  if (n == 0) return out;
  if (MT_H5_CHECK(H5Tis_variable_str(ftype.get())) > 0) {
    Type mtype = vlen_string_type();
    // HDF5 converts no character sets: read ASCII strings (other writers') as ASCII.
    MT_H5_CHECK(H5Tset_cset(mtype.get(), H5Tget_cset(ftype.get())));
    std::vector<char*> ptrs(n, nullptr);
    MT_H5_CHECK(read(mtype.get(), ptrs.data()));
    for (char* p : ptrs) out.emplace_back(p ? p : "");
    MT_H5_CHECK(reclaim_vlen(mtype.get(), space.get(), ptrs.data()));
  } else {
    const size_t size = H5Tget_size(ftype.get());
    Type mtype(MT_H5_CHECK(H5Tcopy(ftype.get())));
    std::vector<char> buf(n * size);
    MT_H5_CHECK(read(mtype.get(), buf.data()));
    for (size_t i = 0; i < n; ++i) {
      const char* p = buf.data() + i * size;
      out.emplace_back(p, strnlen(p, size));
    }
  }
  return out;
}

herr_t collect_error(unsigned /*n*/, const H5E_error2_t* err, void* data) {
  auto& msg = *static_cast<std::string*>(data);
  if (!msg.empty()) msg += "; ";
  std::string entry = concat(err->func_name, "(): ", err->desc);
  std::replace(entry.begin(), entry.end(), '\n', ' ');
  msg += entry;
  return 0;
}

herr_t collect_name(hid_t /*group*/, const char* name, const H5L_info_t* /*info*/, void* data) {
  static_cast<std::vector<std::string>*>(data)->emplace_back(name);
  return 0;
}

}  // namespace

namespace detail {

std::string error_stack() {
  std::string msg;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, collect_error, &msg);
  H5Eclear2(H5E_DEFAULT);
  return msg.empty() ? "no HDF5 error message" : msg;
}

void fail(const char* expr, const char* file, int line) {
  throw Error(ExitCode::kRuntime,
              concat(file, ":", line, ": HDF5 call `", expr, "` failed: ", error_stack()));
}

}  // namespace detail

template <herr_t (*Close)(hid_t)>
void Handle<Close>::close() {
  Guard g;
  if (valid()) MT_H5_CHECK(Close(std::exchange(id_, H5I_INVALID_HID)));
}

template <herr_t (*Close)(hid_t)>
void Handle<Close>::release() noexcept {
  if (!valid()) return;
  Guard g;
  if (Close(std::exchange(id_, H5I_INVALID_HID)) < 0)
    std::fprintf(stderr, "warning: closing an HDF5 object failed: %s\n",
                 detail::error_stack().c_str());
}

template class Handle<H5Fclose>;
template class Handle<H5Gclose>;
template class Handle<H5Dclose>;
template class Handle<H5Sclose>;
template class Handle<H5Aclose>;
template class Handle<H5Tclose>;
template class Handle<H5Pclose>;
template class Handle<H5Oclose>;

File::~File() = default;

File File::create(const std::string& path) {
  Guard g;
  PropList fapl(MT_H5_CHECK(H5Pcreate(H5P_FILE_ACCESS)));
  set_file_locking(fapl.get(), true);
  // The 1.10 file format checksums its metadata too (superblock, object headers holding the
  // attributes, B-trees, heaps): damage there fails the read instead of changing a value.
  MT_H5_CHECK(H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V110, H5F_LIBVER_V110));
  PropList fcpl = untimed(H5P_FILE_CREATE);
  const hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, fcpl.get(), fapl.get());
  if (id < 0)
    throw UsageError(concat(path, ": cannot create HDF5 file (", detail::error_stack(),
                            "); check that its directory exists and is writable"));
  return File(FileId(id), path);
}

File File::open_read(const std::string& path) { return open(path, false); }

File File::open_write(const std::string& path) { return open(path, true); }

File File::open(const std::string& path, bool writable) {
  Guard g;
  struct stat st {};
  if (stat(path.c_str(), &st) != 0)
    throw UsageError(concat(path, ": cannot open: ", std::strerror(errno)));
  if (S_ISDIR(st.st_mode)) throw UsageError(concat(path, ": cannot open: is a directory"));
  if (access(path.c_str(), writable ? R_OK | W_OK : R_OK) != 0)
    throw UsageError(concat(path, ": cannot open: ", std::strerror(errno)));
  if (is_hdf5(path) <= 0) {
    H5Eclear2(H5E_DEFAULT);
    throw UsageError(concat(path, ": cannot open: not an HDF5 file"));
  }
  PropList fapl(MT_H5_CHECK(H5Pcreate(H5P_FILE_ACCESS)));
  set_file_locking(fapl.get(), writable);
  const hid_t id = H5Fopen(path.c_str(), writable ? H5F_ACC_RDWR : H5F_ACC_RDONLY, fapl.get());
  if (id < 0)
    throw UsageError(concat(path, ": cannot open: damaged or truncated HDF5 file (",
                            detail::error_stack(), ")"));
  return File(FileId(id), path);
}

hid_t File::id() const {
  MT_CHECK(id_.valid(), "HDF5 file ", path_, " is not open");
  return id_.get();
}

void File::flush() {
  Guard g;
  MT_H5_CHECK(H5Fflush(id(), H5F_SCOPE_LOCAL));
}

void File::close() {
  Guard g;
  id_.close();
}

bool File::exists(const std::string& path) const {
  Guard g;
  const std::string p = normalize(path);
  if (p == "/") return true;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = p.find('/', pos + 1);
    const std::string prefix = p.substr(0, pos);
    const htri_t r = H5Lexists(id(), prefix.c_str(), H5P_DEFAULT);
    if (r <= 0) {
      if (r < 0) H5Eclear2(H5E_DEFAULT);
      return false;
    }
  }
  return true;
}

std::vector<std::string> File::list(const std::string& group) const {
  Guard g;
  const std::string p = normalize(group);
  if (!exists(p)) throw UsageError(concat(path_, ": missing group ", p));
  Object obj = open_object(p);
  if (H5Iget_type(obj.get()) != H5I_GROUP)
    throw UsageError(concat(path_, ": ", p, " is not a group"));
  std::vector<std::string> names;
  if (H5Literate(obj.get(), H5_INDEX_NAME, H5_ITER_INC, nullptr, collect_name, &names) < 0)
    throw damaged_metadata(p, detail::error_stack());
  std::sort(names.begin(), names.end());
  return names;
}

void File::create_group(const std::string& path) {
  Guard g;
  const std::string p = normalize(path);
  if (exists(p)) return;
  make_parents(id(), p);
  PropList lcpl = intermediate_groups();
  PropList gcpl = untimed(H5P_GROUP_CREATE);
  Group grp(MT_H5_CHECK(H5Gcreate2(id(), p.c_str(), lcpl.get(), gcpl.get(), H5P_DEFAULT)));
}

void File::prepare_link(const std::string& p) {
  if (exists(p)) MT_H5_CHECK(H5Ldelete(id(), p.c_str(), H5P_DEFAULT));
  make_parents(id(), p);
}

void File::write_raw(const std::string& path, const std::vector<int64_t>& shape, Element e,
                     const void* data, const WriteOptions& opt) {
  Guard g;
  const std::string p = normalize(path);
  int64_t n = 1;
  for (int64_t d : shape) {
    MT_CHECK(d >= 0, "negative dimension in shape ", dims_string(shape), " for ", p);
    n *= d;
  }
  MT_CHECK(n == 0 || data != nullptr, "no data for ", p);
  std::vector<hsize_t> dims(shape.begin(), shape.end());
  Dataspace space(MT_H5_CHECK(
      shape.empty() ? H5Screate(H5S_SCALAR)
                    : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr)));
  PropList dcpl = untimed(H5P_DATASET_CREATE);
  if (!opt.chunk.empty()) {
    MT_CHECK(opt.chunk.size() == shape.size(), "chunk ", dims_string(opt.chunk),
             " does not match shape ", dims_string(shape), " of ", p);
    std::vector<hsize_t> chunk(opt.chunk.begin(), opt.chunk.end());
    MT_H5_CHECK(H5Pset_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data()));
  }
  if (opt.deflate > 0) {
    MT_CHECK(!opt.chunk.empty(), "compression of ", p, " needs a chunk shape");
    MT_H5_CHECK(H5Pset_deflate(dcpl.get(), static_cast<unsigned>(opt.deflate)));
  }
  // After deflate, so that a read verifies the stored bytes before inflating them.
  if (opt.checksum && n > 0) {
    if (opt.chunk.empty())
      add_checksum(dcpl.get(), dims, H5Tget_size(file_type(e)));
    else
      MT_H5_CHECK(H5Pset_fletcher32(dcpl.get()));
  }
  prepare_link(p);
  PropList lcpl = intermediate_groups();
  Dataset ds(MT_H5_CHECK(
      H5Dcreate2(id(), p.c_str(), file_type(e), space.get(), lcpl.get(), dcpl.get(), H5P_DEFAULT)));
  if (n > 0) MT_H5_CHECK(H5Dwrite(ds.get(), mem_type(e), H5S_ALL, H5S_ALL, H5P_DEFAULT, data));
}

void File::write_string(const std::string& path, const std::string& s) { write_strings(path, {s}); }

void File::write_strings(const std::string& path, const std::vector<std::string>& s) {
  Guard g;
  const std::string p = normalize(path);
  size_t longest = 1;  // a string type holds at least one byte
  for (const auto& str : s) longest = std::max(longest, str.size());
  Type type(MT_H5_CHECK(H5Tcopy(H5T_C_S1)));
  MT_H5_CHECK(H5Tset_size(type.get(), longest));
  MT_H5_CHECK(H5Tset_strpad(type.get(), H5T_STR_NULLPAD));
  MT_H5_CHECK(H5Tset_cset(type.get(), H5T_CSET_UTF8));
  const std::vector<hsize_t> dims = {s.size()};
  Dataspace space(MT_H5_CHECK(H5Screate_simple(1, dims.data(), nullptr)));
  PropList dcpl = untimed(H5P_DATASET_CREATE);
  add_checksum(dcpl.get(), dims, longest);
  prepare_link(p);
  PropList lcpl = intermediate_groups();
  Dataset ds(MT_H5_CHECK(
      H5Dcreate2(id(), p.c_str(), type.get(), space.get(), lcpl.get(), dcpl.get(), H5P_DEFAULT)));
  std::vector<char> buf(s.size() * longest, '\0');
  for (size_t i = 0; i < s.size(); ++i) std::copy(s[i].begin(), s[i].end(), &buf[i * longest]);
  if (!s.empty())
    MT_H5_CHECK(H5Dwrite(ds.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()));
}

Dataset File::open_dataset(const std::string& path) const {
  const std::string p = normalize(path);
  if (!exists(p)) throw UsageError(concat(path_, ": missing dataset ", p));
  Object obj = open_object(p);
  if (H5Iget_type(obj.get()) != H5I_DATASET)
    throw UsageError(concat(path_, ": ", p, " is not a dataset"));
  // The identifier of a dataset that H5Oopen gives is a dataset identifier: a second reference
  // to it, closed by H5Dclose, outlives `obj`.
  MT_H5_CHECK(H5Iinc_ref(obj.get()));
  return Dataset(obj.get());
}

UsageError File::damaged_metadata(const std::string& object, const std::string& stack) const {
  return UsageError(concat(path_, ": the metadata of ", object,
                           " cannot be read: the file is damaged (HDF5: ", stack, ")"));
}

Dataset File::open_dataset(const std::string& path, Element e) const {
  Dataset ds = open_dataset(path);
  Type type(MT_H5_CHECK(H5Dget_type(ds.get())));
  if (!type_matches(type.get(), e))
    throw UsageError(concat(path_, ": dataset ", normalize(path), " holds ",
                            describe_type(type.get()), ", expected ", element_name(e)));
  return ds;
}

std::vector<int64_t> File::shape(const std::string& path) const {
  Guard g;
  Dataset ds = open_dataset(path);
  Dataspace space(MT_H5_CHECK(H5Dget_space(ds.get())));
  const int rank = MT_H5_CHECK(H5Sget_simple_extent_ndims(space.get()));
  std::vector<hsize_t> dims(rank);
  MT_H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr));
  return std::vector<int64_t>(dims.begin(), dims.end());
}

void File::read_raw(const std::string& path, Element e, std::vector<int64_t>* shape,
                    const std::function<void*(size_t)>& alloc) const {
  Guard g;
  Dataset ds = open_dataset(path, e);
  Dataspace space(MT_H5_CHECK(H5Dget_space(ds.get())));
  if (shape) *shape = this->shape(path);
  const auto n = static_cast<size_t>(MT_H5_CHECK(H5Sget_simple_extent_npoints(space.get())));
  void* buf = alloc(n);
  if (n > 0 && H5Dread(ds.get(), mem_type(e), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)
    read_failed(concat(path_, ": dataset ", normalize(path)), "");
}

bool File::has_checksum(const std::string& path) const {
  Guard g;
  Dataset ds = open_dataset(path);
  PropList dcpl(MT_H5_CHECK(H5Dget_create_plist(ds.get())));
  unsigned flags = 0, config = 0;
  size_t n_values = 0;
  const herr_t found = H5Pget_filter_by_id2(dcpl.get(), H5Z_FILTER_FLETCHER32, &flags, &n_values,
                                            nullptr, 0, nullptr, &config);
  if (found < 0) H5Eclear2(H5E_DEFAULT);  // "filter not in pipeline"
  return found >= 0;
}

RowReader File::row_reader_raw(const std::string& path, Element e) const {
  Guard g;
  Dataset ds = open_dataset(path, e);
  std::vector<int64_t> dims = shape(path);
  if (dims.empty())
    throw UsageError(concat(path_, ": dataset ", normalize(path), " is a scalar, expected rows"));
  return RowReader(std::move(ds), std::move(dims), e, concat(path_, ": dataset ", normalize(path)));
}

void RowReader::read(int64_t first, int64_t count, void* out) const {
  Guard g;
  if (first < 0 || count < 0 || first + count > dims_[0])
    throw UsageError(concat(where_, ": rows [", first, ", ", first + count,
                            ") are outside its shape ", dims_string(dims_)));
  if (count == 0) return;
  std::vector<hsize_t> start(dims_.size(), 0), extent(dims_.begin(), dims_.end());
  start[0] = static_cast<hsize_t>(first);
  extent[0] = static_cast<hsize_t>(count);
  Dataspace fspace(MT_H5_CHECK(H5Dget_space(ds_.get())));
  MT_H5_CHECK(H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start.data(), nullptr,
                                  extent.data(), nullptr));
  Dataspace mspace(
      MT_H5_CHECK(H5Screate_simple(static_cast<int>(extent.size()), extent.data(), nullptr)));
  if (H5Dread(ds_.get(), mem_type(element_), mspace.get(), fspace.get(), H5P_DEFAULT, out) < 0)
    read_failed(where_, concat(" in rows [", first, ", ", first + count, ")"));
}

uint64_t File::elements(const std::string& path) const {
  uint64_t n = 1;
  for (int64_t d : shape(path)) {
    const auto u = static_cast<uint64_t>(d);
    n = u != 0 && n > UINT64_MAX / u ? UINT64_MAX : n * u;
  }
  return n;
}

void File::require_single(const std::string& path, uint64_t n) const {
  if (n != 1)
    throw UsageError(
        concat(path_, ": dataset ", normalize(path), " holds ", n, " values, expected one"));
}

std::vector<std::string> File::read_strings(const std::string& path) const {
  Guard g;
  Dataset ds = open_dataset(path);
  Type type(MT_H5_CHECK(H5Dget_type(ds.get())));
  if (H5Tget_class(type.get()) != H5T_STRING)
    throw UsageError(concat(path_, ": dataset ", normalize(path), " holds ",
                            describe_type(type.get()), ", expected strings"));
  return read_string_values(ds.get(), false, concat(path_, ": dataset ", normalize(path)));
}

std::string File::read_string(const std::string& path) const {
  Guard g;
  require_single(path, elements(path));
  return read_strings(path)[0];
}

// One H5Oopen, which loads the object header once, then its type from the identifier: trying
// H5Dopen2 and then H5Gopen2 to tell "not a dataset" from "damaged" loaded a damaged header twice,
// and HDF5 1.10 leaks the object header (H5O_t, ~0.4 kB) of each failed load (HDFGroup/hdf5#4586).
Object File::open_object(const std::string& obj_path) const {
  const std::string p = normalize(obj_path);
  if (!exists(p)) throw UsageError(concat(path_, ": missing object ", p));
  const hid_t obj = H5Oopen(id(), p.c_str(), H5P_DEFAULT);
  if (obj < 0) throw damaged_metadata(p, detail::error_stack());
  return Object(obj);
}

void File::replace_attr(const std::string& obj_path, const std::string& name, hid_t ftype,
                        hid_t space, hid_t mtype, const void* data) {
  Guard g;
  Object obj = open_object(obj_path);
  if (MT_H5_CHECK(H5Aexists(obj.get(), name.c_str())) > 0)
    MT_H5_CHECK(H5Adelete(obj.get(), name.c_str()));
  Attribute attr(
      MT_H5_CHECK(H5Acreate2(obj.get(), name.c_str(), ftype, space, H5P_DEFAULT, H5P_DEFAULT)));
  if (data) MT_H5_CHECK(H5Awrite(attr.get(), mtype, data));
}

void File::set_attr(const std::string& obj_path, const std::string& name, int64_t value) {
  Guard g;
  Dataspace space(MT_H5_CHECK(H5Screate(H5S_SCALAR)));
  replace_attr(obj_path, name, H5T_STD_I64LE, space.get(), H5T_NATIVE_INT64, &value);
}

void File::set_attr(const std::string& obj_path, const std::string& name, double value) {
  Guard g;
  Dataspace space(MT_H5_CHECK(H5Screate(H5S_SCALAR)));
  replace_attr(obj_path, name, H5T_IEEE_F64LE, space.get(), H5T_NATIVE_DOUBLE, &value);
}

void File::set_attr(const std::string& obj_path, const std::string& name,
                    const std::string& value) {
  Guard g;
  Dataspace space(MT_H5_CHECK(H5Screate(H5S_SCALAR)));
  // Fixed length, inside the (checksummed) object header: a variable-length string would live
  // in the global heap, which has no checksum, and a damaged heap can make HDF5 loop forever.
  Type type(MT_H5_CHECK(H5Tcopy(H5T_C_S1)));
  MT_H5_CHECK(H5Tset_size(type.get(), std::max<size_t>(1, value.size())));
  MT_H5_CHECK(H5Tset_strpad(type.get(), H5T_STR_NULLPAD));
  MT_H5_CHECK(H5Tset_cset(type.get(), H5T_CSET_UTF8));
  const std::string padded = value.empty() ? std::string(1, '\0') : value;
  replace_attr(obj_path, name, type.get(), space.get(), type.get(), padded.data());
}

void File::set_attr(const std::string& obj_path, const std::string& name,
                    const std::vector<int64_t>& value) {
  Guard g;
  const hsize_t n = value.size();
  Dataspace space(MT_H5_CHECK(H5Screate_simple(1, &n, nullptr)));
  replace_attr(obj_path, name, H5T_STD_I64LE, space.get(), H5T_NATIVE_INT64,
               value.empty() ? nullptr : value.data());
}

bool File::has_attr(const std::string& obj_path, const std::string& name) const {
  Guard g;
  const std::string p = normalize(obj_path);
  if (!exists(p)) return false;
  const htri_t r = H5Aexists_by_name(id(), p.c_str(), name.c_str(), H5P_DEFAULT);
  if (r < 0) throw damaged_metadata(p, detail::error_stack());
  return r > 0;
}

Attribute File::open_attr(const std::string& obj_path, const std::string& name) const {
  if (!has_attr(obj_path, name))
    throw UsageError(concat(path_, ": missing attribute ", name, " on ", normalize(obj_path)));
  const hid_t attr =
      H5Aopen_by_name(id(), normalize(obj_path).c_str(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT);
  if (attr < 0) throw damaged_metadata(normalize(obj_path), detail::error_stack());
  return Attribute(attr);
}

namespace {
// Reads a numeric attribute converted to mem (HDF5 converts between integer and float types).
template <typename T>
std::vector<T> read_numeric_attr(const std::string& file, const std::string& obj,
                                 const std::string& name, hid_t attr, hid_t mem, bool allow_float) {
  Type type(MT_H5_CHECK(H5Aget_type(attr)));
  const H5T_class_t cls = H5Tget_class(type.get());
  if (!(cls == H5T_INTEGER || (allow_float && cls == H5T_FLOAT)))
    throw UsageError(concat(file, ": attribute ", name, " on ", obj, " holds ",
                            describe_type(type.get()), ", expected a ",
                            allow_float ? "number" : "integer"));
  Dataspace space(MT_H5_CHECK(H5Aget_space(attr)));
  std::vector<T> v(static_cast<size_t>(MT_H5_CHECK(H5Sget_simple_extent_npoints(space.get()))));
  if (!v.empty()) MT_H5_CHECK(H5Aread(attr, mem, v.data()));
  return v;
}
}  // namespace

int64_t File::get_attr_int(const std::string& obj_path, const std::string& name) const {
  Guard g;
  Attribute attr = open_attr(obj_path, name);
  auto v = read_numeric_attr<int64_t>(path_, normalize(obj_path), name, attr.get(),
                                      H5T_NATIVE_INT64, false);
  if (v.size() != 1)
    throw UsageError(concat(path_, ": attribute ", name, " on ", normalize(obj_path), " holds ",
                            v.size(), " values, expected one"));
  return v[0];
}

double File::get_attr_double(const std::string& obj_path, const std::string& name) const {
  Guard g;
  Attribute attr = open_attr(obj_path, name);
  auto v = read_numeric_attr<double>(path_, normalize(obj_path), name, attr.get(),
                                     H5T_NATIVE_DOUBLE, true);
  if (v.size() != 1)
    throw UsageError(concat(path_, ": attribute ", name, " on ", normalize(obj_path), " holds ",
                            v.size(), " values, expected one"));
  return v[0];
}

std::vector<int64_t> File::get_attr_ints(const std::string& obj_path,
                                         const std::string& name) const {
  Guard g;
  Attribute attr = open_attr(obj_path, name);
  return read_numeric_attr<int64_t>(path_, normalize(obj_path), name, attr.get(), H5T_NATIVE_INT64,
                                    false);
}

std::string File::get_attr_string(const std::string& obj_path, const std::string& name) const {
  Guard g;
  Attribute attr = open_attr(obj_path, name);
  Type type(MT_H5_CHECK(H5Aget_type(attr.get())));
  std::vector<std::string> v;
  if (H5Tget_class(type.get()) == H5T_STRING) v = read_string_values(attr.get(), true, "");
  if (v.size() != 1)
    throw UsageError(concat(path_, ": attribute ", name, " on ", normalize(obj_path),
                            " is not a single string"));
  return v[0];
}

}  // namespace mt::h5
