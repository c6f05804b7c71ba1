// HDF5 episode store: validation rules, the reproducible writer, and the episode-serving reader
// (data/episode_store.h).
#include "data/episode_store.h"

#include <algorithm>
#include <climits>
#include <filesystem>
#include <set>

#include "core/atomic_file.h"
#include "core/check.h"
#include "core/rng.h"
#include "data/episode_sampler.h"
#include "data/resident_gather.h"

namespace mt {

namespace {

using detail::concat;

const char* const kSplitNames[] = {"train", "val", "test"};
constexpr int64_t kMaxImageBytes = int64_t{1} << 26;  // 64 MiB per image

std::string problem_of_fixed(const FixedEpisodes& f, int64_t n_images) {
  if (f.support.empty() && f.query.empty()) return "";
  if (f.ways < 1 || f.shots < 1 || f.queries < 1)
    return concat("/episodes has ways = ", f.ways, ", shots = ", f.shots, ", queries = ", f.queries,
                  "; each must be at least 1");
  const int64_t per_s = int64_t{f.ways} * f.shots, per_q = int64_t{f.ways} * f.queries;
  if (f.support.size() % per_s != 0 || f.query.size() / per_q != f.support.size() / per_s ||
      f.query.size() % per_q != 0)
    return concat("/episodes/support holds ", f.support.size(), " and /episodes/query ",
                  f.query.size(), " indices, not E x ", per_s, " and E x ", per_q);
  for (const auto* v : {&f.support, &f.query})
    for (int64_t i : *v)
      if (i < 0 || i >= n_images)
        return concat("/episodes names image ", i, ", outside [0, ", n_images, ")");
  return "";
}

// Every rule of store_problem except the size of the image bytes, which the reader checks
// against the dataset's shape without reading the images.
std::string index_problem(const StoreContents& c) {
  if (c.height < 1 || c.width < 1 || c.channels < 1)
    return concat("image_shape [", c.height, ", ", c.width, ", ", c.channels,
                  "] is not a valid image shape");
  const int64_t n = c.num_images();
  const size_t classes = c.class_names.size();
  if (c.class_offsets.size() != classes + 1)
    return concat("/class_offsets has ", c.class_offsets.size(), " entries for ", classes,
                  " classes; expected ", classes + 1);
  if (c.class_offsets.front() != 0 || c.class_offsets.back() != n)
    return concat("/class_offsets runs from ", c.class_offsets.front(), " to ",
                  c.class_offsets.back(), ", expected 0 to ", n, " (the number of images)");
  for (size_t k = 0; k < classes; ++k) {
    const int64_t lo = c.class_offsets[k], hi = c.class_offsets[k + 1];
    if (hi <= lo || hi > n)
      return concat("/class_offsets out of range: class ", k, " ('", c.class_names[k],
                    "') owns images [", lo, ", ", hi, ")");
    for (int64_t i = lo; i < hi; ++i)
      if (c.labels[i] != static_cast<int32_t>(k))
        return concat("/labels does not match /class_offsets: image ", i, " has label ",
                      c.labels[i], " but lies in class ", k, "'s range [", lo, ", ", hi, ")");
  }
  std::set<int32_t> seen;
  for (const auto& [name, members] : c.splits) {
    if (name != "train" && name != "val" && name != "test")
      return concat("unknown split '", name, "' (splits are train, val, test)");
    for (int32_t k : members) {
      if (k < 0 || k >= static_cast<int32_t>(classes))
        return concat("split '", name, "' names class ", k, ", which does not exist (", classes,
                      " classes)");
      if (!seen.insert(k).second)
        return concat("class ", k, " ('", c.class_names[k], "') is listed twice in the splits");
    }
  }
  return problem_of_fixed(c.episodes, n);
}

}  // namespace

std::string store_problem(const StoreContents& c) {
  if (static_cast<int64_t>(c.images.size()) != c.num_images() * c.image_bytes())
    return concat("/images holds ", c.images.size(), " bytes, expected ", c.num_images(),
                  " images of ", c.image_bytes(), " bytes");
  return index_problem(c);
}

void write_store(const std::string& path, const StoreContents& c) {
  const std::string problem = store_problem(c);
  MT_REQUIRE(problem.empty(), path, ": refusing to write an invalid store: ", problem);
  write_atomically(path, [&](h5::File& f) {
    const int64_t n = c.num_images();
    h5::WriteOptions chunked;
    chunked.chunk = {1, c.height, c.width, c.channels};
    chunked.deflate = c.deflate;
    f.write<uint8_t>("/images", {n, c.height, c.width, c.channels}, c.images.data(),
                     n > 0 ? chunked : h5::WriteOptions{});
    f.write<int32_t>("/labels", {n}, c.labels.data());
    f.write<int64_t>("/class_offsets", {static_cast<int64_t>(c.class_offsets.size())},
                     c.class_offsets.data());
    f.write_strings("/class_names", c.class_names);
    for (const char* s : kSplitNames) {
      const auto it = c.splits.find(s);
      const std::vector<int32_t> none;
      const std::vector<int32_t>& members = it == c.splits.end() ? none : it->second;
      f.write<int32_t>(concat("/splits/", s), {static_cast<int64_t>(members.size())},
                       members.data());
    }
    if (c.episodes.count() > 0) {
      const FixedEpisodes& e = c.episodes;
      const int64_t count = e.count();
      f.write<int64_t>("/episodes/support", {count, int64_t{e.ways} * e.shots}, e.support.data());
      f.write<int64_t>("/episodes/query", {count, int64_t{e.ways} * e.queries}, e.query.data());
      f.set_attr("/episodes", "ways", e.ways);
      f.set_attr("/episodes", "shots", e.shots);
      f.set_attr("/episodes", "queries", e.queries);
    }
    f.set_attr("/", "format_version", kStoreFormatVersion);
    f.set_attr("/", "dataset", c.dataset);
    f.set_attr("/", "image_shape", std::vector<int64_t>{c.height, c.width, c.channels});
    for (const auto& [name, value] : c.string_attrs) f.set_attr("/", name, value);
  });
}

namespace {

// Everything but the images, read and checked. Problems throw UsageError "<path>: <problem>".
StoreContents read_metadata(const h5::File& f) {
  const std::string& path = f.path();
  auto fail = [&](const std::string& problem) -> UsageError {
    return UsageError(concat(path, ": ", problem));
  };
  if (!f.has_attr("/", "format_version"))
    throw fail("not an episode store (no format_version attribute); pack data with metapack");
  const int64_t version = f.get_attr_int("/", "format_version");
  if (version != kStoreFormatVersion)
    throw fail(concat("format_version ", version, " is not supported (this build reads version ",
                      kStoreFormatVersion, "); re-pack the data with this build's metapack"));
  StoreContents c;
  for (const char* a : {"dataset", "image_shape"})
    if (!f.has_attr("/", a)) throw fail(concat("missing attribute '", a, "'"));
  c.dataset = f.get_attr_string("/", "dataset");
  const std::vector<int64_t> shape = f.get_attr_ints("/", "image_shape");
  if (shape.size() != 3) throw fail("attribute image_shape must hold [H, W, C]");
  for (int64_t d : shape)
    if (d < 1 || d > 4096) throw fail(concat("attribute image_shape has dimension ", d));
  if (shape[0] * shape[1] * shape[2] > kMaxImageBytes)
    throw fail(concat("attribute image_shape [", shape[0], ", ", shape[1], ", ", shape[2],
                      "] makes images larger than ", kMaxImageBytes, " bytes"));
  c.height = static_cast<int>(shape[0]);
  c.width = static_cast<int>(shape[1]);
  c.channels = static_cast<int>(shape[2]);
  for (const char* a : {"source_sha256", "created_by", "split_method"})
    if (f.has_attr("/", a)) c.string_attrs[a] = f.get_attr_string("/", a);

  const std::vector<int64_t> ishape = f.shape("/images");
  if (ishape.size() != 4 || ishape[1] != c.height || ishape[2] != c.width ||
      ishape[3] != c.channels)
    throw fail(concat("/images has shape ", ishape.size() == 4 ? "[n, H, W, C] = [" : "[",
                      ishape.empty() ? 0 : ishape[0], ", ...] not matching image_shape [", c.height,
                      ", ", c.width, ", ", c.channels, "]"));
  // Sizes are checked before anything is read: a small file can declare datasets of any size
  // without storing them. Every image and index needs at least a byte of the file, so the
  // file's size bounds them all.
  const int64_t n = ishape[0];
  const auto file_bytes = static_cast<int64_t>(std::filesystem::file_size(path));
  if (n > file_bytes || n > INT32_MAX)
    throw fail(
        concat("/images declares ", n, " images, more than a ", file_bytes, "-byte file can hold"));
  // Checks the rank (1 unless given) and bounds the element count of a dataset before reading.
  auto count = [&](const std::string& name, int64_t most, size_t rank = 1) {
    const std::vector<int64_t> dims = f.shape(name);
    if (dims.size() != rank)
      throw fail(concat(name, " has ", dims.size(), " dimensions, expected ", rank));
    int64_t elements = 1;
    for (int64_t d : dims) elements *= d;
    if (elements > most)
      throw fail(concat(name, " holds ", elements, " entries, more than the ", most,
                        " this store can have"));
  };
  count("/labels", n);
  c.labels = f.read<int32_t>("/labels");
  if (static_cast<int64_t>(c.labels.size()) != n)
    throw fail(concat("/labels has ", c.labels.size(), " entries for ", n, " images"));
  count("/class_offsets", n + 1);
  c.class_offsets = f.read<int64_t>("/class_offsets");
  if (c.class_offsets.empty()) throw fail("/class_offsets is empty");
  const int64_t classes = static_cast<int64_t>(c.class_offsets.size()) - 1;
  count("/class_names", classes);
  c.class_names = f.read_strings("/class_names");
  for (const char* s : kSplitNames) {
    count(concat("/splits/", s), classes);
    c.splits[s] = f.read<int32_t>(concat("/splits/", s));
  }
  if (f.exists("/episodes")) {
    FixedEpisodes& e = c.episodes;
    int* sizes[] = {&e.ways, &e.shots, &e.queries};
    const char* names[] = {"ways", "shots", "queries"};
    for (int i = 0; i < 3; ++i) {
      const int64_t v = f.get_attr_int("/episodes", names[i]);
      if (v < 1 || v > n) throw fail(concat("/episodes attribute ", names[i], " = ", v));
      *sizes[i] = static_cast<int>(v);
    }
    count("/episodes/support", file_bytes, 2);
    count("/episodes/query", file_bytes, 2);
    const std::vector<int64_t> ss = f.shape("/episodes/support"), qs = f.shape("/episodes/query");
    if (ss[1] != int64_t{e.ways} * e.shots || qs[1] != int64_t{e.ways} * e.queries ||
        ss[0] != qs[0])
      throw fail(concat("/episodes/support has shape [", ss[0], ", ", ss[1],
                        "] and /episodes/query [", qs[0], ", ", qs[1], "], expected [E, ",
                        int64_t{e.ways} * e.shots, "] and [E, ", int64_t{e.ways} * e.queries,
                        "] for ways = ", e.ways, ", shots = ", e.shots, ", queries = ", e.queries));
    e.support = f.read<int64_t>("/episodes/support");
    e.query = f.read<int64_t>("/episodes/query");
    if (e.support.empty()) throw fail("/episodes holds no episodes");
  }
  const std::string problem = index_problem(c);
  if (!problem.empty()) throw fail(problem);
  return c;
}

// Runs f, adding what to do to a checksum failure's message.
template <typename F>
auto with_repack_advice(F&& f) {
  try {
    return f();
  } catch (const h5::ChecksumError& e) {
    throw h5::ChecksumError(concat(e.what(), "; re-pack it with metapack or copy it again"));
  }
}

}  // namespace

StoreContents read_store(const std::string& path) {
  return with_repack_advice([&] {
    const h5::File f = h5::File::open_read(path);
    StoreContents c = read_metadata(f);
    c.images = f.read<uint8_t>("/images");
    return c;
  });
}

namespace {

// Every image of /images, through the checksummed reader, in blocks; a damaged block is read
// again image by image so that the error names the image, as the per-episode reads do.
std::vector<uint8_t> read_all_images(const h5::RowReader& images, int64_t n, int64_t item) {
  constexpr int64_t kBlock = 1024;
  std::vector<uint8_t> all(static_cast<size_t>(n * item));
  for (int64_t first = 0; first < n; first += kBlock) {
    const int64_t count = std::min(kBlock, n - first);
    try {
      images.read(first, count, all.data() + first * item);
    } catch (const h5::ChecksumError&) {
      for (int64_t i = first; i < first + count; ++i) images.read(i, 1, all.data() + i * item);
      throw;
    }
  }
  return all;
}

}  // namespace

namespace {

// What a user should do when data.path is not an episode store: raw data (a zip, a folder) is
// packed with metapack first (the exact command), a missing file named as data.path.
std::string store_advice(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const bool is_dir = fs::is_directory(path, ec);
  const bool is_zip = path.size() > 4 && path.compare(path.size() - 4, 4, ".zip") == 0;
  const std::string out = "data/" + fs::path(path).stem().string() + ".h5";
  if (is_zip && fs::path(path).filename() == "all_runs.zip")
    return concat(
        "it is Lake's one-shot runs as a zip, not an episode store: pack it with "
        "`build/bin/metapack omniglot-lake -o ",
        out, " ", path, "`");
  if (is_zip)
    return concat(
        "it is a zip archive, not an episode store: pack it first, e.g. Omniglot "
        "with `build/bin/metapack omniglot -o data/omniglot.h5 ",
        path, "` (`build/bin/metapack --help` lists the formats)");
  if (is_dir)
    return concat(
        "it is a folder, not an episode store: pack it first, e.g. Mini-ImageNet with "
        "`build/bin/metapack miniimagenet -o ",
        out, " ", path, "` or Omniglot with `build/bin/metapack omniglot -o ", out, " ", path,
        "` (`build/bin/metapack --help` lists the formats)");
  if (!fs::exists(path, ec))
    return "set data.path to an episode store made by metapack (`build/bin/metapack --help`), "
           "or to glyphs (the built-in synthetic data)";
  return "";
}

h5::File open_store(const std::string& path) {
  try {
    return h5::File::open_read(path);
  } catch (const UsageError& e) {
    const std::string advice = store_advice(path);
    if (advice.empty()) throw;
    throw UsageError(concat(e.what(), "; ", advice));
  }
}

}  // namespace

EpisodeStore::EpisodeStore(const std::string& path, StoreOptions opt) : file_(open_store(path)) {
  StoreContents c = with_repack_advice([&] { return read_metadata(file_); });
  dataset_ = c.dataset;
  height_ = c.height;
  width_ = c.width;
  channels_ = c.channels;
  num_images_ = c.num_images();
  class_offsets_ = std::move(c.class_offsets);
  splits_ = std::move(c.splits);
  attrs_ = std::move(c.string_attrs);
  fixed_ = std::move(c.episodes);
  for (const auto& [name, members] : splits_) {
    int64_t least = INT64_MAX;
    for (int32_t k : members) least = std::min(least, class_offsets_[k + 1] - class_offsets_[k]);
    if (!members.empty()) min_per_class_[name] = static_cast<int>(least);
  }
  images_ = file_.row_reader<uint8_t>("/images");

  const int64_t item = resident_shape().item();
  const bool gpu =
      opt.cuda && (opt.residency == Residency::kAuto || opt.residency == Residency::kDevice);
  const ResidencyPlan plan =
      plan_residency(opt.residency, opt.cuda, num_images_ * item,
                     opt.residency == Residency::kOff ? MemoryFacts{} : query_memory(gpu), path);
  residency_ = plan.mode;
  residency_note_ = plan.note;
  if (residency_ != Residency::kOff)
    resident_ = with_repack_advice([&] { return read_all_images(images_, num_images_, item); });
}

EpisodeStore::~EpisodeStore() = default;

std::string EpisodeStore::name() const {
  return concat(dataset_, " store ", file_.path(), " (resident: ", residency_note_, ")");
}

const DeviceImages& EpisodeStore::device_images() const {
  MT_CHECK(residency_ == Residency::kDevice, path(), " is resident in ", to_string(residency_),
           " memory, not on the device");
  std::lock_guard<std::mutex> lock(device_mutex_);
  if (!device_)
    device_ = std::make_unique<DeviceImages>(resident_.data(), num_images_, resident_shape());
  return *device_;
}

const std::string& EpisodeStore::attr(const std::string& name) const {
  static const std::string none;
  const auto it = attrs_.find(name);
  return it == attrs_.end() ? none : it->second;
}

const std::vector<int32_t>& EpisodeStore::split(const std::string& name) const {
  const auto it = splits_.find(name);
  MT_REQUIRE(it != splits_.end(), "split '", name, "' does not exist in ", path(),
             " (splits: train, val, test)");
  MT_REQUIRE(!it->second.empty(), "split '", name, "' of ", path(),
             " has no classes; choose another split (data.train_split / data.eval_split)");
  return it->second;
}

int64_t EpisodeStore::num_classes(const std::string& s) const {
  return static_cast<int64_t>(split(s).size());
}

int EpisodeStore::min_examples_per_class(const std::string& s) const {
  split(s);  // throws for an unknown or empty split
  return min_per_class_.at(s);
}

void EpisodeStore::validate(const EpisodeSpec& spec) const {
  check_episode_spec(spec, path(), num_classes(spec.split), min_examples_per_class(spec.split));
}

void EpisodeStore::fill_pixels(Batch<float>& b) const {
  if (indices_only_) return;
  const ResidentShape shape = resident_shape();
  const int64_t item = shape.item();
  if (!resident_.empty())
    return gather_images(resident_.data(), shape, b.source.data(), b.n, b.x.data());
  std::vector<uint8_t> raw(static_cast<size_t>(item));
  for (int i = 0; i < b.n; ++i) {
    with_repack_advice([&] { images_.read(b.source[i], 1, raw.data()); });
    convert_image(raw.data(), shape, b.x.data() + i * item);
  }
}

void EpisodeStore::sample(const EpisodeSpec& spec, uint64_t seed, uint64_t step, uint64_t task,
                          Episode<float>& ep) const {
  validate(spec);
  const std::vector<int32_t>& classes = split(spec.split);
  Rng rng(seed, step, task, Stream::kEpisode);
  std::vector<int64_t> picked, items;
  sample_distinct(rng, static_cast<int64_t>(classes.size()), spec.ways, picked);
  shape_episode(spec, image_shape(), ep, !indices_only_);
  ep.support.source.resize(ep.support.n);
  ep.query.source.resize(ep.query.n);
  for (int c = 0; c < spec.ways; ++c) {
    const int32_t k = classes[picked[c]];
    const int64_t first = class_offsets_[k];
    sample_distinct(rng, class_offsets_[k + 1] - first, spec.shots + spec.queries, items);
    for (int s = 0; s < spec.shots; ++s) ep.support.source[c * spec.shots + s] = first + items[s];
    for (int q = 0; q < spec.queries; ++q)
      ep.query.source[c * spec.queries + q] = first + items[spec.shots + q];
  }
  fill_pixels(ep.support);
  fill_pixels(ep.query);
}

void EpisodeStore::fixed_episode(int64_t e, Episode<float>& ep) const {
  MT_REQUIRE(e >= 0 && e < num_fixed_episodes(), path(), " has ", num_fixed_episodes(),
             " fixed episodes; episode ", e, " does not exist");
  const FixedEpisodes& f = fixed_;
  shape_episode({"fixed", f.ways, f.shots, f.queries}, image_shape(), ep, !indices_only_);
  const int64_t ns = int64_t{f.ways} * f.shots, nq = int64_t{f.ways} * f.queries;
  ep.support.source.assign(f.support.begin() + e * ns, f.support.begin() + (e + 1) * ns);
  ep.query.source.assign(f.query.begin() + e * nq, f.query.begin() + (e + 1) * nq);
  fill_pixels(ep.support);
  fill_pixels(ep.query);
}

}  // namespace mt
