// Zip archives per PKWARE APPNOTE 6.3: locate the end-of-central-directory record, walk the
// central directory, and extract entries by their local headers (stored, or raw deflate through
// zlib), checking bounds and CRC-32 so a truncated or corrupt archive fails with its name.
#include "data/zip_reader.h"

#include <zlib.h>

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

constexpr uint32_t kEndOfCentralDirSig = 0x06054b50;
constexpr uint32_t kCentralHeaderSig = 0x02014b50;
constexpr uint32_t kLocalHeaderSig = 0x04034b50;
constexpr size_t kEndOfCentralDirSize = 22;
constexpr size_t kCentralHeaderSize = 46;
constexpr size_t kLocalHeaderSize = 30;

uint16_t le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t le32(const uint8_t* p) {
  return uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
}

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
  const size_t n = bytes_.size();
  MT_REQUIRE(n >= kEndOfCentralDirSize, not_zip, "only ", n, " bytes", fix);

  // The record is the last 22 bytes plus a comment of up to 65535 bytes; scan backwards.
  size_t eocd = n;
  const size_t lowest = n > kEndOfCentralDirSize + 0xffff ? n - kEndOfCentralDirSize - 0xffff : 0;
  for (size_t pos = n - kEndOfCentralDirSize + 1; pos-- > lowest;) {
    const uint8_t* p = bytes_.data() + pos;
    if (le32(p) == kEndOfCentralDirSig && pos + kEndOfCentralDirSize + le16(p + 20) <= n) {
      eocd = pos;
      break;
    }
  }
  MT_REQUIRE(eocd < n, not_zip, "no end-of-central-directory record (not a zip, or truncated)",
             fix);
  const uint8_t* e = bytes_.data() + eocd;
  const uint16_t disk = le16(e + 4), cd_disk = le16(e + 6);
  const uint16_t disk_entries = le16(e + 8), total_entries = le16(e + 10);
  const uint32_t cd_size = le32(e + 12), cd_offset = le32(e + 16);
  MT_REQUIRE(total_entries != 0xffff && cd_size != 0xffffffffu && cd_offset != 0xffffffffu, "'",
             path, "' is a ZIP64 archive, which is not supported; unpack it and pass the ",
             "folder instead");
  MT_REQUIRE(disk == 0 && cd_disk == 0 && disk_entries == total_entries, "'", path,
             "' is a multi-part zip archive, which is not supported; join or unpack it first");
  MT_REQUIRE(uint64_t{cd_offset} + cd_size <= eocd, not_zip,
             "central directory lies outside the file (truncated or corrupt)", fix);

  size_t pos = cd_offset;
  const size_t cd_end = size_t{cd_offset} + cd_size;
  entries_.reserve(total_entries);
  for (int i = 0; i < total_entries; ++i) {
    MT_REQUIRE(pos + kCentralHeaderSize <= cd_end && le32(bytes_.data() + pos) == kCentralHeaderSig,
               not_zip, "central directory entry ", i, " is damaged", fix);
    const uint8_t* h = bytes_.data() + pos;
    const size_t name_len = le16(h + 28), extra_len = le16(h + 30), comment_len = le16(h + 32);
    MT_REQUIRE(pos + kCentralHeaderSize + name_len + extra_len + comment_len <= cd_end, not_zip,
               "central directory entry ", i, " runs past the directory", fix);
    ZipEntry entry;
    entry.flags = le16(h + 8);
    entry.method = le16(h + 10);
    entry.crc32 = le32(h + 16);
    entry.compressed_size = le32(h + 20);
    entry.size = le32(h + 24);
    entry.local_header_offset = le32(h + 42);
    entry.name.assign(reinterpret_cast<const char*>(h + kCentralHeaderSize), name_len);
    MT_REQUIRE(entry.local_header_offset + kLocalHeaderSize <= cd_offset, not_zip, "entry '",
               entry.name, "' points outside the file", fix);
    MT_REQUIRE(index_.emplace(entry.name, entries_.size()).second, not_zip, "entry '", entry.name,
               "' appears twice", fix);
    entries_.push_back(std::move(entry));
    pos += kCentralHeaderSize + name_len + extra_len + comment_len;
  }
}

int64_t ZipReader::find(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? -1 : static_cast<int64_t>(it->second);
}

std::vector<uint8_t> ZipReader::read(const ZipEntry& entry) const {
  const std::string where = "entry '" + entry.name + "' of '" + path_ + "'";
  const std::string fix = "; re-download the archive, or pass an unpacked folder instead";
  MT_REQUIRE((entry.flags & 1) == 0, where, " is encrypted, which is not supported", fix);
  MT_REQUIRE(entry.method == 0 || entry.method == 8, where, " uses compression method ",
             entry.method, "; only stored (0) and deflate (8) are supported", fix);
  const uint8_t* h = bytes_.data() + entry.local_header_offset;
  MT_REQUIRE(le32(h) == kLocalHeaderSig, where, " has a damaged local header", fix);
  const uint64_t data_offset =
      entry.local_header_offset + kLocalHeaderSize + le16(h + 26) + le16(h + 28);
  MT_REQUIRE(data_offset + entry.compressed_size <= bytes_.size(), where,
             " is truncated (its data runs past the end of the file)", fix);
  const uint8_t* data = bytes_.data() + data_offset;

  std::vector<uint8_t> out(entry.size);
  if (entry.method == 0) {
    MT_REQUIRE(entry.compressed_size == entry.size, where, " is corrupt (stored size ",
               entry.compressed_size, " differs from size ", entry.size, ")", fix);
    std::copy(data, data + entry.size, out.begin());
  } else {
    uint8_t spare = 0;  // zlib needs a valid output pointer even for an empty entry
    z_stream zs{};
    zs.next_in = const_cast<Bytef*>(data);
    zs.avail_in = static_cast<uInt>(entry.compressed_size);
    zs.next_out = out.empty() ? &spare : out.data();
    zs.avail_out = static_cast<uInt>(out.size());
    MT_CHECK(inflateInit2(&zs, -MAX_WBITS) == Z_OK, "zlib inflateInit2 failed");
    const int rc = inflate(&zs, Z_FINISH);
    const uint64_t produced = zs.total_out;
    inflateEnd(&zs);
    MT_REQUIRE(rc == Z_STREAM_END && produced == entry.size, where,
               " has corrupt compressed data (inflate returned ", rc, " after ", produced, " of ",
               entry.size, " bytes)", fix);
  }
  const auto crc = static_cast<uint32_t>(crc32(0, out.data(), static_cast<uInt>(out.size())));
  MT_REQUIRE(crc == entry.crc32, where, " fails its CRC-32 check (corrupt)", fix);
  return out;
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
