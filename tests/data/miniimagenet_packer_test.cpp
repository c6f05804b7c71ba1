// Tests of the Mini-ImageNet packer and its JPEG decoder, on a small fixture written here in both
// layouts (JPEGs encoded with libjpeg): class order, splits, offsets, pixels checked against an
// independent libjpeg decode; every malformed input rejected with a message naming the file.
#include "data/miniimagenet_packer.h"

#include <gtest/gtest.h>
#include <omp.h>
#include <unistd.h>

#include <cstdio>
// jpeglib.h needs size_t and FILE declared before it.
#include <jpeglib.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/check.h"
#include "data/image_resize.h"
#include "data/jpeg_decode.h"
#include "data/zip_reader.h"
#include "tests/support/errors.h"
#include "tests/support/images.h"

namespace mt {
namespace {

namespace fs = std::filesystem;
using testing::Bytes;
using testing::encode_jpeg;
using testing::reference_jpeg_rgb;
using testing::write_file;
using testing::write_text;
constexpr int kS = kMiniImageNetSize;

using testing::usage_error;

Bytes solid(int h, int w, const Bytes& colour) {
  Bytes p;
  for (int i = 0; i < h * w; ++i) p.insert(p.end(), colour.begin(), colour.end());
  return p;
}

// A smooth deterministic pattern with some texture, so decoding errors show.
Bytes pattern(int h, int w, int components, int seed) {
  Bytes p(static_cast<size_t>(h) * w * components);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < components; ++c)
        p[(static_cast<size_t>(y) * w + x) * components + c] =
            static_cast<uint8_t>((x * (3 + c) + y * (5 + seed) + ((x / 7 + y / 5) % 2) * 40) % 256);
  return p;
}

// A temporary folder removed at the end of the test.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag)
      : path(fs::temp_directory_path() /
             ("mt_miniimagenet_" + tag + "_" + std::to_string(getpid()))) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

// The fixture: labels chosen so that val sorts before train and test alphabetically (class
// order must follow the split first).
const std::vector<std::string> kTrain = {"n05000003", "n05000001", "n05000002"};
const std::vector<std::string> kVal = {"n01000002", "n01000001"};
const std::vector<std::string> kTest = {"n03000001", "n03000002"};
const std::vector<std::string> kExpectedOrder = {"n05000001", "n05000002", "n05000003", "n01000001",
                                                 "n01000002", "n03000001", "n03000002"};
constexpr int kPerClass = 4;

std::string image_name(const std::string& label, int j) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%08d", j + 1);
  return label + buf + ".jpg";
}

// Class k's colour for its solid images.
Bytes class_colour(int k) {
  return {static_cast<uint8_t>(30 + 30 * k), static_cast<uint8_t>(200 - 25 * k),
          static_cast<uint8_t>(90 + 17 * k)};
}

// Image j of the class with fixture index k: 0 solid RGB 90x100, 1 textured RGB 84x84,
// 2 solid gray 375x500, 3 textured gray 50x60 (upscaled by the packer).
Bytes fixture_image(int k, int j) {
  switch (j) {
    case 0:
      return encode_jpeg(solid(90, 100, class_colour(k)), 90, 100, 3);
    case 1:
      return encode_jpeg(pattern(kS, kS, 3, k), kS, kS, 3);
    case 2:
      return encode_jpeg(solid(375, 500, {static_cast<uint8_t>(40 + 20 * k)}), 375, 500, 1);
    default:
      return encode_jpeg(pattern(50, 60, 1, k), 50, 60, 1);
  }
}

struct FixtureClass {
  std::string label, split;
  int k;  // index for colours and patterns
};

std::vector<FixtureClass> fixture_classes() {
  std::vector<FixtureClass> out;
  int k = 0;
  for (const auto& l : kTrain) out.push_back({l, "train", k++});
  for (const auto& l : kVal) out.push_back({l, "val", k++});
  for (const auto& l : kTest) out.push_back({l, "test", k++});
  return out;
}

// Writes the CSV layout into `root` (rows in reverse order, so the packer must sort them).
void write_csv_fixture(const fs::path& root) {
  std::map<std::string, std::string> csv;
  for (const char* s : {"train", "val", "test"}) csv[s] = "filename,label\n";
  auto classes = fixture_classes();
  std::reverse(classes.begin(), classes.end());
  for (const FixtureClass& c : classes)
    for (int j = kPerClass - 1; j >= 0; --j) {
      write_file(root / "images" / image_name(c.label, j), fixture_image(c.k, j));
      csv[c.split] += image_name(c.label, j) + "," + c.label + "\n";
    }
  for (const auto& [split, text] : csv) write_text(root / (split + ".csv"), text);
}

void write_folder_fixture(const fs::path& root) {
  for (const FixtureClass& c : fixture_classes())
    for (int j = 0; j < kPerClass; ++j)
      write_file(root / c.split / c.label / image_name(c.label, j), fixture_image(c.k, j));
}

StoreContents pack(const fs::path& root) { return pack_miniimagenet({root.string()}, {}); }

const uint8_t* image_at(const StoreContents& c, int64_t i) {
  return c.images.data() + i * c.image_bytes();
}

TEST(JpegDecode, MatchesIndependentDecodeForRgbAndGray) {
  for (int components : {3, 1}) {
    const Bytes jpeg = encode_jpeg(pattern(37, 53, components, 2), 37, 53, components);
    int h = 0, w = 0;
    const Bytes ref = reference_jpeg_rgb(jpeg, &h, &w);
    const RgbImage img = decode_jpeg_rgb(jpeg.data(), jpeg.size(), "pattern.jpg");
    ASSERT_EQ(img.height, 37);
    ASSERT_EQ(img.width, 53);
    EXPECT_EQ(img.pixels, ref) << components << " components";  // exact: same libjpeg decode
  }
}

TEST(JpegDecode, CmykWithAdobeMarkerIsConverted) {
  // libjpeg writes an Adobe marker for CMYK, so readers take the values as stored inverted
  // (ink complements): R = C'K'/255. With K' = 255, RGB = (C', M', Y'). Tolerance +-2: JPEG
  // quantization of a solid block at quality 95.
  const Bytes jpeg = encode_jpeg(solid(16, 16, {200, 100, 50, 255}), 16, 16, 4);
  const RgbImage img = decode_jpeg_rgb(jpeg.data(), jpeg.size(), "cmyk.jpg");
  ASSERT_EQ(img.pixels.size(), 16u * 16 * 3);
  for (size_t i = 0; i < img.pixels.size(); i += 3) {
    EXPECT_NEAR(img.pixels[i], 200, 2);
    EXPECT_NEAR(img.pixels[i + 1], 100, 2);
    EXPECT_NEAR(img.pixels[i + 2], 50, 2);
  }
}

TEST(JpegDecode, CorruptDataIsAUsageErrorNamingIt) {
  const std::string text = "this is not a JPEG file at all";
  const Bytes garbage(text.begin(), text.end());
  EXPECT_NE(usage_error([&] {
              decode_jpeg_rgb(garbage.data(), garbage.size(), "a/bad.jpg");
            }).find("'a/bad.jpg' is a corrupt JPEG"),
            std::string::npos);
  EXPECT_NE(usage_error([&] {
              decode_jpeg_rgb(garbage.data(), 0, "empty.jpg");
            }).find("'empty.jpg' is a corrupt JPEG"),
            std::string::npos);
  // A valid SOI followed by a frame header whose bytes are destroyed.
  Bytes broken = encode_jpeg(pattern(16, 16, 3, 0), 16, 16, 3);
  std::fill(broken.begin() + 2, broken.begin() + 40, uint8_t{0x00});
  EXPECT_NE(usage_error([&] {
              decode_jpeg_rgb(broken.data(), broken.size(), "x.jpg");
            }).find("'x.jpg' is a corrupt JPEG"),
            std::string::npos);
}

TEST(JpegDecode, EveryTruncationIsAUsageErrorNotACrash) {
  const Bytes jpeg = encode_jpeg(pattern(24, 24, 3, 1), 24, 24, 3);
  int rejected = 0;
  for (size_t len = 0; len < jpeg.size(); ++len) {
    const std::string msg = usage_error([&] { decode_jpeg_rgb(jpeg.data(), len, "cut.jpg"); });
    EXPECT_NE(msg.find("'cut.jpg' is a corrupt JPEG"), std::string::npos) << "length " << len;
    rejected += msg.empty() ? 0 : 1;
  }
  EXPECT_EQ(rejected, static_cast<int>(jpeg.size()));
  EXPECT_EQ(decode_jpeg_rgb(jpeg.data(), jpeg.size(), "whole.jpg").height, 24);
}

TEST(JpegDecode, HugeImageIsRejectedBeforeDecoding) {
  const int w = 20000;  // over the 16384 limit; one row keeps the fixture small
  const Bytes jpeg = encode_jpeg(Bytes(w, 128), 1, w, 1);
  const std::string msg =
      usage_error([&] { decode_jpeg_rgb(jpeg.data(), jpeg.size(), "big.jpg"); });
  EXPECT_NE(msg.find("'big.jpg'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("20000x1"), std::string::npos) << msg;
}

TEST(MiniImageNetPacker, CsvLayoutPacksClassesSplitsAndPixels) {
  TempDir dir("csv");
  const fs::path root = dir.path / "mini";
  write_csv_fixture(root);
  std::vector<std::pair<int64_t, int64_t>> calls;
  MiniImageNetPackOptions options;
  options.progress = [&](int64_t done, int64_t total) { calls.emplace_back(done, total); };
  const StoreContents c = pack_miniimagenet({root.string()}, options);

  const int n_classes = 7, n = n_classes * kPerClass;
  EXPECT_EQ(store_problem(c), "");
  EXPECT_EQ(c.dataset, "miniimagenet");
  EXPECT_EQ(c.height, kS);
  EXPECT_EQ(c.width, kS);
  EXPECT_EQ(c.channels, 3);
  EXPECT_EQ(c.deflate, 0);
  EXPECT_EQ(c.class_names, kExpectedOrder);
  EXPECT_EQ(c.splits.at("train"), (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(c.splits.at("val"), (std::vector<int32_t>{3, 4}));
  EXPECT_EQ(c.splits.at("test"), (std::vector<int32_t>{5, 6}));
  ASSERT_EQ(c.num_images(), n);
  ASSERT_EQ(c.images.size(), static_cast<size_t>(n) * kS * kS * 3);
  for (int k = 0; k <= n_classes; ++k) EXPECT_EQ(c.class_offsets[k], k * kPerClass);
  for (int i = 0; i < n; ++i) EXPECT_EQ(c.labels[i], i / kPerClass);
  EXPECT_EQ(c.string_attrs.at("split_method"), "csv:train.csv,val.csv,test.csv");
  EXPECT_EQ(c.string_attrs.at("created_by"), "metapack miniimagenet");
  EXPECT_EQ(c.string_attrs.at("source_sha256"),
            "mini/:" + SourceTree::open(root.string())->content_sha256());

  // Pixels. The fixture index of class kExpectedOrder[k] gives its colours and patterns.
  const auto classes = fixture_classes();
  for (int k = 0; k < n_classes; ++k) {
    const auto fc = std::find_if(classes.begin(), classes.end(), [&](const FixtureClass& f) {
      return f.label == c.class_names[k];
    });
    ASSERT_NE(fc, classes.end());
    for (int j = 0; j < kPerClass; ++j) {
      const uint8_t* got = image_at(c, k * kPerClass + j);  // images sorted by file name = j
      const Bytes jpeg = fixture_image(fc->k, j);
      int h = 0, w = 0;
      const Bytes ref = reference_jpeg_rgb(jpeg, &h, &w);
      const Bytes want = resize_area(ref.data(), h, w, 3, kS, kS);
      // Exact: the packer must be decode + resize_area, nothing else.
      EXPECT_TRUE(std::equal(want.begin(), want.end(), got)) << c.class_names[k] << " image " << j;
      if (j == 1)  // 84x84: the resize is the identity, so the packed image is libjpeg's decode
        EXPECT_TRUE(std::equal(ref.begin(), ref.end(), got)) << c.class_names[k];
      if (j == 0 || j == 2) {
        // Solid images of any size pack to their colour within +-2 (JPEG rounding).
        const Bytes colour =
            j == 0 ? class_colour(fc->k) : Bytes(3, static_cast<uint8_t>(40 + 20 * fc->k));
        int off = 0;
        for (int p = 0; p < kS * kS * 3; ++p) off += std::abs(got[p] - colour[p % 3]) > 2;
        EXPECT_EQ(off, 0) << c.class_names[k] << " image " << j;
      }
    }
  }

  ASSERT_FALSE(calls.empty());
  EXPECT_EQ(calls.back(), std::make_pair(int64_t{n}, int64_t{n}));
  for (size_t i = 1; i < calls.size(); ++i) EXPECT_LE(calls[i - 1].first, calls[i].first);
}

TEST(MiniImageNetPacker, FolderLayoutGivesTheSameStore) {
  TempDir dir("layouts");
  write_csv_fixture(dir.path / "csv");
  write_folder_fixture(dir.path / "folders");
  const StoreContents a = pack(dir.path / "csv");
  const StoreContents b = pack(dir.path / "folders");
  EXPECT_EQ(store_problem(b), "");
  EXPECT_EQ(a.images, b.images);
  EXPECT_EQ(a.labels, b.labels);
  EXPECT_EQ(a.class_offsets, b.class_offsets);
  EXPECT_EQ(a.class_names, b.class_names);
  EXPECT_EQ(a.splits, b.splits);
  EXPECT_EQ(b.string_attrs.at("split_method"), "folders:train,val,test");
  EXPECT_EQ(b.string_attrs.at("source_sha256"),
            "folders/:" + SourceTree::open((dir.path / "folders").string())->content_sha256());
}

TEST(MiniImageNetPacker, DeterministicAcrossRunsAndThreadCounts) {
  TempDir dir("determinism");
  write_folder_fixture(dir.path);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const StoreContents a = pack(dir.path);
  omp_set_num_threads(4);
  const StoreContents b = pack(dir.path);
  omp_set_num_threads(threads);
  EXPECT_EQ(a.images, b.images);
  EXPECT_EQ(a.labels, b.labels);
  EXPECT_EQ(a.class_names, b.class_names);
  EXPECT_EQ(a.splits, b.splits);
  EXPECT_EQ(a.string_attrs, b.string_attrs);
}

// Expects packing `root` to fail with a UsageError containing every string in `parts`.
void expect_rejected(const fs::path& root, const std::vector<std::string>& parts) {
  const std::string msg = usage_error([&] { pack(root); });
  ASSERT_FALSE(msg.empty()) << "no UsageError for " << root;
  for (const std::string& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << msg;
}

TEST(MiniImageNetPacker, RejectsBadInputLists) {
  TempDir dir("inputs");
  EXPECT_NE(usage_error([] { pack_miniimagenet({}, {}); }).find("no Mini-ImageNet input"),
            std::string::npos);
  const std::string two = usage_error([&] { pack_miniimagenet({"first_dir", "second_dir"}, {}); });
  EXPECT_NE(two.find("first_dir"), std::string::npos) << two;
  EXPECT_NE(two.find("second_dir"), std::string::npos) << two;
  expect_rejected(dir.path / "absent", {"absent", "does not exist"});
  write_text(dir.path / "plain.txt", "x");
  expect_rejected(dir.path / "plain.txt", {"plain.txt", "not a folder"});
  write_text(dir.path / "other" / "readme.txt", "x");
  expect_rejected(dir.path / "other", {"other", "neither Mini-ImageNet layout"});
}

TEST(MiniImageNetPacker, RejectsMalformedCsvLayouts) {
  TempDir dir("badcsv");
  const fs::path root = dir.path;
  write_csv_fixture(root);
  const std::string train = "filename,label\n" + image_name("n05000001", 0) + ",n05000001\n";

  fs::rename(root / "val.csv", root / "val.bak");
  expect_rejected(root, {"val.csv", "is missing"});
  fs::rename(root / "val.bak", root / "val.csv");

  write_text(root / "train.csv", "filename,labl\n" + image_name("n05000001", 0) + ",n05000001\n");
  expect_rejected(root, {"train.csv", "missing column 'label'"});

  write_text(root / "train.csv", train + "\n" + image_name("n05000001", 1) + ",n05000001,x\n");
  expect_rejected(root, {"train.csv' line 4", "3 fields, expected 2"});

  write_text(root / "train.csv", train + "n05000009.jpg,n05000001\n");
  expect_rejected(root, {"train.csv' line 3", "'n05000009.jpg'", "images/"});

  write_text(root / "train.csv", train + image_name("n05000001", 0) + ",n05000001\r\n");
  expect_rejected(root,
                  {"train.csv' line 3", image_name("n05000001", 0), "again", "train.csv line 2"});

  // An image of a val class listed in train under its own label: a label in two splits.
  write_text(root / "train.csv", train + image_name("n01000001", 0) + ",n01000001\n");
  expect_rejected(root, {"val.csv", "'n01000001'", "one split"});

  write_text(root / "train.csv", train);
  EXPECT_EQ(pack(root).class_names.front(), "n05000001");  // the fixture is valid again

  const fs::path victim = root / "images" / image_name("n05000001", 0);
  Bytes jpeg = fixture_image(0, 0);
  jpeg.resize(jpeg.size() / 2);
  write_file(victim, jpeg);
  expect_rejected(root, {"images/" + image_name("n05000001", 0) + "' is a corrupt JPEG"});
}

TEST(MiniImageNetPacker, RejectsMalformedFolderLayouts) {
  TempDir dir("badfolders");
  const fs::path root = dir.path;
  write_folder_fixture(root);

  fs::create_directories(root / "train" / "n05000099");
  expect_rejected(root, {"train/n05000099/", "holds no JPEG images"});
  fs::remove(root / "train" / "n05000099");

  fs::rename(root / "val", root / "valid");
  expect_rejected(root, {"val/' is missing"});
  fs::rename(root / "valid", root / "val");

  write_file(root / "test" / "n05000001" / "a.jpg", fixture_image(0, 0));
  expect_rejected(root, {"'n05000001'", "train/n05000001/", "test/n05000001/", "one split"});
  fs::remove_all(root / "test" / "n05000001");

  write_file(root / "train" / "loose.jpg", fixture_image(0, 0));
  expect_rejected(root, {"train/loose.jpg", "not inside a class folder"});
  fs::remove(root / "train" / "loose.jpg");

  write_text(root / "train" / "n05000001" / ".DS_Store", "hidden files are ignored");
  EXPECT_EQ(pack(root).num_images(), 7 * kPerClass);

  write_file(root / "val" / "n01000001" / "broken.JPEG", Bytes{0xFF, 0xD8, 0xFF});
  expect_rejected(root, {"val/n01000001/broken.JPEG' is a corrupt JPEG"});
}

}  // namespace
}  // namespace mt
