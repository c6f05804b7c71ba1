// The resident-image gather on a GPU: DeviceImages::gather_rows against its host twin
// (gather_rows_host, which resident_test checks against the file path) bit for bit, and a
// device-resident store's batched rows (pack_rows + gather_rows) against pack_examples of the
// file path's episodes. Skips with the reason when no GPU is usable.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "core/cuda_check.h"
#include "core/device.h"
#include "data/episode_store.h"
#include "data/resident_images.h"
#include "models/batched_net.h"  // pack_examples
#include "tests/support/bits.h"
#include "tests/support/programs.h"

namespace mt {
namespace {

#define MT_NEED_GPU() \
  if (gpu_count() == 0) GTEST_SKIP() << "no GPU: " << describe_devices()

std::vector<uint8_t> random_bytes(size_t n, uint64_t x) {
  std::vector<uint8_t> v(n);
  for (uint8_t& b : v) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    b = static_cast<uint8_t>(x >> 24);
  }
  return v;
}

using testing::expect_same_bits;

// x = gather of `index_of_row` on the GPU, downloaded.
std::vector<float> gather_on_gpu(const DeviceImages& images, const std::vector<int64_t>& rows) {
  DeviceBuffer<int64_t> d_rows(rows.size());
  d_rows.copy_from_host(rows.data(), rows.size());
  const size_t count = rows.size() * images.shape().item();
  DeviceBuffer<float> d_x(count);
  std::vector<float> x(count, -1.0f);
  d_x.copy_from_host(x.data(), count);  // a missed element stays -1
  images.gather_rows(d_rows.data(), static_cast<int64_t>(rows.size()), d_x.data(), nullptr);
  MT_CUDA_CHECK(cudaDeviceSynchronize());
  d_x.copy_to_host(x.data(), count);
  return x;
}

TEST(DeviceImages, GatherEqualsTheHostTwinBitForBit) {
  MT_NEED_GPU();
  select_gpu(0);
  // 84x84x3 x 400 rows = 8.5M elements: the grid-stride loop goes round more than once.
  for (const ResidentShape s :
       {ResidentShape{28 * 28, 1}, ResidentShape{84 * 84, 3}, ResidentShape{7 * 5, 2}}) {
    const int64_t n = 60, rows = 400;
    const std::vector<uint8_t> images = random_bytes(static_cast<size_t>(n * s.item()), 99);
    std::vector<int64_t> index_of_row(rows);
    for (int64_t r = 0; r < rows; ++r) index_of_row[r] = (r * 37 + r / 7) % n;  // repeats
    const DeviceImages dev(images.data(), n, s);
    EXPECT_EQ(dev.bytes(), static_cast<int64_t>(images.size()));
    std::vector<float> want(static_cast<size_t>(rows * s.item()));
    gather_rows_host(images.data(), s, index_of_row.data(), rows, want.data());
    expect_same_bits(gather_on_gpu(dev, index_of_row), want,
                     std::to_string(s.pixels) + " pixels x " + std::to_string(s.channels));
  }
}

TEST(DeviceImages, DeviceResidentStoreRowsEqualPackExamplesOfTheFilePath) {
  MT_NEED_GPU();
  select_gpu(0);
  StoreContents c;
  c.dataset = "resident-gpu-test";
  c.height = c.width = 28;
  c.channels = 1;
  c.class_offsets = {0};
  for (int k = 0; k < 10; ++k) {
    c.class_names.push_back("class" + std::to_string(k));
    c.labels.insert(c.labels.end(), 20, k);
    c.class_offsets.push_back(static_cast<int64_t>(c.labels.size()));
    c.splits["train"].push_back(k);
  }
  c.images = random_bytes(c.labels.size() * c.image_bytes(), 5);
  const std::string path = testing::temp_dir("resident_gpu") + "/s.h5";
  write_store(path, c);
  const EpisodeStore file(path);
  EpisodeStore dev(path, {Residency::kDevice, true});
  dev.set_indices_only(true);
  ASSERT_EQ(dev.residency(), Residency::kDevice) << dev.name();
  const DeviceImages& images = dev.device_images();
  EXPECT_EQ(&images, &dev.device_images()) << "copied once";

  const int T = 32;
  const EpisodeSpec spec{"train", 5, 1, 15};
  std::vector<Episode<float>> full(T), idx(T);
  std::vector<const Episode<float>*> pf, pi;
  for (int t = 0; t < T; ++t) {
    file.sample(spec, 1, 4, t, full[t]);
    dev.sample(spec, 1, 4, t, idx[t]);
    pf.push_back(&full[t]);
    pi.push_back(&idx[t]);
  }
  for (Split split : {Split::kSupport, Split::kQuery}) {
    const int n = split == Split::kSupport ? full[0].support.n : full[0].query.n;
    const size_t rows = static_cast<size_t>(n) * T;
    std::vector<float> want(rows * images.shape().item());
    std::vector<int32_t> want_y(rows), got_y(rows);
    std::vector<int64_t> index_of_row(rows);
    pack_examples(pf, split, want.data(), want_y.data());
    pack_rows(pi, split, index_of_row.data(), got_y.data());
    EXPECT_EQ(got_y, want_y);
    expect_same_bits(gather_on_gpu(images, index_of_row), want,
                     split == Split::kSupport ? "support rows" : "query rows");
  }
}

}  // namespace
}  // namespace mt
