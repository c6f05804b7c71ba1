// Tests of the HDF5 episode store: round trip and byte-reproducible writes, every malformed file
// rejected at open with a message naming the file and the problem, checksums of every chunk and
// the store written by the build before them, impossible episode specs,
// and the sampler's statistics (uniform classes and examples, support and query disjoint,
// content a function of (seed, step, task) only).
#include "data/episode_store.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/checkpoint.h"
#include "core/hdf5.h"
#include "tests/support/errors.h"
#include "tests/support/h5_damage.h"
#include "tests/support/programs.h"

namespace mt {
namespace {

namespace fs = std::filesystem;

// Image i of a fixture is 2x2x1 with pixels (i % 256, i / 256, 7, 255 - i % 256): its index can
// be read back from any episode.
constexpr int kSide = 2;

StoreContents fixture(int classes, int per_class) {
  StoreContents c;
  c.dataset = "fixture";
  c.height = c.width = kSide;
  c.channels = 1;
  c.class_offsets = {0};
  for (int k = 0; k < classes; ++k) {
    c.class_names.push_back("class" + std::to_string(k));
    for (int j = 0; j < per_class; ++j) {
      const int i = static_cast<int>(c.labels.size());
      c.images.insert(c.images.end(), {static_cast<uint8_t>(i % 256), static_cast<uint8_t>(i / 256),
                                       7, static_cast<uint8_t>(255 - i % 256)});
      c.labels.push_back(k);
    }
    c.class_offsets.push_back(static_cast<int64_t>(c.labels.size()));
  }
  // Classes 0 .. classes-3 train, the last two test, val empty.
  for (int k = 0; k < classes; ++k) c.splits[k < classes - 2 ? "train" : "test"].push_back(k);
  c.splits["val"] = {};
  c.string_attrs["created_by"] = "episode_store_test";
  c.string_attrs["source_sha256"] = "none";
  return c;
}

int64_t index_of(const float* img) {
  return std::lround(img[0] * 255) + 256 * std::lround(img[1] * 255);
}

using testing::usage_error;

std::vector<char> bytes_of(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<char>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

TEST(EpisodeStore, RoundTripsAndRewritesByteIdentically) {
  const std::string dir = testing::temp_dir("store_roundtrip");
  StoreContents c = fixture(6, 5);
  c.episodes.ways = 2;
  c.episodes.shots = 1;
  c.episodes.queries = 2;
  c.episodes.support = {0, 5, 10, 15};
  c.episodes.query = {1, 2, 6, 7, 11, 12, 16, 17};
  write_store(dir + "/a.h5", c);
  write_store(dir + "/b.h5", c);
  EXPECT_EQ(bytes_of(dir + "/a.h5"), bytes_of(dir + "/b.h5"));
  EXPECT_FALSE(fs::exists(dir + "/a.h5.tmp." + std::to_string(getpid())));

  const StoreContents back = read_store(dir + "/a.h5");
  EXPECT_EQ(back.dataset, c.dataset);
  EXPECT_EQ(back.images, c.images);
  EXPECT_EQ(back.labels, c.labels);
  EXPECT_EQ(back.class_offsets, c.class_offsets);
  EXPECT_EQ(back.class_names, c.class_names);
  EXPECT_EQ(back.splits, c.splits);
  EXPECT_EQ(back.string_attrs, c.string_attrs);
  EXPECT_EQ(back.episodes.support, c.episodes.support);
  EXPECT_EQ(back.episodes.query, c.episodes.query);

  const EpisodeStore store(dir + "/a.h5");
  EXPECT_EQ(store.num_classes("train"), 4);
  EXPECT_EQ(store.num_classes("test"), 2);
  EXPECT_EQ(store.num_fixed_episodes(), 2);
  Episode<float> ep;
  store.fixed_episode(1, ep);
  ASSERT_EQ(ep.support.n, 2);
  ASSERT_EQ(ep.query.n, 4);
  EXPECT_EQ(index_of(&ep.support.x[0]), 10);
  EXPECT_EQ(index_of(&ep.support.x[4]), 15);
  EXPECT_EQ(index_of(&ep.query.x[3 * 4]), 17);
  EXPECT_EQ(ep.query.y, (std::vector<int32_t>{0, 0, 1, 1}));
  EXPECT_NE(usage_error([&] { store.fixed_episode(2, ep); }).find("episode 2 does not exist"),
            std::string::npos);
}

// Writes a valid fixture store, lets `damage` change it, and returns the open error.
std::string open_error(const std::string& name, const std::function<void(h5::File&)>& damage) {
  const std::string path = testing::temp_dir("store_bad_" + name) + "/store.h5";
  write_store(path, fixture(6, 5));
  {
    h5::File f = h5::File::open_write(path);
    damage(f);
    f.close();
  }
  const std::string msg = usage_error([&] { EpisodeStore s(path); });
  EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << "message must start with the file: " << msg;
  return msg;
}

TEST(EpisodeStore, MalformedFilesAreRejectedAtOpenNamingTheProblem) {
  auto has = [](const std::string& msg, const std::string& part) {
    return msg.find(part) != std::string::npos;
  };
  std::string m = open_error("version", [](h5::File& f) { f.set_attr("/", "format_version", 7); });
  EXPECT_TRUE(has(m, "format_version 7 is not supported")) << m;

  m = open_error("offsets", [](h5::File& f) {
    const std::vector<int64_t> bad = {0, 5, 10, 40, 20, 25, 30};
    f.write<int64_t>("/class_offsets", {7}, bad.data());
  });
  EXPECT_TRUE(has(m, "/class_offsets out of range: class 2")) << m;

  m = open_error("offsets_end", [](h5::File& f) {
    const std::vector<int64_t> bad = {0, 5, 10, 15, 20, 25, 29};
    f.write<int64_t>("/class_offsets", {7}, bad.data());
  });
  EXPECT_TRUE(has(m, "/class_offsets runs from 0 to 29, expected 0 to 30")) << m;

  m = open_error("labels", [](h5::File& f) {
    std::vector<int32_t> labels = f.read<int32_t>("/labels");
    labels[12] = 4;
    f.write<int32_t>("/labels", {30}, labels.data());
  });
  EXPECT_TRUE(has(m, "/labels does not match /class_offsets: image 12 has label 4")) << m;

  m = open_error("split", [](h5::File& f) {
    const std::vector<int32_t> bad = {0, 1, 9};
    f.write<int32_t>("/splits/train", {3}, bad.data());
  });
  EXPECT_TRUE(has(m, "split 'train' names class 9, which does not exist (6 classes)")) << m;

  m = open_error("overlap", [](h5::File& f) {
    const std::vector<int32_t> bad = {0, 1, 2, 3, 4};
    f.write<int32_t>("/splits/train", {5}, bad.data());
  });
  EXPECT_TRUE(has(m, "class 4 ('class4') is listed twice in the splits")) << m;

  m = open_error("shape", [](h5::File& f) {
    f.set_attr("/", "image_shape", std::vector<int64_t>{3, 3, 1});
  });
  EXPECT_TRUE(has(m, "not matching image_shape [3, 3, 1]")) << m;

  m = open_error("type", [](h5::File& f) {
    const std::vector<double> wrong(30, 0.0);
    f.write<double>("/labels", {30}, wrong.data());
  });
  EXPECT_TRUE(has(m, "/labels holds")) << m;
}

TEST(EpisodeStore, HugeDeclaredSizesAreRejectedBeforeAnyAllocation) {
  const std::string dir = testing::temp_dir("store_huge");
  write_store(dir + "/labels.h5", fixture(6, 5));
  testing::declare_unwritten(dir + "/labels.h5", "/labels", {hsize_t{1} << 41}, H5T_STD_I32LE);
  std::string m = usage_error([&] { EpisodeStore s(dir + "/labels.h5"); });
  EXPECT_NE(m.find("/labels holds 2199023255552 entries, more than the 30"), std::string::npos)
      << m;

  write_store(dir + "/images.h5", fixture(6, 5));
  {
    h5::File f = h5::File::open_write(dir + "/images.h5");
    f.set_attr("/", "image_shape", std::vector<int64_t>{4096, 4096, 4096});
    f.close();
  }
  testing::declare_unwritten(dir + "/images.h5", "/images", {30, 4096, 4096, 4096}, H5T_STD_U8LE);
  m = usage_error([&] { EpisodeStore s(dir + "/images.h5"); });
  EXPECT_NE(m.find("makes images larger than 67108864 bytes"), std::string::npos) << m;

  write_store(dir + "/count.h5", fixture(6, 5));
  testing::declare_unwritten(dir + "/count.h5", "/images", {hsize_t{1} << 40, 2, 2, 1},
                             H5T_STD_U8LE);
  m = usage_error([&] { EpisodeStore s(dir + "/count.h5"); });
  EXPECT_NE(m.find("images, more than a"), std::string::npos) << m;
}

TEST(EpisodeStore, MissingTruncatedAndForeignFilesAreRejected) {
  const std::string dir = testing::temp_dir("store_files");
  std::string m = usage_error([&] { EpisodeStore s(dir + "/nope.h5"); });
  EXPECT_NE(m.find(dir + "/nope.h5: cannot open: No such file"), std::string::npos) << m;

  write_store(dir + "/good.h5", fixture(6, 5));
  const std::vector<char> good = bytes_of(dir + "/good.h5");
  std::ofstream(dir + "/cut.h5", std::ios::binary).write(good.data(), good.size() / 2);
  m = usage_error([&] { EpisodeStore s(dir + "/cut.h5"); });
  EXPECT_EQ(m.rfind(dir + "/cut.h5: ", 0), 0u) << m;

  std::ofstream(dir + "/text.h5") << "not hdf5 at all\n";
  m = usage_error([&] { EpisodeStore s(dir + "/text.h5"); });
  EXPECT_NE(m.find("not an HDF5 file"), std::string::npos) << m;

  // A store whose /labels dataset is missing.
  {
    h5::File f = h5::File::create(dir + "/partial.h5");
    f.set_attr("/", "format_version", kStoreFormatVersion);
    f.set_attr("/", "dataset", "fixture");
    f.set_attr("/", "image_shape", std::vector<int64_t>{2, 2, 1});
    const std::vector<uint8_t> img(4, 0);
    f.write<uint8_t>("/images", {1, 2, 2, 1}, img.data());
    f.close();
  }
  m = usage_error([&] { EpisodeStore s(dir + "/partial.h5"); });
  EXPECT_NE(m.find(dir + "/partial.h5: missing dataset /labels"), std::string::npos) << m;

  // An HDF5 file of another kind: a checkpoint.
  h5::File other = h5::File::create(dir + "/other.h5");
  other.write_scalar<int64_t>("/state/step", 3);
  other.close();
  m = usage_error([&] { EpisodeStore s(dir + "/other.h5"); });
  EXPECT_NE(m.find("not an episode store (no format_version attribute)"), std::string::npos) << m;
}

TEST(EpisodeStore, WriterRefusesInvalidContentsAndLeavesNoFile) {
  const std::string dir = testing::temp_dir("store_refuse");
  StoreContents c = fixture(4, 3);
  c.labels[4] = 0;
  const std::string m = usage_error([&] { write_store(dir + "/x.h5", c); });
  EXPECT_NE(m.find("refusing to write an invalid store: /labels does not match"), std::string::npos)
      << m;
  EXPECT_TRUE(fs::is_empty(dir));
}

TEST(EpisodeStore, ImpossibleEpisodeSpecsNameTheKey) {
  const std::string path = testing::temp_dir("store_spec") + "/s.h5";
  write_store(path, fixture(6, 5));
  const EpisodeStore store(path);
  auto err = [&](const EpisodeSpec& s) { return usage_error([&] { store.validate(s); }); };
  EXPECT_EQ(err({"train", 4, 1, 4}), "");
  EXPECT_NE(err({"train", 5, 1, 1}).find("task.ways = 5 exceeds the 4 classes of split 'train'"),
            std::string::npos);
  EXPECT_NE(err({"train", 2, 2, 4}).find("task.shots + task.queries = 6 exceeds the 5 examples"),
            std::string::npos);
  EXPECT_NE(err({"val", 2, 1, 1}).find("split 'val' of " + path + " has no classes"),
            std::string::npos);
  EXPECT_NE(err({"holdout", 2, 1, 1}).find("split 'holdout' does not exist"), std::string::npos);
}

// Over many episodes every class of the split and every image of a class is drawn about equally
// often; support and query never share an image; labels follow the class-major layout.
TEST(EpisodeStore, SamplerIsUniformAndKeepsSupportAndQueryDisjoint) {
  constexpr int kClasses = 22, kPerClass = 10, kEpisodes = 4000;
  const std::string path = testing::temp_dir("store_stats") + "/s.h5";
  write_store(path, fixture(kClasses, kPerClass));
  const EpisodeStore store(path);
  const EpisodeSpec spec{"train", 5, 2, 3};
  std::vector<int64_t> class_count(kClasses, 0), image_count(kClasses * kPerClass, 0);
  Episode<float> ep;
  for (int e = 0; e < kEpisodes; ++e) {
    store.sample(spec, 11, e / 8, e % 8, ep);
    ASSERT_EQ(ep.support.n, 10);
    ASSERT_EQ(ep.query.n, 15);
    std::set<int64_t> seen;
    std::vector<int64_t> class_of_label(5, -1);
    for (const Batch<float>* b : {&ep.support, &ep.query}) {
      for (int i = 0; i < b->n; ++i) {
        const int64_t img = index_of(&b->x[i * kSide * kSide]);
        ASSERT_TRUE(seen.insert(img).second) << "image " << img << " twice in episode " << e;
        const int64_t k = img / kPerClass;
        if (class_of_label[b->y[i]] < 0) class_of_label[b->y[i]] = k;
        ASSERT_EQ(class_of_label[b->y[i]], k) << "label " << b->y[i] << " mixes classes";
        ++image_count[img];
      }
    }
    for (int64_t k : class_of_label) ++class_count[k];
  }
  // Classes: Binomial(E, 5/20) per train class; images: each appearance of a class takes 5 of
  // its 10 images, so Binomial(class count, 1/2). Bound: 5 standard deviations (a fixed seed,
  // so this is deterministic; 5σ leaves room for any correct sampler).
  const int train = kClasses - 2;
  for (int k = 0; k < kClasses; ++k) {
    if (k >= train) {
      EXPECT_EQ(class_count[k], 0) << "test class " << k << " drawn in train episodes";
      continue;
    }
    const double p = 5.0 / train, mean = kEpisodes * p, sd = std::sqrt(kEpisodes * p * (1 - p));
    EXPECT_LT(std::abs(class_count[k] - mean), 5 * sd) << "class " << k;
    for (int j = 0; j < kPerClass; ++j) {
      const double n = class_count[k], im = n * 0.5, isd = std::sqrt(n * 0.25);
      EXPECT_LT(std::abs(image_count[k * kPerClass + j] - im), 5 * isd) << "image " << j;
    }
  }
}

TEST(EpisodeStore, EpisodeIsAFunctionOfSeedStepAndTaskOnly) {
  const std::string path = testing::temp_dir("store_keys") + "/s.h5";
  write_store(path, fixture(12, 6));
  const EpisodeStore a(path), b(path);
  const EpisodeSpec spec{"train", 3, 1, 2};
  Episode<float> x, y, z;
  a.sample(spec, 5, 17, 3, x);
  b.sample(spec, 5, 2, 0, z);  // another key in between, on another reader
  b.sample(spec, 5, 17, 3, y);
  EXPECT_EQ(x.support.x, y.support.x);
  EXPECT_EQ(x.query.x, y.query.x);
  a.sample(spec, 5, 17, 4, z);
  EXPECT_NE(x.support.x, z.support.x);
  a.sample(spec, 6, 17, 3, z);
  EXPECT_NE(x.support.x, z.support.x);
}

TEST(EpisodeStore, EveryChunkCarriesAChecksumVerifiedOnRead) {
  const std::string dir = testing::temp_dir("store_checksums");
  StoreContents c = fixture(6, 5);
  c.episodes = {2, 1, 1, {0, 7, 10, 15}, {1, 8, 11, 16}};
  write_store(dir + "/good.h5", c);
  {
    const h5::File f = h5::File::open_read(dir + "/good.h5");
    for (const char* d : {"/images", "/labels", "/class_offsets", "/class_names", "/splits/train",
                          "/splits/test", "/episodes/support", "/episodes/query"})
      EXPECT_TRUE(f.has_checksum(d)) << d;
    EXPECT_FALSE(f.has_checksum("/splits/val"));  // empty: nothing stored
  }
  const std::vector<char> good = bytes_of(dir + "/good.h5");
  auto damaged = [&](const std::string& name, const std::string& dataset,
                     std::vector<hsize_t> coord) {
    const std::string path = dir + "/" + name + ".h5";
    std::ofstream(path, std::ios::binary).write(good.data(), good.size());
    testing::flip_chunk_byte(path, dataset, 1, std::move(coord));
    return path;
  };
  // An image chunk: the store opens (only the images an episode needs are read), and the episode
  // holding image 7 fails naming the file, the dataset and the row.
  std::string path = damaged("image7", "/images", {7, 0, 0, 0});
  const EpisodeStore store(path);
  Episode<float> ep;
  store.fixed_episode(1, ep);  // images 10, 15, 11, 16
  std::string m = usage_error([&] { store.fixed_episode(0, ep); });
  EXPECT_EQ(m, path +
                   ": dataset /images fails its Fletcher-32 checksum in rows [7, 8): the file "
                   "is damaged; re-pack it with metapack or copy it again")
      << m;
  EXPECT_THROW(store.fixed_episode(0, ep), h5::ChecksumError);
  m = usage_error([&] { read_store(path); });
  EXPECT_NE(m.find(path + ": dataset /images fails its Fletcher-32 checksum"), std::string::npos)
      << m;
  // Index datasets are read at open.
  for (const char* d : {"/labels", "/class_offsets", "/class_names", "/episodes/query"}) {
    path = damaged("index", d, {});
    m = usage_error([&] { EpisodeStore s(path); });
    EXPECT_EQ(m, path + ": dataset " + d +
                     " fails its Fletcher-32 checksum: the file is damaged; "
                     "re-pack it with metapack or copy it again")
        << m;
  }
}

TEST(EpisodeStore, RanksAndShapesOfIndexDatasetsAreChecked) {
  std::string m = open_error("labels_rank", [](h5::File& f) {
    const std::vector<int32_t> labels = f.read<int32_t>("/labels");
    f.write<int32_t>("/labels", {30, 1}, labels.data());
  });
  EXPECT_NE(m.find("/labels has 2 dimensions, expected 1"), std::string::npos) << m;
  m = open_error("split_rank", [](h5::File& f) {
    const std::vector<int32_t> train = {0, 1, 2, 3};
    f.write<int32_t>("/splits/train", {2, 2}, train.data());
  });
  EXPECT_NE(m.find("/splits/train has 2 dimensions, expected 1"), std::string::npos) << m;

  // Fixed episodes stored transposed ([ways*shots, E] instead of [E, ways*shots]).
  const std::string path = testing::temp_dir("store_bad_episodes") + "/store.h5";
  StoreContents c = fixture(6, 5);
  c.episodes = {2, 1, 1, {0, 5, 10, 15, 20, 25}, {1, 6, 11, 16, 21, 26}};
  write_store(path, c);
  {
    h5::File f = h5::File::open_write(path);
    f.write<int64_t>("/episodes/support", {2, 3}, c.episodes.support.data());
    f.close();
  }
  m = usage_error([&] { EpisodeStore s(path); });
  EXPECT_NE(m.find("/episodes/support has shape [2, 3] and /episodes/query [3, 2], expected "
                   "[E, 2] and [E, 2] for ways = 2, shots = 1, queries = 1"),
            std::string::npos)
      << m;
}

// tests/data/fixtures/store_pre_checksum.h5 was packed by the build before checksums (no filters,
// variable-length names): it must open and serve what it served then.
TEST(EpisodeStore, StoreOfTheBuildBeforeChecksumsStillOpens) {
  const std::string path =
      std::string(MT_SOURCE_DIR) + "/tests/data/fixtures/store_pre_checksum.h5";
  const EpisodeStore store(path);
  EXPECT_EQ(store.dataset(), "omniglot");
  EXPECT_EQ(store.num_classes("train"), 24);
  EXPECT_EQ(store.num_classes("test"), 2);
  {
    const h5::File f = h5::File::open_read(path);
    EXPECT_FALSE(f.has_checksum("/images"));
    EXPECT_FALSE(f.has_checksum("/class_names"));
  }
  const StoreContents c = read_store(path);
  EXPECT_EQ(c.num_images(), 84);
  EXPECT_EQ(c.class_names[0], "Balinese/character01");
  // Rewritten by this build: the same contents, now with checksums.
  const std::string copy = testing::temp_dir("store_old_rewrite") + "/store.h5";
  write_store(copy, c);
  const StoreContents again = read_store(copy);
  EXPECT_EQ(again.images, c.images);
  EXPECT_EQ(again.class_names, c.class_names);
  EXPECT_TRUE(h5::File::open_read(copy).has_checksum("/images"));
  Episode<float> a, b;
  store.sample({"test", 2, 1, 1}, 3, 4, 5, a);
  EpisodeStore(copy).sample({"test", 2, 1, 1}, 3, 4, 5, b);
  EXPECT_EQ(a.support.x, b.support.x);
  EXPECT_EQ(a.query.x, b.query.x);
}

}  // namespace
}  // namespace mt

namespace mt {
namespace {

// data.path pointing at something that is not a store: the message says what it is and what
// to run (metapack, with the exact command for raw data).
TEST(EpisodeStore, WhatIsNotAStoreIsNamedWithTheCommandThatPacksIt) {
  const std::string dir = testing::temp_dir("store_not_a_store");
  const std::string zip = dir + "/images_background.zip", runs = dir + "/all_runs.zip";
  for (const std::string& p : {zip, runs}) std::ofstream(p) << "PK not really a zip";
  std::filesystem::create_directories(dir + "/folder/train");
  auto message = [](const std::string& path) {
    return testing::usage_error([&] { EpisodeStore s(path); });
  };
  const std::string missing = message(dir + "/missing.h5");
  EXPECT_NE(missing.find("No such file"), std::string::npos) << missing;
  EXPECT_NE(missing.find("data.path"), std::string::npos) << missing;
  EXPECT_NE(missing.find("glyphs"), std::string::npos) << missing;
  const std::string z = message(zip);
  EXPECT_NE(z.find("zip archive"), std::string::npos) << z;
  EXPECT_NE(z.find("build/bin/metapack omniglot -o data/omniglot.h5 " + zip), std::string::npos)
      << z;
  const std::string r = message(runs);
  EXPECT_NE(r.find("build/bin/metapack omniglot-lake -o data/all_runs.h5 " + runs),
            std::string::npos)
      << r;
  const std::string f = message(dir + "/folder");
  EXPECT_NE(f.find("is a folder"), std::string::npos) << f;
  EXPECT_NE(f.find("build/bin/metapack miniimagenet -o data/folder.h5 " + dir + "/folder"),
            std::string::npos)
      << f;
}

}  // namespace
}  // namespace mt
