// Read-only access to packer inputs: .zip archives (through libzip) and unpacked folders with the
// same layout, behind one "source tree" API that lists files and returns their bytes. Bad
// archives fail with a UsageError naming the file, and the entry where one is to blame.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

struct zip;  // libzip's zip_t

namespace mt {

struct ZipEntry {
  std::string name;        // path inside the archive, '/'-separated; folders end in '/'
  uint64_t index = 0;      // libzip's index of the entry
  uint16_t method = 0;     // 0 stored, 8 deflate, or another method libzip may decompress
  bool encrypted = false;  // rejected when read
  uint32_t crc32 = 0;
  uint64_t compressed_size = 0;
  uint64_t size = 0;
};

// The whole archive is read into memory at construction and opened by libzip from there, which
// parses the central directory and checks every local header against it (ZIP64 is supported;
// multi-disk archives are not). Entry names are the archive's bytes, not re-encoded. Reads are
// const and safe from several threads: they take turns on the one libzip handle.
class ZipReader {
 public:
  // Throws UsageError naming `path` if it cannot be read or is not a well-formed zip archive.
  explicit ZipReader(const std::string& path);
  ZipReader(const ZipReader&) = delete;
  ZipReader& operator=(const ZipReader&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<ZipEntry>& entries() const { return entries_; }
  // Index into entries() of the entry called `name`, or -1.
  int64_t find(const std::string& name) const;
  // The entry's uncompressed bytes, CRC-32 verified. Throws UsageError naming the archive and
  // the entry if its data is truncated, corrupt, encrypted or compressed by an unsupported method.
  std::vector<uint8_t> read(const ZipEntry& entry) const;
  // The archive file's bytes as read from disk.
  const std::vector<uint8_t>& archive_bytes() const { return bytes_; }

 private:
  std::string path_;
  std::vector<uint8_t> bytes_;
  struct Discard {
    void operator()(::zip* archive) const;
  };
  std::unique_ptr<::zip, Discard> archive_;  // libzip's handle over bytes_
  mutable std::mutex mutex_;                 // serializes the reads through archive_
  std::vector<ZipEntry> entries_;
  std::unordered_map<std::string, size_t> index_;
};

// A tree of files from a .zip archive or a folder. Paths are relative, '/'-separated, and
// listed in byte-wise sorted order; only regular files are listed (no folders).
class SourceTree {
 public:
  virtual ~SourceTree() = default;
  // A directory opens as a folder tree, anything else as a zip archive. Throws UsageError
  // naming `path` if it does not exist or is not a readable zip archive.
  static std::unique_ptr<SourceTree> open(const std::string& path);

  const std::string& path() const { return path_; }
  bool is_zip() const { return is_zip_; }
  const std::vector<std::string>& files() const { return files_; }
  // Bytes of a listed file. Throws UsageError naming the tree and the file on failure.
  virtual std::vector<uint8_t> read(const std::string& file) const = 0;
  // SHA-256 identifying the content: for a zip, of the archive file; for a folder, of the
  // text formed by one line "<relative path>\t<sha256 of the file>\n" per listed file, in
  // listing order.
  virtual std::string content_sha256() const = 0;

 protected:
  SourceTree(std::string path, bool is_zip) : path_(std::move(path)), is_zip_(is_zip) {}
  std::vector<std::string> files_;

 private:
  std::string path_;
  bool is_zip_;
};

}  // namespace mt
