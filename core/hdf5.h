// Thin RAII layer over the HDF5 C API: move-only handles that close themselves, one check macro
// that reports file:line, the failing call and HDF5's own error stack, and a File class that
// reads and writes whole datasets, strings and attributes by path. Used by checkpoints and data.
//
// Integrity: every non-empty dataset this layer writes is chunked and carries HDF5's Fletcher-32
// filter (one checksum per chunk), scalars and strings included; every read verifies the
// checksums of the chunks it touches (libhdf5 does it inside H5Dread) and a mismatch throws
// ChecksumError naming the file and the dataset. Datasets without the filter (files of older
// builds) are read unverified: checksums are optional when absent, so old files keep working.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/check.h"

namespace mt::h5 {

namespace detail {
// Throws mt::Error (runtime) with the location, the expression and HDF5's error stack.
[[noreturn]] void fail(const char* expr, const char* file, int line);
// HDF5's current error stack as one line, innermost message last.
std::string error_stack();
}  // namespace detail

}  // namespace mt::h5

// Evaluates an HDF5 call returning herr_t/hid_t/htri_t; a negative result throws. Yields the value.
#define MT_H5_CHECK(expr)                                                  \
  ([&]() {                                                                 \
    auto mt_h5_ret_ = (expr);                                              \
    if (mt_h5_ret_ < 0) ::mt::h5::detail::fail(#expr, __FILE__, __LINE__); \
    return mt_h5_ret_;                                                     \
  }())

namespace mt::h5 {

// Owns one hid_t and releases it with Close. The destructor never throws: a failed close is
// reported on stderr.
template <herr_t (*Close)(hid_t)>
class Handle {
 public:
  Handle() = default;
  explicit Handle(hid_t id) : id_(id) {}
  Handle(Handle&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)) {}
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      release();
      id_ = std::exchange(o.id_, H5I_INVALID_HID);
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() { release(); }

  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  // Closes now, throwing on failure (unlike the destructor).
  void close();

 private:
  void release() noexcept;
  hid_t id_ = H5I_INVALID_HID;
};

using FileId = Handle<H5Fclose>;
using Group = Handle<H5Gclose>;
using Dataset = Handle<H5Dclose>;
using Dataspace = Handle<H5Sclose>;
using Attribute = Handle<H5Aclose>;
using Type = Handle<H5Tclose>;
using PropList = Handle<H5Pclose>;
using Object = Handle<H5Oclose>;

// Element types of numeric datasets.
enum class Element { kF32, kF64, kI32, kI64, kU8, kU64 };

template <typename T>
constexpr Element element_of() {
  if constexpr (std::is_same_v<T, float>)
    return Element::kF32;
  else if constexpr (std::is_same_v<T, double>)
    return Element::kF64;
  else if constexpr (std::is_same_v<T, int32_t>)
    return Element::kI32;
  else if constexpr (std::is_same_v<T, int64_t>)
    return Element::kI64;
  else if constexpr (std::is_same_v<T, uint8_t>)
    return Element::kU8;
  else if constexpr (std::is_same_v<T, uint64_t>)
    return Element::kU64;
  else
    static_assert(sizeof(T) == 0, "h5: unsupported element type");
}

struct WriteOptions {
  // Chunk shape (same rank as the dataset). Empty: contiguous without a checksum, or, with
  // `checksum`, chunks the layer picks (the whole dataset, split along leading dimensions into
  // blocks of at most 16 MiB).
  std::vector<int64_t> chunk;
  int deflate = 0;       // gzip level 1..9 (needs chunk); 0 = uncompressed
  bool checksum = true;  // Fletcher-32 per chunk (after deflate); not for scalars or empty data
};

// A dataset whose stored Fletcher-32 checksum does not match its bytes: the file is damaged.
// The message reads "<file>: dataset <path> fails its Fletcher-32 checksum[ in rows [a, b)]:
// the file is damaged"; callers may rethrow it with advice appended.
class ChecksumError : public UsageError {
 public:
  explicit ChecksumError(const std::string& message) : UsageError(message) {}
};

// A dataset held open for repeated reads of rows along its first dimension (one image of an
// episode store at a time): no reopening, and HDF5's chunk cache stays warm between reads.
// Thread-safe like File (calls are serialised by the library lock).
class RowReader {
 public:
  RowReader() = default;
  // Reads rows [first, first + count) into out; rows outside the dataset throw UsageError, a
  // chunk failing its checksum ChecksumError.
  void read(int64_t first, int64_t count, void* out) const;
  const std::vector<int64_t>& shape() const { return dims_; }

 private:
  friend class File;
  RowReader(Dataset ds, std::vector<int64_t> dims, Element e, std::string where)
      : ds_(std::move(ds)), dims_(std::move(dims)), element_(e), where_(std::move(where)) {}
  Dataset ds_;
  std::vector<int64_t> dims_;
  Element element_ = Element::kU8;
  std::string where_;  // "<file>: <dataset>" for messages
};

// An open HDF5 file. Paths name objects from the root ("/params/w" or "params/w"). Problems a
// user can cause (missing file or dataset, wrong type or shape) throw UsageError whose message
// starts with "<file path>: "; failures of the library itself throw Error (runtime).
// Calls are serialised by one process-wide lock, so threads may share the library.
class File {
 public:
  File() = default;
  File(File&&) noexcept = default;
  File& operator=(File&&) noexcept = default;
  ~File();

  // Creates (truncating) a file for writing.
  static File create(const std::string& path);
  // Opens read-only, without file locking, so that many processes can read one file at once.
  static File open_read(const std::string& path);
  // Opens an existing file for reading and writing.
  static File open_write(const std::string& path);

  const std::string& path() const { return path_; }

  // Writes a dataset of the given shape ({} = scalar, which cannot carry a checksum) in the
  // file's little-endian form of T, creating missing parent groups and replacing an existing
  // object of that name.
  template <typename T>
  void write(const std::string& path, const std::vector<int64_t>& shape, const T* data,
             const WriteOptions& opt = {}) {
    write_raw(path, shape, element_of<T>(), data, opt);
  }
  // One value as a checksummed dataset of shape [1] (read_scalar reads it, and true scalars).
  template <typename T>
  void write_scalar(const std::string& path, T value) {
    write_raw(path, {1}, element_of<T>(), &value, {});
  }
  // UTF-8 text as fixed-length strings (so that the checksum covers the characters, which a
  // variable-length string keeps outside the dataset): write_string gives shape [1],
  // write_strings [n]. The readers accept fixed- and variable-length strings.
  void write_string(const std::string& path, const std::string& s);
  void write_strings(const std::string& path, const std::vector<std::string>& s);
  void create_group(const std::string& path);

  // Every read verifies the Fletcher-32 checksums of the chunks it reads, when the dataset has
  // them, and throws ChecksumError on a mismatch; any other failure to read the bytes of a
  // dataset that opened throws UsageError (a damaged file).
  // Reads a whole dataset; its element type must match T exactly (class, size and sign).
  template <typename T>
  std::vector<T> read(const std::string& path, std::vector<int64_t>* shape = nullptr) const {
    std::vector<T> out;
    read_raw(path, element_of<T>(), shape, [&out](size_t n) {
      out.resize(n);
      return static_cast<void*>(out.data());
    });
    return out;
  }
  // Reads a dataset holding exactly one element (a scalar, or shape [1]).
  // The size is checked before anything is read (a small file may declare a huge dataset).
  template <typename T>
  T read_scalar(const std::string& path) const {
    require_single(path, elements(path));
    return read<T>(path)[0];
  }
  // Reads rows [first, first + count) along the first dimension into out.
  template <typename T>
  void read_rows(const std::string& path, int64_t first, int64_t count, T* out) const {
    row_reader<T>(path).read(first, count, out);
  }
  // Opens a dataset of element type T (at least 1-D) for repeated row reads.
  template <typename T>
  RowReader row_reader(const std::string& path) const {
    return row_reader_raw(path, element_of<T>());
  }
  std::string read_string(const std::string& path) const;  // exactly one string, checked first
  std::vector<std::string> read_strings(const std::string& path) const;
  std::vector<int64_t> shape(const std::string& path) const;

  bool exists(const std::string& path) const;
  // Whether a dataset carries the Fletcher-32 filter (false for files of older builds).
  bool has_checksum(const std::string& path) const;
  // Names of the links in a group, sorted.
  std::vector<std::string> list(const std::string& group) const;

  // Attributes of an object (obj_path "/" is the file itself); set replaces an existing one.
  void set_attr(const std::string& obj_path, const std::string& name, int64_t value);
  void set_attr(const std::string& obj_path, const std::string& name, int value) {
    set_attr(obj_path, name, static_cast<int64_t>(value));
  }
  void set_attr(const std::string& obj_path, const std::string& name, double value);
  void set_attr(const std::string& obj_path, const std::string& name, const std::string& value);
  void set_attr(const std::string& obj_path, const std::string& name, const char* value) {
    set_attr(obj_path, name, std::string(value));
  }
  void set_attr(const std::string& obj_path, const std::string& name,
                const std::vector<int64_t>& value);
  bool has_attr(const std::string& obj_path, const std::string& name) const;
  int64_t get_attr_int(const std::string& obj_path, const std::string& name) const;
  double get_attr_double(const std::string& obj_path, const std::string& name) const;
  std::string get_attr_string(const std::string& obj_path, const std::string& name) const;
  std::vector<int64_t> get_attr_ints(const std::string& obj_path, const std::string& name) const;

  void flush();
  // Closes the file, throwing if HDF5 cannot finish writing it. Later calls are errors.
  void close();

 private:
  File(FileId id, std::string path) : id_(std::move(id)), path_(std::move(path)) {}
  static File open(const std::string& path, bool writable);
  hid_t id() const;
  void write_raw(const std::string& path, const std::vector<int64_t>& shape, Element e,
                 const void* data, const WriteOptions& opt);
  void read_raw(const std::string& path, Element e, std::vector<int64_t>* shape,
                const std::function<void*(size_t)>& alloc) const;
  RowReader row_reader_raw(const std::string& path, Element e) const;
  void require_single(const std::string& path, uint64_t n) const;
  uint64_t elements(const std::string& path) const;  // saturating product of the dimensions
  Dataset open_dataset(const std::string& path, Element e) const;
  Dataset open_dataset(const std::string& path) const;
  Object open_object(const std::string& obj_path) const;
  // The error for an object that exists but whose header HDF5 cannot read (a failed metadata
  // checksum, or bytes that no longer parse); `stack` is HDF5's error stack.
  UsageError damaged_metadata(const std::string& object, const std::string& stack) const;
  Attribute open_attr(const std::string& obj_path, const std::string& name) const;
  void replace_attr(const std::string& obj_path, const std::string& name, hid_t file_type,
                    hid_t space, hid_t mem_type, const void* data);
  void prepare_link(const std::string& path);  // deletes an old object of that name

  FileId id_;
  std::string path_;
};

}  // namespace mt::h5
