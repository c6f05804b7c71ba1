// Tests of data/zip_reader.h against archives written by libzip's own writer: stored and deflate
// entries read back, truncated and byte-damaged archives rejected with the file's name (never a
// crash, another exception or wrong bytes), and concurrent reads of one archive.
#include "data/zip_reader.h"

#include <gtest/gtest.h>
#include <zip.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/check.h"
#include "data/sha256.h"
#include "tests/support/errors.h"

namespace mt {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;
using testing::usage_error;

struct File {
  std::string name;
  Bytes data;
  bool deflate;
};

// Writes `files` (a name ending in '/' makes a folder) with libzip into `path`.
void write_zip(const std::string& path, const std::vector<File>& files) {
  int error = 0;
  zip_t* archive = zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &error);
  ASSERT_NE(archive, nullptr) << "libzip error " << error;
  for (const File& f : files) {
    if (f.name.back() == '/') {
      ASSERT_GE(zip_dir_add(archive, f.name.c_str(), ZIP_FL_ENC_UTF_8), 0);
      continue;
    }
    zip_source_t* source = zip_source_buffer(archive, f.data.data(), f.data.size(), 0);
    ASSERT_NE(source, nullptr);
    const zip_int64_t i = zip_file_add(archive, f.name.c_str(), source, ZIP_FL_ENC_UTF_8);
    ASSERT_GE(i, 0) << zip_strerror(archive);
    ASSERT_EQ(zip_set_file_compression(archive, static_cast<zip_uint64_t>(i),
                                       f.deflate ? ZIP_CM_DEFLATE : ZIP_CM_STORE, 0),
              0);
  }
  ASSERT_EQ(zip_close(archive), 0) << zip_strerror(archive);
}

Bytes read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}
void write_file(const std::string& path, const Bytes& bytes) {
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
}

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    path =
        fs::temp_directory_path() /
        ("mt_zip_" + tag + "_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
         "_" + std::to_string(reinterpret_cast<uintptr_t>(this)));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

// A stored text, a compressible deflated block, an empty file and a folder.
std::vector<File> sample_files() {
  Bytes text;
  for (char c : std::string("hello, zip\n")) text.push_back(static_cast<uint8_t>(c));
  Bytes block(6000);
  for (size_t i = 0; i < block.size(); ++i) block[i] = static_cast<uint8_t>((i * i / 7) % 251);
  return {{"b/hello.txt", text, false},
          {"a/", {}, false},
          {"a/block.bin", block, true},
          {"empty", {}, true}};
}

TEST(ZipReader, ReadsStoredAndDeflateEntriesWrittenByLibzip) {
  TempDir dir("ok");
  const std::vector<File> files = sample_files();
  write_zip(dir.file("ok.zip"), files);
  const ZipReader zip(dir.file("ok.zip"));
  ASSERT_EQ(zip.entries().size(), files.size());
  for (size_t i = 0; i < files.size(); ++i) {
    SCOPED_TRACE(files[i].name);
    const ZipEntry& e = zip.entries()[i];
    EXPECT_EQ(e.name, files[i].name);
    EXPECT_EQ(zip.find(e.name), static_cast<int64_t>(i));
    EXPECT_EQ(e.size, files[i].data.size());
    EXPECT_FALSE(e.encrypted);
    EXPECT_EQ(zip.read(e), files[i].data);
  }
  EXPECT_EQ(zip.entries()[0].method, 0);
  EXPECT_EQ(zip.entries()[2].method, 8);
  EXPECT_LT(zip.entries()[2].compressed_size, zip.entries()[2].size);
  EXPECT_EQ(zip.find("nope"), -1);

  const auto tree = SourceTree::open(dir.file("ok.zip"));
  EXPECT_TRUE(tree->is_zip());
  EXPECT_EQ(tree->files(), (std::vector<std::string>{"a/block.bin", "b/hello.txt", "empty"}));
  EXPECT_EQ(tree->read("a/block.bin"), files[2].data);
  EXPECT_EQ(tree->content_sha256(), sha256_hex(read_file(dir.file("ok.zip"))));
  const std::string missing = usage_error([&] { tree->read("a/none"); });
  EXPECT_NE(missing.find("has no entry 'a/none'"), std::string::npos) << missing;
}

// The end-of-central-directory record is the file's last 22 bytes: every shorter prefix fails
// when opened, naming the file and saying what to do.
TEST(ZipReader, EveryTruncationIsRejectedWithTheFileName) {
  TempDir dir("cut");
  write_zip(dir.file("ok.zip"), sample_files());
  const Bytes zip = read_file(dir.file("ok.zip"));
  const std::string cut = dir.file("cut.zip");
  for (size_t n = 0; n < zip.size(); ++n) {
    write_file(cut, Bytes(zip.begin(), zip.begin() + static_cast<std::ptrdiff_t>(n)));
    const std::string e = usage_error([&] { ZipReader r(cut); });
    ASSERT_NE(e.find("'" + cut + "' is not a readable zip archive"), std::string::npos)
        << n << " bytes: " << e;
    ASSERT_NE(e.find("re-download it, or pass the unpacked folder instead"), std::string::npos)
        << e;
  }
}

// One byte changed anywhere: the archive either fails to open, or each entry reads back its
// original bytes or fails with a UsageError naming the entry and the archive.
TEST(ZipReader, EveryDamagedByteIsRejectedOrHarmless) {
  TempDir dir("flip");
  const std::vector<File> files = sample_files();
  write_zip(dir.file("ok.zip"), files);
  const Bytes zip = read_file(dir.file("ok.zip"));
  const std::string bad = dir.file("bad.zip");
  int rejected_at_open = 0, rejected_at_read = 0;
  for (size_t pos = 0; pos < zip.size(); ++pos) {
    Bytes damaged = zip;
    damaged[pos] ^= 0x5a;
    write_file(bad, damaged);
    std::unique_ptr<ZipReader> reader;
    const std::string open = usage_error([&] { reader = std::make_unique<ZipReader>(bad); });
    if (!reader) {
      ASSERT_NE(open.find("'" + bad + "'"), std::string::npos) << pos << ": " << open;
      ++rejected_at_open;
      continue;
    }
    ASSERT_EQ(reader->entries().size(), files.size()) << pos;
    for (size_t i = 0; i < files.size(); ++i) {
      Bytes got;
      const std::string read = usage_error([&] { got = reader->read(reader->entries()[i]); });
      if (read.empty()) {
        ASSERT_EQ(got, files[i].data) << "byte " << pos << " changed entry " << i << " unnoticed";
      } else {
        ASSERT_NE(read.find("' of '" + bad + "'"), std::string::npos) << pos << ": " << read;
        ++rejected_at_read;
      }
    }
  }
  EXPECT_GT(rejected_at_open, 0);
  EXPECT_GT(rejected_at_read, 0);
}

// Damage at known places (the first entry's data follows its local header) and the messages it
// gives.
TEST(ZipReader, DamagedEntriesSayWhatIsWrong) {
  TempDir dir("entries");
  const std::vector<File> files = sample_files();
  write_zip(dir.file("ok.zip"), files);
  const Bytes zip = read_file(dir.file("ok.zip"));
  const size_t first_data = 30 + (zip[26] | (zip[27] << 8)) + (zip[28] | (zip[29] << 8));
  const std::string path = dir.file("bad.zip");
  auto read_entry = [&](const Bytes& bytes, size_t i) {
    write_file(path, bytes);
    return usage_error([&] {
      const ZipReader r(path);
      r.read(r.entries()[i]);
    });
  };
  const std::string hello = "entry 'b/hello.txt' of '" + path + "'";
  const std::string fix = "re-download the archive, or pass an unpacked folder instead";

  Bytes b = zip;
  b[first_data + 3] ^= 1;
  std::string e = read_entry(b, 0);
  EXPECT_NE(e.find(hello + " fails its CRC-32 check"), std::string::npos) << e;
  EXPECT_NE(e.find(fix), std::string::npos) << e;

  // A local header that disagrees with the central directory fails when the archive is opened.
  b = zip;
  b[0] = 'X';  // the signature
  write_file(path, b);
  e = usage_error([&] { ZipReader r(path); });
  EXPECT_NE(e.find("'" + path + "' is not a readable zip archive"), std::string::npos) << e;

  // The deflate stream of a/block.bin, located by the name in its local header.
  b = zip;
  const std::string name = "a/block.bin";
  const size_t header =
      std::search(zip.begin(), zip.end(), name.begin(), name.end()) - zip.begin() - 30;
  const size_t block_data =
      header + 30 + name.size() + (zip[header + 28] | (zip[header + 29] << 8));
  for (size_t k = 0; k < 8; ++k) b[block_data + 40 + k] ^= 0xff;
  e = read_entry(b, 2);
  const std::string block = "entry 'a/block.bin' of '" + path + "'";
  EXPECT_TRUE(e.find(block + " has corrupt compressed data") != std::string::npos ||
              e.find(block + " fails its CRC-32 check") != std::string::npos)
      << e;

  write_file(path, {'j', 'u', 's', 't', ' ', 't', 'e', 'x', 't'});
  e = usage_error([&] { SourceTree::open(path); });
  EXPECT_NE(
      e.find("'" + path + "' is not a readable zip archive: not a zip, or truncated or damaged"),
      std::string::npos)
      << e;
  e = usage_error([&] { SourceTree::open(dir.file("missing.zip")); });
  EXPECT_NE(e.find(dir.file("missing.zip") + "' does not exist"), std::string::npos) << e;
}

// Reads from several threads at once (the packers decode in parallel) return the right bytes.
TEST(ZipReader, ConcurrentReadsAgree) {
  TempDir dir("threads");
  const std::vector<File> files = sample_files();
  write_zip(dir.file("ok.zip"), files);
  const ZipReader zip(dir.file("ok.zip"));
  std::vector<int> wrong(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int round = 0; round < 50; ++round)
        for (size_t i = 0; i < files.size(); ++i)
          wrong[t] += zip.read(zip.entries()[i]) != files[i].data;
    });
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(wrong, std::vector<int>(4, 0));
}

}  // namespace
}  // namespace mt
