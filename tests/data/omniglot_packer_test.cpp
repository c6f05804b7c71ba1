// Tests of the Omniglot packer and its parts: SHA-256 known answers and the published hashes of
// the real subset, zip and PNG readers, the area resize, and the packed subset checked pixel by
// pixel against an independent PNG decode + box filter written here; malformed inputs rejected.
#include "data/omniglot_packer.h"

#include <gtest/gtest.h>
#include <png.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/check.h"
#include "tests/support/errors.h"
#include "core/rng.h"
#include "data/image_resize.h"
#include "data/png_decode.h"
#include "data/sha256.h"
#include "data/zip_reader.h"

namespace mt {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

const char* const kSmall1 = "images_background_small1.zip";
const char* const kSmall2 = "images_background_small2.zip";
const char* const kRuns = "all_runs.zip";

std::string omniglot_dir() {
  const char* env = std::getenv("MT_DATA_DIR");
  return (env != nullptr ? std::string(env) : std::string(MT_SOURCE_DIR) + "/../shared/data") +
         "/omniglot";
}
std::string data_file(const char* name) { return omniglot_dir() + "/" + name; }

using testing::usage_error;

Bytes read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}
void write_file(const std::string& path, const Bytes& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
}
Bytes to_bytes(const std::string& s) { return Bytes(s.begin(), s.end()); }

// A minimal zip writer (stored entries only), independent of data/zip_reader.
Bytes make_stored_zip(const std::vector<std::pair<std::string, Bytes>>& files) {
  Bytes out, central;
  auto put = [](Bytes& b, uint32_t v, int n) {
    for (int i = 0; i < n; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
  };
  for (const auto& [name, data] : files) {
    const auto crc = static_cast<uint32_t>(crc32(0, data.data(), static_cast<uInt>(data.size())));
    const auto offset = static_cast<uint32_t>(out.size());
    const auto size = static_cast<uint32_t>(data.size());
    put(out, 0x04034b50, 4);
    put(out, 20, 2);  // version needed
    put(out, 0, 2);   // flags
    put(out, 0, 2);   // method: stored
    put(out, 0, 4);   // time, date
    put(out, crc, 4);
    put(out, size, 4);
    put(out, size, 4);
    put(out, static_cast<uint32_t>(name.size()), 2);
    put(out, 0, 2);  // extra length
    out.insert(out.end(), name.begin(), name.end());
    out.insert(out.end(), data.begin(), data.end());
    put(central, 0x02014b50, 4);
    put(central, 20, 2);
    put(central, 20, 2);
    put(central, 0, 2);
    put(central, 0, 2);
    put(central, 0, 4);
    put(central, crc, 4);
    put(central, size, 4);
    put(central, size, 4);
    put(central, static_cast<uint32_t>(name.size()), 2);
    put(central, 0, 4);  // extra and comment length
    put(central, 0, 4);  // disk, internal attributes
    put(central, 0, 4);  // external attributes
    put(central, offset, 4);
    central.insert(central.end(), name.begin(), name.end());
  }
  const auto cd_offset = static_cast<uint32_t>(out.size());
  out.insert(out.end(), central.begin(), central.end());
  put(out, 0x06054b50, 4);
  put(out, 0, 4);  // disk numbers
  put(out, static_cast<uint32_t>(files.size()), 2);
  put(out, static_cast<uint32_t>(files.size()), 2);
  put(out, static_cast<uint32_t>(central.size()), 4);
  put(out, cd_offset, 4);
  put(out, 0, 2);
  return out;
}

// Independent decode of a non-interlaced 1-bit grayscale PNG: chunks, zlib, the five scanline
// filters, bit unpacking. Returns ink[y * w + x] = 1 where the pixel is black (bit 0).
std::vector<int> ink_of_1bit_png(const Bytes& png, int& w, int& h) {
  auto be32 = [&](size_t p) {
    return (uint32_t{png[p]} << 24) | (uint32_t{png[p + 1]} << 16) | (uint32_t{png[p + 2]} << 8) |
           png[p + 3];
  };
  Bytes idat;
  for (size_t p = 8; p + 8 <= png.size();) {
    const uint32_t len = be32(p);
    const std::string type(png.begin() + p + 4, png.begin() + p + 8);
    if (type == "IHDR") {
      w = static_cast<int>(be32(p + 8));
      h = static_cast<int>(be32(p + 12));
      EXPECT_EQ(png[p + 16], 1);  // bit depth
      EXPECT_EQ(png[p + 17], 0);  // grayscale
      EXPECT_EQ(png[p + 20], 0);  // not interlaced
    }
    if (type == "IDAT") idat.insert(idat.end(), png.begin() + p + 8, png.begin() + p + 8 + len);
    p += 12 + len;
  }
  const size_t stride = (w + 7) / 8;
  Bytes raw(h * (stride + 1));
  uLongf raw_len = raw.size();
  EXPECT_EQ(uncompress(raw.data(), &raw_len, idat.data(), idat.size()), Z_OK);
  EXPECT_EQ(raw_len, raw.size());
  Bytes prev(stride, 0), cur(stride);
  std::vector<int> ink(static_cast<size_t>(w) * h);
  for (int y = 0; y < h; ++y) {
    const uint8_t filter = raw[y * (stride + 1)];
    for (size_t i = 0; i < stride; ++i) {
      const int x = raw[y * (stride + 1) + 1 + i];
      const int a = i > 0 ? cur[i - 1] : 0, b = prev[i], c = i > 0 ? prev[i - 1] : 0;
      int pred = 0;
      if (filter == 1) pred = a;
      if (filter == 2) pred = b;
      if (filter == 3) pred = (a + b) / 2;
      if (filter == 4) {
        const int pa = std::abs(b - c), pb = std::abs(a - c), pc = std::abs(a + b - 2 * c);
        pred = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      cur[i] = static_cast<uint8_t>(x + pred);
    }
    for (int x = 0; x < w; ++x) ink[y * w + x] = ((cur[x / 8] >> (7 - x % 8)) & 1) == 0;
    prev = cur;
  }
  return ink;
}

// Reference area resize in floating point: each output pixel averages the source over its
// rectangle [oy*sy, (oy+1)*sy) x [ox*sx, (ox+1)*sx) by explicit rectangle intersection.
// Exact enough: for 105 -> 28 no value can lie within 1e-4 of a rounding tie.
Bytes reference_resize(const std::vector<double>& src, int in_h, int in_w, int out_h, int out_w) {
  const double sy = static_cast<double>(in_h) / out_h, sx = static_cast<double>(in_w) / out_w;
  Bytes out(static_cast<size_t>(out_h) * out_w);
  for (int oy = 0; oy < out_h; ++oy) {
    for (int ox = 0; ox < out_w; ++ox) {
      const double y0 = oy * sy, y1 = y0 + sy, x0 = ox * sx, x1 = x0 + sx;
      double sum = 0;
      for (int iy = static_cast<int>(y0); iy < std::min<double>(y1, in_h); ++iy) {
        const double dy = std::min<double>(y1, iy + 1) - std::max<double>(y0, iy);
        for (int ix = static_cast<int>(x0); ix < std::min<double>(x1, in_w); ++ix) {
          const double dx = std::min<double>(x1, ix + 1) - std::max<double>(x0, ix);
          sum += dy * dx * src[iy * in_w + ix];
        }
      }
      out[oy * out_w + ox] = static_cast<uint8_t>(std::floor(sum / (sy * sx) + 0.5));
    }
  }
  return out;
}

// libpng's simplified writer, used to make PNGs of formats Omniglot does not have.
Bytes encode_png(const Bytes& pixels, int w, int h, png_uint_32 format, const Bytes& colormap = {},
                 int colormap_entries = 0) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  image.width = w;
  image.height = h;
  image.format = format;
  image.colormap_entries = colormap_entries;
  png_alloc_size_t size = 0;
  const void* cmap = colormap.empty() ? nullptr : colormap.data();
  EXPECT_TRUE(png_image_write_get_memory_size(image, size, 0, pixels.data(), 0, cmap));
  Bytes out(size);
  EXPECT_TRUE(png_image_write_to_memory(&image, out.data(), &size, 0, pixels.data(), 0, cmap));
  out.resize(size);
  return out;
}

// A temporary folder removed at the end of the test.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    path = fs::temp_directory_path() /
           ("mt_omniglot_" + tag + "_" +
            std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "_" +
            std::to_string(reinterpret_cast<uintptr_t>(this)));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

TEST(Sha256, KnownAnswersAndIncrementalUpdates) {
  EXPECT_EQ(sha256_hex(std::string()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex(std::string("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex(std::string("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  Sha256 h;
  const std::string chunk(997, 'a');  // 10^6 = 1003 * 997 + 9, fed in odd-sized pieces
  for (int i = 0; i < 1003; ++i) h.update(chunk);
  h.update(std::string(9, 'a'));
  EXPECT_EQ(h.hex_digest(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(ImageResize, ConstantIdentityAndRoundHalfUp) {
  const Bytes flat(7 * 5 * 3, 200);
  EXPECT_EQ(resize_area(flat.data(), 7, 5, 3, 3, 2), Bytes(3 * 2 * 3, 200));
  EXPECT_EQ(resize_area(flat.data(), 7, 5, 3, 11, 13), Bytes(11 * 13 * 3, 200));
  Rng rng(1, 0, 0, Stream::kTest);
  Bytes noise(9 * 8);
  for (uint8_t& v : noise) v = static_cast<uint8_t>(rng.below(256));
  EXPECT_EQ(resize_area(noise.data(), 9, 8, 1, 9, 8), noise);
  // 2x2 blocks: means 127.5 -> 128, 63.75 -> 64, 0.25 -> 0, 191.25 -> 191.
  const Bytes blocks = {0,   255, 255, 0, 1,   0,  //
                        0,   255, 0,   0, 0,   0,  //
                        255, 255, 0,   0, 255, 0,  //
                        255, 0,   0,   0, 0,   1};
  EXPECT_EQ(resize_area(blocks.data(), 4, 6, 1, 2, 3), (Bytes{128, 64, 0, 191, 0, 64}));
}

TEST(ImageResize, MatchesFloatingPointRectangleIntersection) {
  Rng rng(2, 0, 0, Stream::kTest);
  for (int trial = 0; trial < 3; ++trial) {
    Bytes img(105 * 105 * 2);
    for (uint8_t& v : img) v = static_cast<uint8_t>(rng.below(256));
    const Bytes got = resize_area(img.data(), 105, 105, 2, 28, 28);
    for (int c = 0; c < 2; ++c) {
      std::vector<double> plane(105 * 105);
      for (size_t i = 0; i < plane.size(); ++i) plane[i] = img[2 * i + c];
      const Bytes want = reference_resize(plane, 105, 105, 28, 28);
      for (size_t i = 0; i < want.size(); ++i) ASSERT_EQ(got[2 * i + c], want[i]) << "pixel " << i;
    }
  }
}

TEST(PngDecode, ConvertsGrayAlphaPaletteAndColourToGray) {
  const Bytes gray = {0, 1, 127, 128, 254, 255};
  const Bytes gray_png = encode_png(gray, 3, 2, PNG_FORMAT_GRAY);
  GrayImage g = decode_png_gray(gray_png.data(), gray_png.size(), "gray");
  EXPECT_EQ(g.width, 3);
  EXPECT_EQ(g.height, 2);
  EXPECT_EQ(g.pixels, gray);

  // (gray, alpha) on white: (g a + 255 (255 - a) + 127) / 255.
  const Bytes ga = {0, 255, 0, 0, 100, 128, 200, 51};
  const Bytes ga_png = encode_png(ga, 4, 1, PNG_FORMAT_GA);
  g = decode_png_gray(ga_png.data(), ga_png.size(), "ga");
  EXPECT_EQ(g.pixels, (Bytes{0, 255, (100 * 128 + 255 * 127 + 127) / 255,
                             (200 * 51 + 255 * 204 + 127) / 255}));

  const Bytes rgb = {0, 0, 0, 255, 255, 255, 90, 90, 90};
  const Bytes rgb_png = encode_png(rgb, 3, 1, PNG_FORMAT_RGB);
  g = decode_png_gray(rgb_png.data(), rgb_png.size(), "rgb");
  EXPECT_EQ(g.pixels, (Bytes{0, 255, 90}));

  const Bytes palette = {10, 10, 10, 240, 240, 240};
  const Bytes indices = {1, 0, 0, 1};
  const Bytes pal_png =
      encode_png(indices, 2, 2, PNG_FORMAT_RGB | PNG_FORMAT_FLAG_COLORMAP, palette, 2);
  g = decode_png_gray(pal_png.data(), pal_png.size(), "palette");
  EXPECT_EQ(g.pixels, (Bytes{240, 10, 10, 240}));
}

TEST(PngDecode, CorruptDataNamesTheEntry) {
  const Bytes png = encode_png(Bytes(64 * 64, 7), 64, 64, PNG_FORMAT_GRAY);
  auto decode = [](const Bytes& b) {
    return [b] { decode_png_gray(b.data(), b.size(), "x.zip:a/b.png"); };
  };
  EXPECT_EQ(usage_error(decode(png)), "");
  const std::string not_png = usage_error(decode(to_bytes("hello, world")));
  EXPECT_NE(not_png.find("'x.zip:a/b.png' is not a PNG"), std::string::npos) << not_png;
  const std::string truncated =
      usage_error(decode(Bytes(png.begin(), png.begin() + png.size() / 2)));
  EXPECT_NE(truncated.find("'x.zip:a/b.png' is a corrupt PNG"), std::string::npos) << truncated;
  Bytes flipped = png;
  flipped[png.size() - 20] ^= 0x40;  // inside the IDAT chunk: its CRC no longer matches
  const std::string bad_crc = usage_error(decode(flipped));
  EXPECT_NE(bad_crc.find("'x.zip:a/b.png' is a corrupt PNG"), std::string::npos) << bad_crc;
}

TEST(ZipReader, ReadsStoredEntriesAndRejectsDamage) {
  TempDir dir("zip");
  const Bytes hello = to_bytes("hello"), empty;
  const Bytes zip = make_stored_zip({{"a/", empty}, {"a/hello.txt", hello}, {"b.bin", empty}});
  write_file(dir.file("ok.zip"), zip);
  const ZipReader reader(dir.file("ok.zip"));
  ASSERT_EQ(reader.entries().size(), 3u);
  ASSERT_EQ(reader.find("a/hello.txt"), 1);
  EXPECT_EQ(reader.find("nope"), -1);
  EXPECT_EQ(reader.read(reader.entries()[1]), hello);
  EXPECT_EQ(reader.read(reader.entries()[2]), empty);
  const auto tree = SourceTree::open(dir.file("ok.zip"));
  EXPECT_EQ(tree->files(), (std::vector<std::string>{"a/hello.txt", "b.bin"}));
  EXPECT_EQ(tree->content_sha256(), sha256_hex(zip));

  Bytes bad_data = zip;
  bad_data[30 + 2 + 30 + 11] ^= 1;  // first byte of hello.txt's data
  write_file(dir.file("crc.zip"), bad_data);
  const ZipReader damaged(dir.file("crc.zip"));
  const std::string crc = usage_error([&] { damaged.read(damaged.entries()[1]); });
  EXPECT_NE(crc.find("entry 'a/hello.txt' of '" + dir.file("crc.zip") + "' fails its CRC-32"),
            std::string::npos)
      << crc;

  write_file(dir.file("text.zip"), to_bytes("just some text, not an archive\n"));
  const std::string text = usage_error([&] { ZipReader r(dir.file("text.zip")); });
  EXPECT_NE(text.find("'" + dir.file("text.zip") + "' is not a readable zip archive"),
            std::string::npos)
      << text;
  write_file(dir.file("cut.zip"), Bytes(zip.begin(), zip.end() - 30));
  const std::string cut = usage_error([&] { ZipReader r(dir.file("cut.zip")); });
  EXPECT_NE(cut.find("'" + dir.file("cut.zip") + "' is not a readable zip archive"),
            std::string::npos)
      << cut;
  const std::string missing = usage_error([&] { SourceTree::open(dir.file("missing.zip")); });
  EXPECT_NE(missing.find(dir.file("missing.zip") + "' does not exist"), std::string::npos)
      << missing;
}

// Tests that need the real Omniglot subset: skipped without it, failed in CI (CI=true).
class OmniglotData : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* f : {kSmall1, kSmall2, kRuns}) {
      if (fs::exists(data_file(f))) continue;
      const char* ci = std::getenv("CI");
      if (ci != nullptr && std::string(ci) == "true")
        GTEST_FAIL() << "missing " << data_file(f)
                     << " (set MT_DATA_DIR to the shared data folder)";
      GTEST_SKIP() << "missing " << data_file(f) << "; set MT_DATA_DIR to the folder holding "
                   << "omniglot/ to run this test";
    }
  }

  static const StoreContents& subset() {
    static const StoreContents packed =
        pack_omniglot({data_file(kSmall1), data_file(kSmall2)}, OmniglotPackOptions{});
    return packed;
  }
};

bool is_rotation(const std::string& name) { return name.find("/rot") != std::string::npos; }
std::string alphabet_of(const std::string& name) { return name.substr(0, name.find('/')); }

TEST_F(OmniglotData, ZipHashesMatchSourceMd) {
  std::ifstream in(omniglot_dir() + "/SOURCE.md");
  std::map<std::string, std::string> published;
  for (std::string line; std::getline(in, line);) {
    std::istringstream words(line);
    std::string dash, name, hex;
    if (words >> dash >> name >> hex && dash == "-" && hex.size() == 64) published[name] = hex;
  }
  ASSERT_EQ(published.size(), 3u);
  for (const auto& [name, hex] : published)
    EXPECT_EQ(sha256_hex(read_file(omniglot_dir() + "/" + name)), hex) << name;
}

TEST_F(OmniglotData, SubsetHasTheDistinctCharactersAndImages) {
  const StoreContents& c = subset();
  EXPECT_EQ(c.dataset, "omniglot");
  EXPECT_EQ(c.height, 28);
  EXPECT_EQ(c.width, 28);
  EXPECT_EQ(c.channels, 1);
  const size_t n_classes = c.class_names.size();
  ASSERT_EQ(c.class_offsets.size(), n_classes + 1);
  ASSERT_EQ(c.images.size(), c.labels.size() * 28 * 28);
  EXPECT_EQ(c.class_offsets.front(), 0);
  EXPECT_EQ(c.class_offsets.back(), static_cast<int64_t>(c.labels.size()));
  for (size_t k = 0; k < n_classes; ++k)
    for (int64_t i = c.class_offsets[k]; i < c.class_offsets[k + 1]; ++i)
      ASSERT_EQ(c.labels[i], static_cast<int32_t>(k));

  std::set<std::string> names(c.class_names.begin(), c.class_names.end());
  EXPECT_EQ(names.size(), n_classes) << "duplicate class names";
  std::map<std::string, int> per_alphabet;
  int64_t base_classes = 0, base_images = 0;
  for (size_t k = 0; k < n_classes; ++k) {
    if (is_rotation(c.class_names[k])) continue;
    ++base_classes;
    base_images += c.class_offsets[k + 1] - c.class_offsets[k];
    EXPECT_EQ(c.class_offsets[k + 1] - c.class_offsets[k], 20) << c.class_names[k];
    ++per_alphabet[alphabet_of(c.class_names[k])];
  }
  EXPECT_EQ(base_classes, 242);
  EXPECT_EQ(base_images, 4840);
  EXPECT_EQ(per_alphabet.size(), 8u);
  EXPECT_EQ(per_alphabet["Greek"], 24);
  EXPECT_EQ(per_alphabet["Latin"], 26);
  EXPECT_TRUE(std::is_sorted(c.class_names.begin(), c.class_names.end(),
                             [](const std::string& a, const std::string& b) {
                               return a.substr(0, a.find("/rot")) < b.substr(0, b.find("/rot"));
                             }));
  EXPECT_NE(c.string_attrs.at("source_sha256")
                .find("images_background_small1.zip:"
                      "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4"),
            std::string::npos);
  EXPECT_NE(c.string_attrs.at("source_sha256")
                .find(";images_background_small2.zip:"
                      "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f"),
            std::string::npos);
  EXPECT_EQ(c.string_attrs.at("split_method").rfind("alphabet:", 0), 0u);
  EXPECT_FALSE(c.string_attrs.at("created_by").empty());
}

TEST_F(OmniglotData, AlphabetSplitWithRotationsInTrainOnly) {
  const StoreContents& c = subset();
  std::map<int32_t, std::string> split_of;
  std::map<std::string, std::set<std::string>> alphabets;
  std::map<std::string, int> base, rotated;
  for (const auto& [split, classes] : c.splits) {
    for (int32_t k : classes) {
      ASSERT_GE(k, 0);
      ASSERT_LT(k, static_cast<int32_t>(c.class_names.size()));
      EXPECT_TRUE(split_of.emplace(k, split).second) << "class " << k << " in two splits";
      const std::string& name = c.class_names[k];
      ++(is_rotation(name) ? rotated : base)[split];
      alphabets[split].insert(alphabet_of(name));
    }
  }
  EXPECT_EQ(split_of.size(), c.class_names.size());
  EXPECT_EQ(base["train"] + base["val"] + base["test"], 242);
  EXPECT_GT(base["val"], 0);
  EXPECT_GT(base["test"], 0);
  EXPECT_EQ(rotated["val"] + rotated["test"], 0);
  EXPECT_EQ(rotated["train"], 3 * base["train"]);
  for (const std::string& a : alphabets["train"])
    EXPECT_EQ(alphabets["val"].count(a) + alphabets["test"].count(a), 0u) << a;
  for (const std::string& a : alphabets["val"]) EXPECT_EQ(alphabets["test"].count(a), 0u) << a;
  EXPECT_EQ(alphabets["train"].size() + alphabets["val"].size() + alphabets["test"].size(), 8u);

  // Each rotation class holds its base character's images rotated counter-clockwise.
  const int s = 28;
  for (size_t k = 0; k + 3 < c.class_names.size(); ++k) {
    if (c.class_names[k + 1] != c.class_names[k] + "/rot90") continue;
    ASSERT_EQ(c.class_names[k + 2], c.class_names[k] + "/rot180");
    ASSERT_EQ(c.class_names[k + 3], c.class_names[k] + "/rot270");
    for (int64_t i = 0; i < 20; ++i) {
      const uint8_t* img = &c.images[(c.class_offsets[k] + i) * s * s];
      const uint8_t* r90 = &c.images[(c.class_offsets[k + 1] + i) * s * s];
      const uint8_t* r180 = &c.images[(c.class_offsets[k + 2] + i) * s * s];
      const uint8_t* r270 = &c.images[(c.class_offsets[k + 3] + i) * s * s];
      for (int y = 0; y < s; ++y) {
        for (int x = 0; x < s; ++x) {
          // Counter-clockwise: the top row moves to the left column, read bottom-up.
          ASSERT_EQ(r90[(s - 1 - x) * s + y], img[y * s + x]);
          ASSERT_EQ(r180[(s - 1 - y) * s + (s - 1 - x)], img[y * s + x]);
          ASSERT_EQ(r270[x * s + (s - 1 - y)], img[y * s + x]);
        }
      }
    }
  }
}

TEST_F(OmniglotData, EveryImageMatchesAnIndependentDecodeAndResize) {
  const StoreContents& c = subset();
  // Raw PNG bytes straight from the archives' entries, keyed "<Alphabet>/<characterNN>".
  std::map<std::string, std::vector<Bytes>> pngs;
  for (const char* f : {kSmall1, kSmall2}) {
    const ZipReader zip(data_file(f));
    std::vector<std::pair<std::string, Bytes>> entries;
    for (const ZipEntry& e : zip.entries())
      if (e.name.size() > 4 && e.name.compare(e.name.size() - 4, 4, ".png") == 0)
        entries.emplace_back(e.name, zip.read(e));
    std::sort(entries.begin(), entries.end());
    std::map<std::string, std::vector<Bytes>> mine;
    for (auto& [name, bytes] : entries) {
      const size_t first = name.find('/') + 1, last = name.rfind('/');
      mine[name.substr(first, last - first)].push_back(std::move(bytes));
    }
    for (auto& [character, images] : mine) {
      if (pngs.count(character)) {
        EXPECT_EQ(pngs[character], images) << character << " differs between the two zips";
      } else {
        pngs[character] = std::move(images);
      }
    }
  }
  ASSERT_EQ(pngs.size(), 242u);

  int64_t checked = 0, grey_levels = 0;
  for (size_t k = 0; k < c.class_names.size(); ++k) {
    if (is_rotation(c.class_names[k])) continue;
    const std::vector<Bytes>& images = pngs.at(c.class_names[k]);
    ASSERT_EQ(static_cast<int64_t>(images.size()), c.class_offsets[k + 1] - c.class_offsets[k]);
    for (size_t i = 0; i < images.size(); ++i) {
      int w = 0, h = 0;
      const std::vector<int> ink = ink_of_1bit_png(images[i], w, h);
      ASSERT_EQ(w, 105);
      ASSERT_EQ(h, 105);
      std::vector<double> strokes(ink.size());
      for (size_t p = 0; p < ink.size(); ++p) strokes[p] = 255.0 * ink[p];
      const Bytes want = reference_resize(strokes, 105, 105, 28, 28);
      const uint8_t* got = &c.images[(c.class_offsets[k] + i) * 28 * 28];
      ASSERT_TRUE(std::equal(want.begin(), want.end(), got)) << c.class_names[k] << " image " << i;
      grey_levels +=
          std::count_if(want.begin(), want.end(), [](uint8_t v) { return v > 0 && v < 255; });
      ++checked;
    }
  }
  EXPECT_EQ(checked, 4840);
  EXPECT_GT(grey_levels, 4840 * 20) << "expected antialiased stroke edges";
}

// Both archives unpacked side by side into one folder (two roots) pack like the two zips.
TEST_F(OmniglotData, FolderInputEqualsZipsAndConflictsAreRejected) {
  TempDir dir("folder");
  for (const char* f : {kSmall1, kSmall2}) {
    const ZipReader zip(data_file(f));
    for (const ZipEntry& e : zip.entries())
      if (e.name.back() != '/') write_file(dir.file(e.name), zip.read(e));
  }
  write_file(dir.file("images_background_small2/.DS_Store"), to_bytes("ignored"));
  write_file(dir.file("README.txt"), to_bytes("ignored"));
  const std::string folder = dir.path.string();

  StoreContents from_folder = pack_omniglot({folder}, OmniglotPackOptions{});
  StoreContents from_zips = subset();
  EXPECT_EQ(
      from_folder.string_attrs.at("source_sha256").rfind(dir.path.filename().string() + "/:", 0),
      0u);
  from_folder.string_attrs.erase("source_sha256");
  from_zips.string_attrs.erase("source_sha256");
  EXPECT_EQ(from_folder.images, from_zips.images);
  EXPECT_EQ(from_folder.labels, from_zips.labels);
  EXPECT_EQ(from_folder.class_names, from_zips.class_names);
  EXPECT_EQ(from_folder.class_offsets, from_zips.class_offsets);
  EXPECT_EQ(from_folder.splits, from_zips.splits);
  EXPECT_EQ(from_folder.string_attrs, from_zips.string_attrs);

  // The same character with different bytes in two places.
  const std::string victim = dir.file("images_background_small2/Greek/character03/0396_05.png");
  Bytes changed = read_file(victim);
  ASSERT_FALSE(changed.empty());
  changed.push_back(0);
  write_file(victim, changed);
  const std::string conflict = usage_error([&] { pack_omniglot({folder}, OmniglotPackOptions{}); });
  EXPECT_NE(
      conflict.find("character 'Greek/character03' is in both '" + folder +
                    ":images_background_small1/' and '" + folder + ":images_background_small2/'"),
      std::string::npos)
      << conflict;
}

TEST_F(OmniglotData, MalformedInputsAreRejectedWithTheirNames) {
  TempDir dir("bad");
  auto pack = [](const std::vector<std::string>& in, OmniglotPackOptions o = {}) {
    return usage_error([&] { pack_omniglot(in, o); });
  };

  write_file(dir.file("notes.zip"), make_stored_zip({{"notes.txt", to_bytes("not omniglot")}}));
  const std::string notes = pack({dir.file("notes.zip")});
  EXPECT_NE(notes.find("'" + dir.file("notes.zip") + "' does not look like Omniglot"),
            std::string::npos)
      << notes;

  const std::string runs = pack({data_file(kRuns)});
  EXPECT_NE(runs.find("does not look like Omniglot: entry 'run01/"), std::string::npos) << runs;
  EXPECT_NE(runs.find("omniglot-lake"), std::string::npos) << runs;

  const Bytes small1 = read_file(data_file(kSmall1));
  write_file(dir.file("truncated.zip"), Bytes(small1.begin(), small1.begin() + small1.size() / 2));
  const std::string truncated = pack({dir.file("truncated.zip")});
  EXPECT_NE(truncated.find("'" + dir.file("truncated.zip") + "' is not a readable zip archive"),
            std::string::npos)
      << truncated;

  const ZipReader zip(data_file(kSmall1));
  Bytes png =
      zip.read(zip.entries()[zip.find("images_background_small1/Latin/character01/0683_01.png")]);
  png[png.size() / 2] ^= 0x10;
  const Bytes good =
      zip.read(zip.entries()[zip.find("images_background_small1/Latin/character01/0683_02.png")]);
  write_file(dir.file("corrupt.zip"),
             make_stored_zip({{"imgs/Greek/character01/0683_02.png", good},
                              {"imgs/Latin/character01/0683_01.png", png},
                              {"imgs/Tagalog/character01/0683_02.png", good}}));
  const std::string corrupt = pack({dir.file("corrupt.zip")});
  EXPECT_NE(corrupt.find("'" + dir.file("corrupt.zip") +
                         ":imgs/Latin/character01/0683_01.png' is a corrupt PNG"),
            std::string::npos)
      << corrupt;

  EXPECT_NE(pack({}).find("no Omniglot input"), std::string::npos);
  OmniglotPackOptions standard_split;
  standard_split.split = OmniglotSplit::kStandard;
  const std::string standard = pack({data_file(kSmall1)}, standard_split);
  EXPECT_NE(standard.find("split=standard needs the full Omniglot"), std::string::npos) << standard;
  EXPECT_NE(usage_error([] { parse_omniglot_split("random", "split"); }).find("split='random'"),
            std::string::npos);
}

// 1623 characters in 50 alphabets (each image a copy of one real PNG) take the standard split.
TEST_F(OmniglotData, FullSizedInputTakesTheStandardSplit) {
  TempDir dir("full");
  const ZipReader zip(data_file(kSmall1));
  const Bytes png =
      zip.read(zip.entries()[zip.find("images_background_small1/Latin/character01/0683_01.png")]);
  std::vector<std::pair<std::string, Bytes>> files;
  for (int i = 0; i < kOmniglotFullCharacters; ++i) {
    char name[64];
    std::snprintf(name, sizeof(name), "full/Alphabet%02d/character%02d/%04d_01.png", i % 50,
                  i / 50 + 1, i);
    files.emplace_back(name, png);
  }
  write_file(dir.file("full.zip"), make_stored_zip(files));
  const StoreContents c = pack_omniglot({dir.file("full.zip")}, OmniglotPackOptions{});
  const auto& train = c.splits.at("train");
  const auto& test = c.splits.at("test");
  EXPECT_TRUE(c.splits.at("val").empty());
  EXPECT_EQ(train.size(), 4u * kOmniglotStandardTrainCharacters);
  EXPECT_EQ(test.size(),
            static_cast<size_t>(kOmniglotFullCharacters - kOmniglotStandardTrainCharacters));
  EXPECT_EQ(c.class_names.size(), train.size() + test.size());
  // Train: the first 1200 characters of the sorted order with their rotations; then test.
  EXPECT_EQ(c.class_names[train.back()], "Alphabet36/character25/rot270");
  EXPECT_EQ(c.class_names[test.front()], "Alphabet36/character26");
  for (int32_t k : test) EXPECT_FALSE(is_rotation(c.class_names[k]));
  EXPECT_EQ(c.string_attrs.at("split_method").rfind("standard:", 0), 0u);
}

// The 28x28 store image an Omniglot PNG must become: independent decode, ink = 255, box filter.
Bytes expected_image(const Bytes& png) {
  int w = 0, h = 0;
  const std::vector<int> ink = ink_of_1bit_png(png, w, h);
  std::vector<double> strokes(ink.size());
  for (size_t p = 0; p < ink.size(); ++p) strokes[p] = 255.0 * ink[p];
  return reference_resize(strokes, h, w, 28, 28);
}

// Lake's runs: episode r is run r, its support the 20 exemplars in class order, its query the
// test item class_labels.txt pairs with each exemplar, every image pixel-exact.
TEST_F(OmniglotData, LakeRunsAreTheFixedEpisodes) {
  const StoreContents c = pack_omniglot_lake(data_file(kRuns));
  EXPECT_EQ(c.dataset, "omniglot-lake");
  ASSERT_EQ(c.episodes.count(), 20);
  EXPECT_EQ(c.episodes.ways, 20);
  EXPECT_EQ(c.episodes.shots, 1);
  EXPECT_EQ(c.episodes.queries, 1);
  EXPECT_EQ(c.class_names.size(), 400u);
  EXPECT_EQ(c.num_images(), 800);
  EXPECT_EQ(c.splits.at("test").size(), 400u);
  EXPECT_TRUE(c.splits.at("train").empty());
  EXPECT_EQ(store_problem(c), "");

  const ZipReader zip(data_file(kRuns));
  auto entry = [&](const std::string& name) { return zip.read(zip.entries()[zip.find(name)]); };
  for (int r = 0; r < 20; ++r) {
    char run[8];
    std::snprintf(run, sizeof run, "run%02d", r + 1);
    const Bytes text = entry(std::string(run) + "/class_labels.txt");
    std::map<std::string, std::string> item_of;  // "runNN/training/classKK.png" -> test item
    std::istringstream lines(std::string(text.begin(), text.end()));
    for (std::string item, exemplar; lines >> item >> exemplar;) item_of[exemplar] = item;
    ASSERT_EQ(item_of.size(), 20u) << run;
    for (int k = 0; k < 20; ++k) {
      char cls[64], name[32];
      std::snprintf(cls, sizeof cls, "%s/training/class%02d.png", run, k + 1);
      std::snprintf(name, sizeof name, "%s/class%02d", run, k + 1);
      const int64_t s = c.episodes.support[r * 20 + k], q = c.episodes.query[r * 20 + k];
      EXPECT_EQ(c.class_names[c.labels[s]], name);
      EXPECT_EQ(c.labels[s], c.labels[q]);
      const Bytes want_s = expected_image(entry(cls));
      const Bytes want_q = expected_image(entry(item_of.at(cls)));
      ASSERT_TRUE(std::equal(want_s.begin(), want_s.end(), &c.images[s * 784])) << cls;
      ASSERT_TRUE(std::equal(want_q.begin(), want_q.end(), &c.images[q * 784])) << cls;
    }
  }
}

TEST_F(OmniglotData, RepackingGivesAByteIdenticalFile) {
  TempDir dir("repack");
  write_store(dir.file("a.h5"), subset());
  write_store(dir.file("b.h5"), pack_omniglot({data_file(kSmall1), data_file(kSmall2)}, {}));
  const Bytes a = read_file(dir.file("a.h5")), b = read_file(dir.file("b.h5"));
  EXPECT_GT(a.size(), 1000000u);
  EXPECT_TRUE(a == b) << "re-packing changed the file";
  const StoreContents back = read_store(dir.file("a.h5"));
  EXPECT_EQ(back.images, subset().images);
  EXPECT_EQ(back.splits, subset().splits);
}

}  // namespace
}  // namespace mt
