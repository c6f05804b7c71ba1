// The HDF5 episode store (DESIGN §7): the file format every packer writes and every rank reads.
// StoreContents is a whole store in memory, as packers build it; write_store puts it on disk
// byte-reproducibly; EpisodeStore opens a file read-only, validates every field at open, and
// serves few-shot episodes from it, reading only the images each episode needs, or gathering
// them from a copy decoded once at open (data.resident, data/residency.h).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/episode.h"
#include "core/hdf5.h"
#include "data/episode_source.h"
#include "data/residency.h"
#include "data/resident_images.h"

namespace mt {

constexpr int kStoreFormatVersion = 1;

// Format version 1:
//   /images          uint8 [n, H, W, C], one image per chunk, sorted by class
//   /labels          int32 [n], the class of each image
//   /class_offsets   int64 [classes + 1]: class k owns images [offsets[k], offsets[k+1])
//   /class_names     strings [classes]
//   /splits/<name>   int32 class indices, for name in {train, val, test} (each may be empty)
//   /episodes/{support,query}  (optional) int64 [E, ways*shots] and [E, ways*queries]: fixed
//                    evaluation episodes (Lake's one-shot runs) as image indices, class-major
//                    (support item c*shots+s and query item c*queries+q have label c); the
//                    group's attributes ways, shots, queries give the shape.
//   root attributes: format_version (int), dataset, created_by, source_sha256 (strings),
//                    image_shape (int64 [H, W, C]), and any further string attributes.
// Checksums (added within version 1, so that older builds read these files): every non-empty
// dataset carries HDF5's Fletcher-32 filter, /images one checksum per image chunk (after deflate),
// /class_names as fixed-length strings. A chunk is verified when it is read (an image when an
// episode needs it, the index datasets at open); a mismatch throws h5::ChecksumError "<path>:
// dataset /images fails its Fletcher-32 checksum in rows [i, i+1): the file is damaged; re-pack
// it with metapack or copy it again". Stores of older builds have no checksums and read as before.
struct FixedEpisodes {
  int ways = 0, shots = 0, queries = 0;
  std::vector<int64_t> support;  // [E, ways * shots]
  std::vector<int64_t> query;    // [E, ways * queries]
  int64_t count() const {
    return ways * shots > 0 ? static_cast<int64_t>(support.size()) / (ways * shots) : 0;
  }
};

struct StoreContents {
  std::string dataset;  // "omniglot", "omniglot-lake", "miniimagenet"
  int height = 0, width = 0, channels = 0;
  std::vector<uint8_t> images;  // [n, height, width, channels]
  std::vector<int32_t> labels;  // [n]
  std::vector<int64_t> class_offsets;
  std::vector<std::string> class_names;
  std::map<std::string, std::vector<int32_t>> splits;  // train, val, test
  std::map<std::string, std::string> string_attrs;     // source_sha256, created_by, split_method…
  FixedEpisodes episodes;                              // empty unless the file has fixed episodes
  int deflate = 0;  // gzip level of /images chunks (0 = none); not stored as an attribute

  int64_t num_images() const { return static_cast<int64_t>(labels.size()); }
  int64_t image_bytes() const { return static_cast<int64_t>(height) * width * channels; }
};

// Packers report progress through this as they decode images: (done, total). May be empty.
using PackProgress = std::function<void(int64_t done, int64_t total)>;

// The first problem found in `c` (offsets not monotone, labels not matching offsets, split or
// episode indices out of range, a class in two splits, ...), or "" when it is a valid store.
// Both the writer and the reader apply these rules.
std::string store_problem(const StoreContents& c);

// Writes `c` to `path` with write_atomically (core/atomic_file.h), so a failed pack leaves
// nothing half-written. The same contents always give a byte-identical file. Throws UsageError if
// the contents are invalid (store_problem) or the file cannot be written.
void write_store(const std::string& path, const StoreContents& c);

// Reads a whole store into memory (tests, tools); validated like EpisodeStore::open.
StoreContents read_store(const std::string& path);

// Where an EpisodeStore keeps the images it serves (data.resident).
struct StoreOptions {
  // kOff: each image read from the file (one checksummed chunk) when an episode needs it.
  // kHost: every image read (checksums verified) once at open into host memory as stored,
  // uint8 [n, H, W, C]; episodes are gathered from there. kDevice: as kHost, plus a GPU copy
  // made by the first device_images(). kAuto: plan_residency decides from query_memory(cuda).
  Residency residency = Residency::kOff;
  bool cuda = false;  // the run computes on a GPU (device=cuda): auto may choose kDevice
};

// A validated, read-only store serving episodes. Opening never locks the file, so every rank of
// a job (and other jobs) can read it at once. Labels, offsets, names and splits are held in
// memory; images are read from the file per episode, or held resident (StoreOptions). Every
// mode serves the same episodes bit for bit: one pixel converter (resident_pixel).
class EpisodeStore : public EpisodeSource {
 public:
  // Throws UsageError "<path>: <problem>" for a missing, foreign, truncated or inconsistent file
  // (every header field: version, attributes, dataset types, ranks, shapes and sizes, offsets,
  // labels, splits, fixed episodes) or one whose index datasets fail their checksums; resident,
  // also h5::ChecksumError for a damaged image (the message of the file path's per-episode
  // read), and UsageError from plan_residency for a forced mode that cannot be had.
  explicit EpisodeStore(const std::string& path, StoreOptions opt = {});
  ~EpisodeStore() override;

  const std::string& path() const { return file_.path(); }
  const std::string& dataset() const { return dataset_; }
  const std::string& attr(const std::string& name) const;  // "" when absent
  // "<dataset> store <path> (resident: <mode>, <bytes>[, why auto chose it])".
  std::string name() const override;
  Residency residency() const { return residency_; }  // never kAuto
  int64_t num_images() const { return num_images_; }
  ResidentShape resident_shape() const { return {int64_t{height_} * width_, channels_}; }
  // The resident images, uint8 [n, H, W, C]; null when residency() is kOff.
  const uint8_t* resident_images() const { return resident_.empty() ? nullptr : resident_.data(); }
  // kDevice only: the images on the GPU. The first call copies them to the GPU current in the
  // calling thread (the backend's, after select_gpu); later calls, from any thread with that
  // GPU current, return the same copy. Throws UsageError when they do not fit there.
  const DeviceImages& device_images() const;
  // Indices only: from this call on, sample() and fixed_episode() fill labels and `source` but
  // leave x empty, for a consumer that gathers the pixels itself (pack_rows, then
  // DeviceImages::gather_rows): only the indices cross PCIe. Any residency. Set it before the
  // store is shared (it is not synchronised with sample()).
  void set_indices_only(bool on) { indices_only_ = on; }
  bool indices_only() const { return indices_only_; }
  Shape image_shape() const override { return {channels_, height_, width_}; }
  int64_t num_classes(const std::string& split) const override;
  int min_examples_per_class(const std::string& split) const override;
  void validate(const EpisodeSpec& spec) const override;
  // Classes by sample_distinct from Rng(seed, step, task, kEpisode), then per class
  // shots + queries distinct images (the first `shots` to the support set). Pixels are scaled
  // to [0, 1] by resident_pixel and laid out channel-first; `source` holds each example's image
  // index (x is left empty when indices only).
  void sample(const EpisodeSpec& spec, uint64_t seed, uint64_t step, uint64_t task,
              Episode<float>& ep) const override;

  // Fixed evaluation episodes (Lake's runs); 0 when the file has none. Filled like sample().
  int64_t num_fixed_episodes() const { return fixed_.count(); }
  const FixedEpisodes& fixed_episodes() const { return fixed_; }
  void fixed_episode(int64_t e, Episode<float>& ep) const;

 private:
  const std::vector<int32_t>& split(const std::string& name) const;
  // Writes b.x from b.source (nothing when indices only): resident, or read from the file.
  void fill_pixels(Batch<float>& b) const;

  h5::File file_;
  h5::RowReader images_;  // /images, held open
  std::string dataset_;
  int height_ = 0, width_ = 0, channels_ = 0;
  int64_t num_images_ = 0;
  std::vector<int64_t> class_offsets_;
  std::map<std::string, std::vector<int32_t>> splits_;
  std::map<std::string, int> min_per_class_;  // per split with classes
  std::map<std::string, std::string> attrs_;
  FixedEpisodes fixed_;
  bool indices_only_ = false;
  Residency residency_ = Residency::kOff;
  std::string residency_note_;
  std::vector<uint8_t> resident_;  // [n, H, W, C] unless kOff
  mutable std::mutex device_mutex_;
  mutable std::unique_ptr<DeviceImages> device_;  // made by the first device_images()
};

}  // namespace mt
