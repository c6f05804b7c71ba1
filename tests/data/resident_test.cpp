// Resident episode stores (data.resident): the file path, the host-resident path and the host
// twin of the device gather serve the same floats bit for bit (training split and fixed
// episodes; 1, 2 and 3 channels), indices-only episodes carry the same labels and sources, the
// batched rows of pack_rows gathered equal pack_examples, a damaged image fails at open with
// the file path's message, and plan_residency follows its budgets.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/device.h"
#include "data/episode_store.h"
#include "data/residency.h"
#include "data/resident_gather.h"
#include "data/resident_images.h"
#include "models/batched_net.h"  // pack_examples, the layout pack_rows lists
#include "tests/support/bits.h"
#include "tests/support/errors.h"
#include "tests/support/h5_damage.h"
#include "tests/support/programs.h"

namespace mt {
namespace {

using testing::usage_error;

struct ImageCase {
  const char* name;
  int height, width, channels;
};

// `classes` classes of `per_class` images of random bytes (every value 0..255 occurs); classes
// 0 .. classes-3 train, the last two test; four fixed 3-way 1-shot 2-query episodes.
StoreContents random_store(const ImageCase& s, int classes, int per_class) {
  StoreContents c;
  c.dataset = "resident-test";
  c.height = s.height;
  c.width = s.width;
  c.channels = s.channels;
  c.class_offsets = {0};
  for (int k = 0; k < classes; ++k) {
    c.class_names.push_back("class" + std::to_string(k));
    c.labels.insert(c.labels.end(), per_class, k);
    c.class_offsets.push_back(static_cast<int64_t>(c.labels.size()));
    c.splits[k < classes - 2 ? "train" : "test"].push_back(k);
  }
  c.splits["val"] = {};
  c.images.resize(c.labels.size() * c.image_bytes());
  uint64_t x = 0x2545f4914f6cdd1dull;
  for (uint8_t& b : c.images) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    b = static_cast<uint8_t>(x >> 24);
  }
  c.episodes.ways = 3;
  c.episodes.shots = 1;
  c.episodes.queries = 2;
  for (int e = 0; e < 4; ++e)
    for (int k = 0; k < 3; ++k) {
      const int64_t first = c.class_offsets[(e + k) % classes];
      c.episodes.support.push_back(first + e);
      c.episodes.query.insert(c.episodes.query.end(), {first + e + 1, first + per_class - 1 - e});
    }
  return c;
}

using testing::expect_same_bits;

// The file path's batch `file` against the host-resident one, the indices-only one and the host
// twin of the device gather over the resident images, and its pixels against the stored bytes.
void expect_same_batch(const Batch<float>& file, const Batch<float>& host,
                       const Batch<float>& indices, const EpisodeStore& store,
                       const StoreContents& c, const std::string& what) {
  ASSERT_EQ(static_cast<int>(file.source.size()), file.n) << what;
  EXPECT_EQ(host.source, file.source) << what;
  EXPECT_EQ(host.y, file.y) << what;
  EXPECT_EQ(indices.source, file.source) << what;
  EXPECT_EQ(indices.y, file.y) << what;
  EXPECT_EQ(indices.n, file.n) << what;
  EXPECT_TRUE(indices.x.empty()) << what << ": indices-only episodes carry no pixels";
  expect_same_bits(host.x, file.x, what + ", host resident vs file");
  const ResidentShape s = store.resident_shape();
  std::vector<float> twin(static_cast<size_t>(file.n * s.item()));
  gather_rows_host(store.resident_images(), s, file.source.data(), file.n, twin.data());
  expect_same_bits(twin, file.x, what + ", device gather's host twin vs file");
  // Independently of resident_pixel: example i is image source[i], channel-first, / 255.
  for (int i = 0; i < file.n; ++i)
    for (int64_t p = 0; p < s.pixels; ++p)
      for (int ch = 0; ch < s.channels; ++ch) {
        const uint8_t byte = c.images[(file.source[i] * s.pixels + p) * s.channels + ch];
        const float got = file.x[i * s.item() + ch * s.pixels + p];
        ASSERT_NEAR(got, byte / 255.0, 1e-7) << what << ": example " << i << " pixel " << p;
      }
}

class ResidentModes : public ::testing::TestWithParam<ImageCase> {};

TEST_P(ResidentModes, FileHostAndTheDeviceTwinServeTheSameBits) {
  const ImageCase& shape = GetParam();
  const std::string path = testing::temp_dir(std::string("resident_") + shape.name) + "/s.h5";
  const StoreContents c = random_store(shape, 8, 20);
  write_store(path, c);
  const EpisodeStore file(path);
  const EpisodeStore host(path, {Residency::kHost});
  EpisodeStore indices(path, {Residency::kHost});
  indices.set_indices_only(true);
  ASSERT_EQ(file.residency(), Residency::kOff);
  ASSERT_EQ(host.residency(), Residency::kHost);
  EXPECT_EQ(file.resident_images(), nullptr);
  EXPECT_NE(host.name().find("(resident: host, "), std::string::npos) << host.name();
  ASSERT_EQ(host.num_images(), c.num_images());
  EXPECT_EQ(0, std::memcmp(host.resident_images(), c.images.data(), c.images.size()))
      << "the resident copy differs from the stored bytes";

  Episode<float> a, b, d;
  const EpisodeSpec spec{"train", 5, 1, 15};
  for (uint64_t step = 0; step < 3; ++step)
    for (uint64_t task = 0; task < 4; ++task) {
      file.sample(spec, 7, step, task, a);
      host.sample(spec, 7, step, task, b);
      indices.sample(spec, 7, step, task, d);
      const std::string what = "step " + std::to_string(step) + " task " + std::to_string(task);
      expect_same_batch(a.support, b.support, d.support, host, c, what + " support");
      expect_same_batch(a.query, b.query, d.query, host, c, what + " query");
      if (HasFatalFailure()) return;
    }
  for (int64_t e = 0; e < file.num_fixed_episodes(); ++e) {
    file.fixed_episode(e, a);
    host.fixed_episode(e, b);
    indices.fixed_episode(e, d);
    const std::string what = "fixed episode " + std::to_string(e);
    expect_same_batch(a.support, b.support, d.support, host, c, what + " support");
    expect_same_batch(a.query, b.query, d.query, host, c, what + " query");
    EXPECT_EQ(a.support.source[1], c.episodes.support[e * 3 + 1]) << what;
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, ResidentModes,
                         ::testing::Values(ImageCase{"omniglot", 28, 28, 1},
                                           ImageCase{"rgb", 84, 84, 3}, ImageCase{"odd2", 7, 5, 2}),
                         [](const auto& info) { return std::string(info.param.name); });

// The device path's rows: pack_rows over indices-only episodes, gathered by the host twin,
// equal pack_examples over the file path's episodes (the CUDA backend's x and y today).
TEST(ResidentRows, PackRowsGatheredEqualsPackExamples) {
  const std::string path = testing::temp_dir("resident_rows") + "/s.h5";
  const StoreContents c = random_store({"rgb", 10, 9, 3}, 8, 20);
  write_store(path, c);
  const EpisodeStore file(path);
  EpisodeStore indices(path, {Residency::kHost});
  indices.set_indices_only(true);
  const int T = 5;
  const EpisodeSpec spec{"train", 4, 2, 3};
  std::vector<Episode<float>> full(T), idx(T);
  std::vector<const Episode<float>*> pf, pi;
  for (int t = 0; t < T; ++t) {
    file.sample(spec, 3, 11, t, full[t]);
    indices.sample(spec, 3, 11, t, idx[t]);
    pf.push_back(&full[t]);
    pi.push_back(&idx[t]);
  }
  const ResidentShape s = indices.resident_shape();
  for (Split split : {Split::kSupport, Split::kQuery}) {
    const int n = split == Split::kSupport ? full[0].support.n : full[0].query.n;
    const int64_t rows = int64_t{n} * T;
    std::vector<float> want(static_cast<size_t>(rows * s.item())), got(want.size(), -1.0f);
    std::vector<int32_t> want_y(rows), got_y(rows, -1);
    std::vector<int64_t> index_of_row(rows, -1);
    pack_examples(pf, split, want.data(), want_y.data());
    pack_rows(pi, split, index_of_row.data(), got_y.data());
    gather_rows_host(indices.resident_images(), s, index_of_row.data(), rows, got.data());
    EXPECT_EQ(got_y, want_y);
    expect_same_bits(got, want, split == Split::kSupport ? "support rows" : "query rows");
  }
  // A batch without sources (not drawn from a store) is refused.
  idx[2].query.source.clear();
  std::vector<int64_t> index_of_row(int64_t{idx[0].query.n} * T);
  std::vector<int32_t> y(index_of_row.size());
  EXPECT_THROW(pack_rows(pi, Split::kQuery, index_of_row.data(), y.data()), Error);
}

// A damaged image fails the resident open with the message the file path gives when an episode
// reads it; the file path still opens.
TEST(ResidentStore, DamagedImageFailsAtOpenNamingTheImage) {
  const std::string path = testing::temp_dir("resident_damaged") + "/s.h5";
  write_store(path, random_store({"omniglot", 28, 28, 1}, 8, 20));
  testing::flip_chunk_byte(path, "/images", 1, {39, 0, 0, 0});  // in fixed episode 0 only
  const std::string expected =
      path +
      ": dataset /images fails its Fletcher-32 checksum in rows [39, "
      "40): the file is damaged; re-pack it with metapack or copy it again";
  for (Residency r : {Residency::kHost, Residency::kAuto}) {
    EXPECT_EQ(usage_error([&] { EpisodeStore s(path, {r}); }), expected) << to_string(r);
    EXPECT_THROW(EpisodeStore(path, {r}), h5::ChecksumError);
  }
  const EpisodeStore file(path);
  Episode<float> ep;
  EXPECT_EQ(usage_error([&] { file.fixed_episode(1, ep); }), "");
  EXPECT_EQ(usage_error([&] { file.fixed_episode(0, ep); }), expected);
}

// Device residency needs device=cuda and a GPU; auto on a machine without one stays on the host.
TEST(ResidentStore, DeviceModeNeedsCudaAndAGpu) {
  const std::string path = testing::temp_dir("resident_device") + "/s.h5";
  write_store(path, random_store({"omniglot", 28, 28, 1}, 8, 20));
  std::string m = usage_error([&] { EpisodeStore s(path, {Residency::kDevice, false}); });
  EXPECT_NE(m.find("data.resident = device needs device = cuda"), std::string::npos) << m;
  const EpisodeStore autos(path, {Residency::kAuto, true});
  if (gpu_count() == 0) {
    m = usage_error([&] { EpisodeStore s(path, {Residency::kDevice, true}); });
    EXPECT_NE(m.find("data.resident = device, but no GPU is usable"), std::string::npos) << m;
    EXPECT_EQ(autos.residency(), Residency::kHost);
    EXPECT_NE(autos.name().find("host (auto)"), std::string::npos) << autos.name();
    EXPECT_NE(autos.name().find("no usable GPU"), std::string::npos) << autos.name();
  } else {
    EXPECT_EQ(autos.residency(), Residency::kDevice) << autos.name();
  }
  EXPECT_THROW(EpisodeStore(path, {Residency::kHost}).device_images(), Error);
}

TEST(Residency, PlanFollowsTheBudgets) {
  MemoryFacts m;
  m.host_available = 1000;
  m.gpu_free = 2000;
  auto mode = [&](Residency r, bool cuda, int64_t bytes) {
    return plan_residency(r, cuda, bytes, m, "s.h5").mode;
  };
  EXPECT_EQ(mode(Residency::kAuto, false, 500), Residency::kHost);  // 50% of 1000
  EXPECT_EQ(mode(Residency::kAuto, false, 501), Residency::kOff);
  EXPECT_EQ(mode(Residency::kAuto, true, 500), Residency::kDevice);  // 25% of 2000
  EXPECT_EQ(mode(Residency::kAuto, true, 501), Residency::kOff);     // the host copy
  EXPECT_EQ(mode(Residency::kOff, true, 1), Residency::kOff);
  EXPECT_EQ(mode(Residency::kHost, true, 500), Residency::kHost);
  EXPECT_EQ(mode(Residency::kDevice, true, 500), Residency::kDevice);
  m.gpu_free = 1999;
  EXPECT_EQ(mode(Residency::kAuto, true, 500), Residency::kHost);
  EXPECT_NE(plan_residency(Residency::kAuto, true, 500, m, "s.h5").note.find("more than 25%"),
            std::string::npos);
  std::string e = usage_error([&] { mode(Residency::kDevice, true, 500); });
  EXPECT_NE(e.find("data.resident = device: the images of s.h5 take 0.0 MB (500 bytes), more "
                   "than 25% of the GPU's free memory, 0.0 MB (1999 bytes)"),
            std::string::npos)
      << e;
  e = usage_error([&] { mode(Residency::kHost, false, 501); });
  EXPECT_NE(e.find("data.resident = host: the images of s.h5 take 0.0 MB (501 bytes), more "
                   "than 50% of the host's available memory, 0.0 MB (1000 bytes)"),
            std::string::npos)
      << e;
  EXPECT_NE(plan_residency(Residency::kAuto, false, 501, m, "s.h5").note.find("(501 bytes)"),
            std::string::npos);
  e = usage_error([&] { mode(Residency::kDevice, false, 1); });
  EXPECT_NE(e.find("needs device = cuda"), std::string::npos) << e;
  m.gpu_free = -1;
  m.no_gpu = "no GPU visible";
  e = usage_error([&] { mode(Residency::kDevice, true, 1); });
  EXPECT_NE(e.find("no GPU is usable (no GPU visible)"), std::string::npos) << e;
  EXPECT_EQ(mode(Residency::kAuto, true, 1), Residency::kHost);
  m.host_available = -1;  // unknown: auto does not guess, a forced mode is taken at its word
  EXPECT_EQ(mode(Residency::kAuto, false, 1), Residency::kOff);
  EXPECT_EQ(mode(Residency::kHost, false, 1), Residency::kHost);

  EXPECT_EQ(parse_residency("device"), Residency::kDevice);
  e = usage_error([] { parse_residency("gpu"); });
  EXPECT_EQ(e, "data.resident = gpu: must be one of auto, host, device, off");
  EXPECT_GT(query_memory(false).host_available, 0) << "no MemAvailable in /proc/meminfo";
}

}  // namespace
}  // namespace mt
