// Zip archives through libzip, opened from the bytes in memory (which also give the archive's
// SHA-256), and folders through std::filesystem. libzip's error codes are turned into messages
// that say which file or entry is damaged and what to do about it.
#include "data/zip_reader.h"

#include <zip.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/check.h"
#include "data/sha256.h"

namespace mt {
namespace {

namespace fs = std::filesystem;
using detail::concat;

std::vector<uint8_t> read_whole_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MT_REQUIRE(in.good(), "cannot open '", path, "': ", std::strerror(errno),
             "; check the path and its permissions");
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  MT_REQUIRE(!in.bad(), "error while reading '", path, "'; check the file and the disk");
  return bytes;
}

}  // namespace

ZipReader::ZipReader(const std::string& path) : path_(path), bytes_(read_whole_file(path)) {
  const std::string not_zip = "'" + path + "' is not a readable zip archive: ";
  const std::string fix = "; re-download it, or pass the unpacked folder instead";
  // libzip takes an empty file for a new, empty archive.
  MT_REQUIRE(!bytes_.empty(), not_zip, "the file is empty", fix);
  zip_error_t error;
  zip_error_init(&error);
  // The source only borrows bytes_ (freep = 0).
  zip_source_t* source = zip_source_buffer_create(bytes_.data(), bytes_.size(), 0, &error);
  MT_CHECK(source != nullptr, "libzip: ", zip_error_strerror(&error));
  // ZIP_CHECKCONS: every local header must agree with the central directory.
  archive_.reset(zip_open_from_source(source, ZIP_RDONLY | ZIP_CHECKCONS, &error));
  if (!archive_) {
    zip_source_free(source);
    const int code = zip_error_code_zip(&error);
    const std::string what = zip_error_strerror(&error);
    zip_error_fini(&error);
    MT_REQUIRE(code != ZIP_ER_MULTIDISK, "'", path, "' is a multi-part zip archive, which is ",
               "not supported; join or unpack it first");
    const char* why = code == ZIP_ER_NOZIP ? "not a zip, or truncated or damaged" : "damaged";
    throw UsageError(concat(not_zip, why, " (libzip: ", what, ")", fix));
  }
  zip_error_fini(&error);

  const zip_int64_t n = zip_get_num_entries(archive_.get(), 0);
  entries_.reserve(static_cast<size_t>(n));
  for (zip_int64_t i = 0; i < n; ++i) {
    zip_stat_t st;
    zip_stat_init(&st);
    // ZIP_FL_ENC_RAW: the names as stored, without libzip's CP437 -> UTF-8 guessing.
    MT_REQUIRE(
        zip_stat_index(archive_.get(), static_cast<zip_uint64_t>(i), ZIP_FL_ENC_RAW, &st) == 0,
        not_zip, "entry ", i, " is damaged (", zip_strerror(archive_.get()), ")", fix);
    ZipEntry entry;
    entry.index = static_cast<uint64_t>(i);
    entry.name = st.name;
    entry.method = static_cast<uint16_t>(st.comp_method);
    entry.encrypted = st.encryption_method != ZIP_EM_NONE;
    entry.crc32 = st.crc;
    entry.compressed_size = st.comp_size;
    entry.size = st.size;
    MT_REQUIRE(index_.emplace(entry.name, entries_.size()).second, not_zip, "entry '", entry.name,
               "' appears twice", fix);
    entries_.push_back(std::move(entry));
  }
}

void ZipReader::Discard::operator()(::zip* archive) const { zip_discard(archive); }

int64_t ZipReader::find(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? -1 : static_cast<int64_t>(it->second);
}

std::vector<uint8_t> ZipReader::read(const ZipEntry& entry) const {
  const std::string where = "entry '" + entry.name + "' of '" + path_ + "'";
  const std::string fix = "; re-download the archive, or pass an unpacked folder instead";
  MT_REQUIRE(!entry.encrypted, where, " is encrypted, which is not supported", fix);
  std::vector<uint8_t> out(entry.size);
  const std::lock_guard<std::mutex> lock(mutex_);
  zip_file_t* file = zip_fopen_index(archive_.get(), entry.index, 0);
  if (file == nullptr) {
    const int code = zip_error_code_zip(zip_get_error(archive_.get()));
    MT_REQUIRE(code != ZIP_ER_COMPNOTSUPP, where, " uses compression method ", entry.method,
               ", which libzip cannot decompress", fix);
    MT_REQUIRE(code != ZIP_ER_NOZIP, where, " has a damaged local header", fix);
    throw UsageError(concat(where, " cannot be opened (", zip_strerror(archive_.get()), ")", fix));
  }
  // Read the declared size, then once more: only at its end does libzip check the CRC-32, and
  // any further byte means the entry is longer than the directory says.
  uint8_t spare = 0;
  const auto size = static_cast<zip_int64_t>(out.size());
  const zip_int64_t got = zip_fread(file, out.empty() ? &spare : out.data(), out.size());
  const zip_int64_t extra = got == size ? zip_fread(file, &spare, 1) : 0;
  const int code = zip_error_code_zip(zip_file_get_error(file));
  const std::string what = zip_file_strerror(file);
  zip_fclose(file);
  if (got == size && extra == 0) return out;
  std::string problem;
  if (code == ZIP_ER_CRC)
    problem = " fails its CRC-32 check (corrupt)";
  else if (code == ZIP_ER_ZLIB || code == ZIP_ER_COMPRESSED_DATA)
    problem = concat(" has corrupt compressed data (", what, ")");
  else if (code == ZIP_ER_EOF || code == ZIP_ER_READ || code == ZIP_ER_INCONS)
    problem = " is truncated (its data runs past the end of the file)";
  else if (got >= 0 && extra >= 0)
    problem = concat(" is corrupt (its data is ", extra > 0 ? "longer" : "shorter", " than the ",
                     entry.size, " bytes the directory gives)");
  else
    problem = concat(" cannot be read (", what, ")");
  throw UsageError(concat(where, problem, fix));
}

namespace {

class ZipTree : public SourceTree {
 public:
  explicit ZipTree(const std::string& path) : SourceTree(path, true), zip_(path) {
    for (const ZipEntry& e : zip_.entries())
      if (!e.name.empty() && e.name.back() != '/') files_.push_back(e.name);
    std::sort(files_.begin(), files_.end());
  }

  std::vector<uint8_t> read(const std::string& file) const override {
    const int64_t i = zip_.find(file);
    MT_REQUIRE(i >= 0, "'", path(), "' has no entry '", file, "'");
    return zip_.read(zip_.entries()[i]);
  }

  std::string content_sha256() const override { return sha256_hex(zip_.archive_bytes()); }

 private:
  ZipReader zip_;
};

class FolderTree : public SourceTree {
 public:
  explicit FolderTree(const std::string& path) : SourceTree(path, false) {
    std::error_code ec;
    for (fs::recursive_directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec))
      if (it->is_regular_file(ec))
        files_.push_back(it->path().lexically_relative(path).generic_string());
    MT_REQUIRE(!ec, "cannot list folder '", path, "': ", ec.message(),
               "; check the path and its permissions");
    std::sort(files_.begin(), files_.end());
  }

  std::vector<uint8_t> read(const std::string& file) const override {
    return read_whole_file((fs::path(path()) / file).string());
  }

  std::string content_sha256() const override {
    Sha256 h;
    for (const std::string& f : files_) h.update(f + "\t" + sha256_hex(read(f)) + "\n");
    return h.hex_digest();
  }
};

}  // namespace

std::unique_ptr<SourceTree> SourceTree::open(const std::string& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  MT_REQUIRE(fs::exists(st), "input '", path, "' does not exist; check the path");
  if (fs::is_directory(st)) return std::make_unique<FolderTree>(path);
  return std::make_unique<ZipTree>(path);
}

}  // namespace mt
