// Tests of `metapack folder` (data/folder_packer.h): Omniglot re-laid as class folders packs to
// exactly pack_omniglot's images; PNG/JPEG fixtures at both channel counts against independent
// decodes; byte-reproducible stores; ratio, list and CSV splits; every damaged input rejected.
#include "data/folder_packer.h"

#include <gtest/gtest.h>
#include <omp.h>
#include <png.h>
#include <unistd.h>

#include <cstdio>
// jpeglib.h needs size_t and FILE declared before it.
#include <jpeglib.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "data/image_resize.h"
#include "data/omniglot_packer.h"
#include "data/png_decode.h"
#include "data/zip_reader.h"
#include "tests/support/errors.h"
#include "tests/support/images.h"
#include "tests/support/programs.h"

namespace mt {
namespace {

namespace fs = std::filesystem;
using testing::Bytes;
using testing::encode_jpeg;
using testing::encode_png;
using testing::pattern;
using testing::read_bytes;
using testing::reference_jpeg_rgb;
using testing::usage_error;
using testing::write_file;
using testing::write_text;

// A fresh scratch folder per test and process (ctest runs tests side by side).
fs::path scratch(const std::string& name) {
  return testing::temp_dir("folder_packer_" + name + "_" + std::to_string(getpid()));
}

// The documented gray rule, written out again here: (6968 R + 23434 G + 2366 B + 16384) >> 15.
Bytes luma(const Bytes& rgb) {
  Bytes g(rgb.size() / 3);
  for (size_t i = 0; i < g.size(); ++i)
    g[i] = static_cast<uint8_t>(
        (6968u * rgb[3 * i] + 23434u * rgb[3 * i + 1] + 2366u * rgb[3 * i + 2] + 16384u) >> 15);
  return g;
}

// One fixture image: its file bytes and the RGB pixels a correct decoder must see.
struct FixtureImage {
  std::string file;  // name inside its class folder
  Bytes bytes;
  int h = 0, w = 0;
  Bytes rgb;  // [h, w, 3]
};

// Five images per class, one of each kind; k varies the pixels between classes.
std::vector<FixtureImage> class_images(int k) {
  std::vector<FixtureImage> out;
  auto add = [&](const std::string& file, Bytes bytes, int h, int w, Bytes rgb) {
    out.push_back({file, std::move(bytes), h, w, std::move(rgb)});
  };
  const Bytes rgb = pattern(23, 41, 3, k);  // a JPEG, decoded by libjpeg for the reference
  Bytes jpeg = encode_jpeg(rgb, 23, 41, 3);
  int h = 0, w = 0;
  Bytes ref = reference_jpeg_rgb(jpeg, &h, &w);
  add("a_rgb.jpg", jpeg, h, w, ref);
  jpeg = encode_jpeg(pattern(30, 17, 1, k + 1), 30, 17, 1);
  ref = reference_jpeg_rgb(jpeg, &h, &w);
  add("b_gray.JPEG", jpeg, h, w, ref);
  const Bytes png_rgb = pattern(19, 25, 3, k + 2);
  add("c_rgb.png", encode_png(png_rgb, 19, 25, PNG_FORMAT_RGB), 19, 25, png_rgb);
  const Bytes rgba = pattern(16, 16, 4, k + 3);  // alpha composited on white
  Bytes on_white;
  for (size_t i = 0; i < rgba.size(); i += 4)
    for (int c = 0; c < 3; ++c)
      on_white.push_back(static_cast<uint8_t>(
          (rgba[i + c] * rgba[i + 3] + 255 * (255 - rgba[i + 3]) + 127) / 255));
  add("d_rgba.PNG", encode_png(rgba, 16, 16, PNG_FORMAT_RGBA), 16, 16, on_white);
  const Bytes gray = pattern(12, 9, 1, k + 4);
  Bytes gray3;
  for (uint8_t v : gray) gray3.insert(gray3.end(), {v, v, v});
  add("e_gray.png", encode_png(gray, 12, 9, PNG_FORMAT_GRAY), 12, 9, gray3);
  return out;
}

// The split-folder fixture: classes named so that name order differs from split order.
const std::map<std::string, std::vector<std::string>> kSplits = {
    {"train", {"zebra", "yak", "xerus"}}, {"val", {"bee"}}, {"test", {"cat", "ant"}}};
const std::vector<std::string> kOrder = {"xerus", "yak", "zebra", "bee", "ant", "cat"};

int class_seed(const std::string& name) { return name[0] - 'a'; }

void write_split_fixture(const fs::path& root) {
  for (const auto& [split, classes] : kSplits)
    for (const std::string& c : classes)
      for (const FixtureImage& img : class_images(class_seed(c)))
        write_file(root / split / c / img.file, img.bytes);
}

// What image `img` must become in a store of `f`: gray rule, inversion, then the box filter.
Bytes expected(const FixtureImage& img, const ImageFormat& f) {
  Bytes px = f.channels == 1 ? luma(img.rgb) : img.rgb;
  if (f.invert)
    for (uint8_t& v : px) v = static_cast<uint8_t>(255 - v);
  return resize_area(px.data(), img.h, img.w, f.channels, f.height, f.width);
}

FolderPackOptions with_format(int h, int w, int channels, bool invert = false) {
  FolderPackOptions o;
  o.format = {h, w, channels, invert};
  return o;
}

// Expects packing to fail with a UsageError containing every string in `parts`.
void expect_rejected(const fs::path& root, const FolderPackOptions& o,
                     const std::vector<std::string>& parts) {
  const std::string msg = usage_error([&] { pack_folder(root.string(), o); });
  ASSERT_FALSE(msg.empty()) << "no UsageError for " << root;
  for (const std::string& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << msg;
}

TEST(GrayFromRgb, Rec709WeightsExactForGray) {
  // (0, 36, 52): 966656 / 32768 = 29.5 exactly, rounded half up.
  const Bytes rgb = {255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 200, 30, 255, 255, 254, 0, 36, 52};
  EXPECT_EQ(gray_from_rgb(rgb.data(), 6), (Bytes{54, 182, 18, 147, 255, 30}));
  Bytes ramp;
  for (int v = 0; v < 256; ++v) ramp.insert(ramp.end(), 3, static_cast<uint8_t>(v));
  const Bytes gray = gray_from_rgb(ramp.data(), 256);
  for (int v = 0; v < 256; ++v) ASSERT_EQ(gray[v], v);
}

TEST(PngDecodeRgb, ConvertsEveryFormatToRgb) {
  const Bytes rgb = pattern(5, 7, 3, 1);
  const Bytes png = encode_png(rgb, 5, 7, PNG_FORMAT_RGB);
  RgbImage img = decode_png_rgb(png.data(), png.size(), "rgb.png");
  EXPECT_EQ(img.height, 5);
  EXPECT_EQ(img.width, 7);
  EXPECT_EQ(img.pixels, rgb);

  for (const FixtureImage& f : class_images(3)) {
    if (f.file.find(".png") == std::string::npos && f.file.find(".PNG") == std::string::npos)
      continue;  // RGB, RGBA on white, gray replicated
    img = decode_png_rgb(f.bytes.data(), f.bytes.size(), f.file);
    EXPECT_EQ(img.pixels, f.rgb) << f.file;
  }
  const Bytes palette = {10, 20, 30, 240, 230, 220};
  const Bytes pal_png =
      encode_png({1, 0, 0, 1}, 2, 2, PNG_FORMAT_RGB | PNG_FORMAT_FLAG_COLORMAP, palette, 2);
  img = decode_png_rgb(pal_png.data(), pal_png.size(), "palette.png");
  EXPECT_EQ(img.pixels, (Bytes{240, 230, 220, 10, 20, 30, 10, 20, 30, 240, 230, 220}));
}

TEST(PngDecodeRgb, EveryTruncationAndBadCrcIsAUsageErrorNamingIt) {
  const Bytes png = encode_png(pattern(9, 9, 3, 2), 9, 9, PNG_FORMAT_RGB);
  for (size_t len = 0; len < png.size(); ++len) {
    const std::string msg = usage_error([&] { decode_png_rgb(png.data(), len, "d/cut.png"); });
    EXPECT_NE(msg.find("'d/cut.png' is "), std::string::npos) << "length " << len << ": " << msg;
  }
  Bytes flipped = png;
  flipped[png.size() - 20] ^= 0x40;  // inside IDAT: its CRC no longer matches
  const std::string crc =
      usage_error([&] { decode_png_rgb(flipped.data(), flipped.size(), "d/crc.png"); });
  EXPECT_NE(crc.find("'d/crc.png' is a corrupt PNG"), std::string::npos) << crc;
}

TEST(SplitRatio, ParsesCountsAndRejects) {
  EXPECT_EQ(SplitRatio{}.text(), "0.64,0.16,0.2");
  const SplitRatio r = parse_split_ratio(" 0.5, .25,0.250000", "--split-ratio");
  EXPECT_EQ(r.millionths, (std::array<int64_t, 3>{500000, 250000, 250000}));
  EXPECT_EQ(r.text(), "0.5,0.25,0.25");
  EXPECT_EQ(parse_split_ratio("1,0,0", "k").text(), "1,0,0");
  // val and test: round half up of n * share; train the rest.
  EXPECT_EQ(split_counts(20, SplitRatio{}), (std::array<int64_t, 3>{13, 3, 4}));
  EXPECT_EQ(split_counts(5, SplitRatio{}), (std::array<int64_t, 3>{3, 1, 1}));
  EXPECT_EQ(split_counts(10, r), (std::array<int64_t, 3>{4, 3, 3}));  // 2.5 -> 3
  EXPECT_EQ(split_counts(100, SplitRatio{}), (std::array<int64_t, 3>{64, 16, 20}));
  for (const char* bad : {"0.5,0.5", "0.6,0.3,0.3", "-0.1,0.6,0.5", "0.1234567,0.4,0.4765433",
                          "a,b,c", "0.5,,0.5", "0.5,0.25,0.25,0"}) {
    const std::string msg = usage_error([&] { parse_split_ratio(bad, "--split-ratio"); });
    EXPECT_NE(msg.find(std::string("--split-ratio='") + bad + "'"), std::string::npos) << msg;
  }
}

// The real Omniglot PNGs re-laid as class folders (one alphabet per split) pack to exactly the
// images pack_omniglot makes of the same characters: same decoder rule, inversion and resizer.
TEST(FolderPacker, OmniglotRelaidEqualsPackOmniglot) {
  const std::string zip_path = testing::data_dir() + "/omniglot/images_background_small1.zip";
  ASSERT_TRUE(fs::exists(zip_path))
      << "missing " << zip_path << "; set MT_DATA_DIR to the shared data folder";
  const fs::path root = scratch("omniglot") / "omniglot_folders";
  const std::map<std::string, std::string> split_of = {
      {"Balinese", "train"}, {"Early_Aramaic", "val"}, {"Greek", "test"}};
  const ZipReader zip(zip_path);
  for (const ZipEntry& e : zip.entries()) {
    std::vector<std::string> p;  // images_background_small1/<Alphabet>/<character>/<file>
    for (const fs::path& part : fs::path(e.name)) p.push_back(part.string());
    if (p.size() != 4 || p[3].empty() || split_of.count(p[1]) == 0) continue;
    write_file(root / split_of.at(p[1]) / (p[1] + "-" + p[2]) / p[3], zip.read(e));
  }
  OmniglotPackOptions oo;
  oo.rotations = false;
  const StoreContents omni = pack_omniglot({zip_path}, oo);
  const StoreContents c = pack_folder(root.string(), with_format(28, 28, 1, true));
  EXPECT_EQ(store_problem(c), "");
  EXPECT_EQ(c.dataset, "omniglot_folders");
  EXPECT_EQ(c.string_attrs.at("split_method"), "folders:train,val,test");
  EXPECT_EQ(c.num_images(), 480 + 440 + 480);
  ASSERT_EQ(c.image_bytes(), 28 * 28);
  std::set<std::string> splits_seen;
  for (const auto& [split, classes] : c.splits)
    for (int32_t k : classes) {
      std::string name = c.class_names[k];
      splits_seen.insert(split_of.at(name.substr(0, name.find('-'))) + "=" + split);
      name[name.find('-')] = '/';
      const auto it = std::find(omni.class_names.begin(), omni.class_names.end(), name);
      ASSERT_NE(it, omni.class_names.end()) << name;
      const int64_t j = it - omni.class_names.begin();
      const int64_t n = c.class_offsets[k + 1] - c.class_offsets[k];
      ASSERT_EQ(n, omni.class_offsets[j + 1] - omni.class_offsets[j]) << name;
      EXPECT_TRUE(std::equal(c.images.begin() + c.class_offsets[k] * 784,
                             c.images.begin() + c.class_offsets[k + 1] * 784,
                             omni.images.begin() + omni.class_offsets[j] * 784))
          << name;
    }
  EXPECT_EQ(splits_seen, (std::set<std::string>{"train=train", "val=val", "test=test"}));
}

TEST(FolderPacker, PngAndJpegAtBothChannelCountsNonSquare) {
  const fs::path root = scratch("formats") / "animals";
  write_split_fixture(root);
  write_text(root / "README.txt", "files beside the class folders are ignored");
  write_text(root / "train" / "yak" / ".DS_Store", "hidden files are ignored");
  for (const ImageFormat& f : {ImageFormat{20, 30, 3, false}, ImageFormat{15, 11, 1, false},
                               ImageFormat{9, 13, 1, true}}) {
    FolderPackOptions o;
    o.format = f;
    const StoreContents c = pack_folder(root.string(), o);
    EXPECT_EQ(store_problem(c), "");
    EXPECT_EQ(c.dataset, "animals");
    EXPECT_EQ(c.height, f.height);
    EXPECT_EQ(c.width, f.width);
    EXPECT_EQ(c.channels, f.channels);
    EXPECT_EQ(c.class_names, kOrder);
    EXPECT_EQ(c.splits.at("train"), (std::vector<int32_t>{0, 1, 2}));
    EXPECT_EQ(c.splits.at("val"), (std::vector<int32_t>{3}));
    EXPECT_EQ(c.splits.at("test"), (std::vector<int32_t>{4, 5}));
    EXPECT_EQ(c.string_attrs.at("split_method"), "folders:train,val,test");
    EXPECT_EQ(c.string_attrs.at("created_by"), "metapack folder");
    EXPECT_EQ(c.string_attrs.at("source_sha256"),
              "animals/:" + SourceTree::open(root.string())->content_sha256());
    ASSERT_EQ(c.num_images(), 6 * 5);
    for (size_t k = 0; k < kOrder.size(); ++k) {
      const std::vector<FixtureImage> images = class_images(class_seed(kOrder[k]));
      for (size_t j = 0; j < images.size(); ++j) {  // file names sort in fixture order
        const int64_t i = static_cast<int64_t>(k * 5 + j);
        EXPECT_EQ(c.labels[i], static_cast<int32_t>(k));
        const Bytes want = expected(images[j], f);
        EXPECT_TRUE(std::equal(want.begin(), want.end(), c.images.begin() + i * c.image_bytes()))
            << kOrder[k] << "/" << images[j].file << " at " << f.height << "x" << f.width << "x"
            << f.channels;
      }
    }
  }
}

// Packs `root` with the given thread count and writes the store to `out`.
void pack_to_file(const fs::path& root, int threads, const fs::path& out,
                  FolderPackOptions o = with_format(17, 23, 3)) {
  const int before = omp_get_max_threads();
  omp_set_num_threads(threads);
  const StoreContents c = pack_folder(root.string(), o);
  omp_set_num_threads(before);
  write_store(out.string(), c);
}

TEST(FolderPacker, StoreBytesDependOnlyOnTheInputContent) {
  const fs::path dir = scratch("bytes");
  write_split_fixture(dir / "a" / "pets");
  fs::create_directories(dir / "b");
  fs::copy(dir / "a" / "pets", dir / "b" / "pets", fs::copy_options::recursive);
  pack_to_file(dir / "a" / "pets", 1, dir / "one.h5");
  pack_to_file(dir / "a" / "pets", 2, dir / "two.h5");
  pack_to_file(dir / "b" / "pets", 2, dir / "copy.h5");  // same content elsewhere
  const Bytes one = read_bytes(dir / "one.h5");
  ASSERT_GT(one.size(), 1000u);
  EXPECT_EQ(one, read_bytes(dir / "two.h5"));
  EXPECT_EQ(one, read_bytes(dir / "copy.h5"));
  // A changed pixel changes the store.
  const fs::path victim = dir / "b" / "pets" / "val" / "bee" / "c_rgb.png";
  Bytes rgb = pattern(19, 25, 3, class_seed("bee") + 2);
  rgb[0] ^= 0x80;
  write_file(victim, encode_png(rgb, 19, 25, PNG_FORMAT_RGB));
  pack_to_file(dir / "b" / "pets", 2, dir / "changed.h5");
  EXPECT_NE(one, read_bytes(dir / "changed.h5"));
}

// n classes of one small PNG each, without splits.
void write_flat_classes(const fs::path& root, int n) {
  for (int k = 0; k < n; ++k) {
    char name[16];
    std::snprintf(name, sizeof name, "class%02d", k);
    write_file(root / name / "img.png", encode_png(pattern(6, 6, 1, k), 6, 6, PNG_FORMAT_GRAY));
  }
}

// Class name -> split of a store.
std::map<std::string, std::string> splits_by_name(const StoreContents& c) {
  std::map<std::string, std::string> out;
  for (const auto& [split, classes] : c.splits)
    for (int32_t k : classes) EXPECT_TRUE(out.emplace(c.class_names[k], split).second);
  return out;
}

TEST(FolderPacker, RatioSplitIsSeededByWholeClassesWithDocumentedCounts) {
  const fs::path root = scratch("ratio") / "flat";
  write_flat_classes(root, 20);
  FolderPackOptions o = with_format(6, 6, 1);
  o.split_seed = 3;
  const StoreContents a = pack_folder(root.string(), o);
  const StoreContents again = pack_folder(root.string(), o);
  o.split_seed = 4;
  const StoreContents other = pack_folder(root.string(), o);
  EXPECT_EQ(store_problem(a), "");
  EXPECT_EQ(a.string_attrs.at("split_method"), "ratio:0.64,0.16,0.2 seed 3");
  EXPECT_EQ(other.string_attrs.at("split_method"), "ratio:0.64,0.16,0.2 seed 4");
  EXPECT_EQ(a.splits.at("train").size(), 13u);  // split_counts(20): 13, 3, 4
  EXPECT_EQ(a.splits.at("val").size(), 3u);
  EXPECT_EQ(a.splits.at("test").size(), 4u);
  const auto by_name = splits_by_name(a);
  EXPECT_EQ(by_name.size(), 20u);  // every class in exactly one split
  EXPECT_EQ(by_name, splits_by_name(again));
  EXPECT_NE(by_name, splits_by_name(other));
  EXPECT_EQ(a.images, again.images);
  EXPECT_EQ(a.num_images(), 20);

  o.ratio = parse_split_ratio("0.5,0.25,0.25", "--split-ratio");
  const StoreContents half = pack_folder(root.string(), o);
  EXPECT_EQ(half.splits.at("train").size(), 10u);
  EXPECT_EQ(half.splits.at("val").size(), 5u);
  EXPECT_EQ(half.string_attrs.at("split_method"), "ratio:0.5,0.25,0.25 seed 4");

  o.ratio = parse_split_ratio("0.9,0.05,0.05", "--split-ratio");  // 20 * 0.05 = 1: fine
  EXPECT_EQ(pack_folder(root.string(), o).splits.at("val").size(), 1u);
  o.ratio = parse_split_ratio("0.96,0.02,0.02", "--split-ratio");  // 0.4 -> 0 classes
  expect_rejected(
      root, o,
      {"--split-ratio 0.96,0.02,0.02", "split val without a class", root.string(), "20 classes"});
}

TEST(FolderPacker, SplitListsAssignTheNamedClasses) {
  const fs::path dir = scratch("lists");
  const fs::path root = dir / "flat";
  write_flat_classes(root, 5);
  write_text(dir / "train.txt", "class00\nclass03\n\nclass04\n");
  write_text(dir / "val.txt", "class01\r\n");
  write_text(dir / "test.txt", "class02\n");
  FolderPackOptions o = with_format(4, 4, 1);
  o.split_lists = {(dir / "train.txt").string(), (dir / "val.txt").string(),
                   (dir / "test.txt").string()};
  const StoreContents c = pack_folder(root.string(), o);
  EXPECT_EQ(c.class_names,
            (std::vector<std::string>{"class00", "class03", "class04", "class01", "class02"}));
  EXPECT_EQ(c.splits.at("val"), (std::vector<int32_t>{3}));
  EXPECT_EQ(c.string_attrs.at("split_method"), "lists:train.txt,val.txt,test.txt");
  EXPECT_NE(c.string_attrs.at("source_sha256").find(";val.txt:"), std::string::npos);

  write_text(dir / "test.txt", "class02\nclass09\n");
  expect_rejected(root, o, {"test.txt' line 2", "'class09'", "not in"});
  write_text(dir / "test.txt", "class02\nclass03\n");
  expect_rejected(root, o, {"test.txt' line 2", "'class03' again", "train.txt' line 2"});
  write_text(dir / "test.txt", "");
  expect_rejected(root, o, {"class02", "none of the split lists"});
  write_text(dir / "test.txt", "class02\n");
  o.ratio = SplitRatio{};
  expect_rejected(root, o, {"not both"});
}

// The CSV rows for the split fixture, paths relative to `prefix`, in a shuffled column order.
std::string fixture_csv(const std::string& prefix, bool with_split) {
  std::string csv = with_split ? "class,split,file\n" : "class,file\n";
  for (const auto& [split, classes] : kSplits)
    for (const std::string& c : classes)
      for (const FixtureImage& img : class_images(class_seed(c)))
        csv += c + (with_split ? "," + split : "") + "," + prefix + split + "/" + c + "/" +
               img.file + "\n";
  return csv;
}

TEST(FolderPacker, CsvLayoutEqualsTheFolderLayout) {
  const fs::path dir = scratch("csv");
  const fs::path root = dir / "animals";
  write_split_fixture(root);
  const FolderPackOptions folders = with_format(14, 10, 3);
  const StoreContents want = pack_folder(root.string(), folders);

  write_text(root / "labels.csv", fixture_csv("./", true));  // relative to the CSV's folder
  FolderPackOptions o = folders;
  o.csv = (root / "labels.csv").string();
  const StoreContents c = pack_folder("", o);
  EXPECT_EQ(c.images, want.images);
  EXPECT_EQ(c.labels, want.labels);
  EXPECT_EQ(c.class_names, want.class_names);
  EXPECT_EQ(c.splits, want.splits);
  EXPECT_EQ(c.dataset, "animals");
  EXPECT_EQ(c.string_attrs.at("split_method"), "csv:labels.csv");

  write_text(dir / "elsewhere" / "list.csv", fixture_csv("", true));  // relative to the root
  o.csv = (dir / "elsewhere" / "list.csv").string();
  EXPECT_EQ(pack_folder(root.string(), o).images, want.images);
  o.ratio = SplitRatio{};
  expect_rejected(root, o, {"--split-ratio given", "list.csv", "split column"});

  write_text(dir / "elsewhere" / "nosplit.csv", fixture_csv("", false));  // ratio split
  o.csv = (dir / "elsewhere" / "nosplit.csv").string();
  o.ratio = parse_split_ratio("0.5,0.25,0.25", "--split-ratio");
  const StoreContents r = pack_folder(root.string(), o);
  EXPECT_EQ(r.splits.at("train").size(), 2u);  // 6 classes: val 1.5 -> 2, test 2
  EXPECT_EQ(r.string_attrs.at("split_method"), "ratio:0.5,0.25,0.25 seed 0");
  EXPECT_NE(r.string_attrs.at("source_sha256").find(";nosplit.csv:"), std::string::npos);
}

TEST(FolderPacker, DamagedCsvsAreRejectedNamingTheLine) {
  const fs::path dir = scratch("badcsv");
  const fs::path root = dir / "animals";
  write_split_fixture(root);
  FolderPackOptions o = with_format(8, 8, 3);
  o.csv = (dir / "rows.csv").string();
  auto rejected = [&](const std::string& rows, const std::vector<std::string>& parts) {
    write_text(dir / "rows.csv", "file,class,split\n" + rows);
    expect_rejected(root, o, parts);
  };
  const std::string good = "train/yak/a_rgb.jpg,yak,train\n";
  rejected(good + "train/yak/missing.png,yak,train\n",
           {"rows.csv' line 3", "'train/yak/missing.png'", "not in"});
  rejected(good + "val/bee/a_rgb.jpg,yak,val\n", {"rows.csv' line 3", "'yak'", "one split"});
  rejected(good + "val/bee/a_rgb.jpg,bee,holdout\n", {"line 3", "'holdout'", "train, val or test"});
  rejected(good + good, {"line 3", "again"});
  rejected(good + "val/bee/a_rgb.jpg,bee\n", {"line 3", "2 fields, expected 3"});
  rejected("", {"holds no classes"});
  write_text(dir / "rows.csv", "path,label\nx.png,a\n");
  expect_rejected(root, o, {"rows.csv' is missing column 'file'", "file,class,split"});
  o.csv = (dir / "absent.csv").string();
  expect_rejected(root, o, {"absent.csv' does not exist"});
}

TEST(FolderPacker, DamagedTreesAreRejectedNamingTheFile) {
  const fs::path root = scratch("badtree") / "animals";
  write_split_fixture(root);
  const FolderPackOptions o = with_format(8, 8, 1);
  ASSERT_EQ(pack_folder(root.string(), o).num_images(), 30);

  const fs::path png = root / "train" / "yak" / "c_rgb.png";
  const Bytes good_png = read_bytes(png);
  write_file(png, Bytes(good_png.begin(), good_png.begin() + good_png.size() / 2));
  expect_rejected(root, o, {"train/yak/c_rgb.png' is a corrupt PNG"});
  write_file(png, good_png);

  const fs::path jpg = root / "test" / "cat" / "a_rgb.jpg";
  const Bytes good_jpg = read_bytes(jpg);
  write_file(jpg, Bytes(good_jpg.begin(), good_jpg.begin() + good_jpg.size() / 2));
  expect_rejected(root, o, {"test/cat/a_rgb.jpg' is a corrupt JPEG"});
  write_file(jpg, good_jpg);

  write_text(root / "val" / "bee" / "notes.gif", "GIF89a");
  expect_rejected(root, o, {"val/bee/notes.gif' is not a PNG or JPEG", "remove it"});
  fs::remove(root / "val" / "bee" / "notes.gif");

  write_file(root / "val" / "bee" / "more" / "x.png", good_png);
  expect_rejected(root, o, {"val/bee/more/x.png' is in a folder inside a class folder"});
  fs::remove_all(root / "val" / "bee" / "more");

  fs::create_directories(root / "train" / "gnu");
  expect_rejected(root, o, {"train/gnu/' holds no PNG or JPEG images"});
  fs::remove(root / "train" / "gnu");

  write_file(root / "val" / "yak" / "a.png", good_png);
  expect_rejected(root, o, {"class 'yak'", "train/yak/", "val/yak/", "one split"});
  fs::remove_all(root / "val" / "yak");

  fs::rename(root / "val" / "bee", root / "test" / "bee");
  expect_rejected(root, o, {"split val of '" + root.string() + "' has no class"});
  fs::rename(root / "test" / "bee", root / "val" / "bee");

  FolderPackOptions ratio = o;
  ratio.ratio = SplitRatio{};
  expect_rejected(root, ratio, {"--split-ratio given", "train/, val/, test/ folders"});
  expect_rejected(root.parent_path() / "absent", o, {"absent' does not exist"});
  expect_rejected(root, with_format(8, 8, 2), {"channels=2 is not 1 or 3"});
  expect_rejected(root, with_format(0, 8, 3), {"size 0x8"});
}

// The built program, as a user runs it.
TEST(MetapackFolder, PacksAGoodTreeAndExitsWith2OnACorruptImage) {
  const fs::path dir = scratch("program");
  const fs::path root = dir / "tiny";
  write_flat_classes(root, 6);
  const std::string out = (dir / "tiny.h5").string();
  const testing::ProgramResult ok = testing::run_program(
      "metapack", "folder -o " + out + " " + root.string() +
                      " --size 12x10 --channels 3 --split-ratio 0.5,0.25,0.25 --split-seed 7");
  ASSERT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_NE(ok.output.find("metapack folder: wrote " + out), std::string::npos) << ok.output;
  EXPECT_NE(ok.output.find("classes 6 (train 2, val 2, test 2), images 6 of 12x10x3"),
            std::string::npos)
      << ok.output;
  EXPECT_NE(ok.output.find("split: ratio:0.5,0.25,0.25 seed 7"), std::string::npos) << ok.output;
  const StoreContents c = read_store(out);
  EXPECT_EQ(c.dataset, "tiny");
  EXPECT_EQ(c.string_attrs.at("created_by"), "metapack folder");

  const std::string bad = (dir / "bad.h5").string();
  write_text(root / "class03" / "img.png", "\x89PNG\r\n\x1a\n broken");
  const testing::ProgramResult corrupt =
      testing::run_program("metapack", "folder -o " + bad + " " + root.string() + " --size 12");
  EXPECT_EQ(corrupt.exit_code, 2) << corrupt.output;
  EXPECT_NE(corrupt.output.find("class03/img.png' is a corrupt PNG"), std::string::npos)
      << corrupt.output;
  EXPECT_FALSE(fs::exists(bad));

  for (const std::string& args : {"--channels 2", "--size 12x", "--split-ratio 0.5,0.5"}) {
    const testing::ProgramResult r =
        testing::run_program("metapack", "folder -o " + bad + " " + root.string() + " " + args);
    EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.output;
  }
  const testing::ProgramResult help = testing::run_program("metapack", "--help");
  EXPECT_NE(help.output.find("--split-ratio T,V,S"), std::string::npos) << help.output;
}

}  // namespace
}  // namespace mt
