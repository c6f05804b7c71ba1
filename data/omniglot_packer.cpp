// Omniglot packers (data/omniglot_packer.h): find the characters in zips or folders, decode and
// resize their PNGs in parallel, choose the split, add rotations; Lake's one-shot runs likewise.
#include "data/omniglot_packer.h"

#include <algorithm>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>

#include "core/check.h"
#include "core/rng.h"
#include "data/image_resize.h"
#include "data/png_decode.h"
#include "data/zip_reader.h"

namespace mt {

namespace {

using detail::concat;
constexpr int kSize = kOmniglotSize;
constexpr int kPixels = kSize * kSize;

std::vector<std::string> path_parts(const std::string& path) {
  std::vector<std::string> parts;
  std::stringstream ss(path);
  for (std::string p; std::getline(ss, p, '/');) parts.push_back(p);
  return parts;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_character_folder(const std::string& name) {
  return name.size() > 9 && name.rfind("character", 0) == 0 &&
         std::all_of(name.begin() + 9, name.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Name of an input as recorded in source_sha256: the file name, or the folder name plus "/".
std::string input_label(const SourceTree& tree) {
  std::filesystem::path p(tree.path());
  if (!p.has_filename()) p = p.parent_path();
  return p.filename().string() + (tree.is_zip() ? "" : "/");
}

// One image to decode: where it comes from and where it goes.
struct ImageJob {
  const SourceTree* tree;
  std::string file;
};

// Decodes, inverts (ink = 255) and area-resizes every job in parallel into out[job][28*28].
// The first failure (in job order) is rethrown after the loop.
std::vector<uint8_t> decode_all(const std::vector<ImageJob>& jobs, const PackProgress& progress) {
  const int64_t n = static_cast<int64_t>(jobs.size());
  std::vector<uint8_t> out(static_cast<size_t>(n) * kPixels);
  std::vector<std::exception_ptr> errors(n);
  int64_t done = 0;
  std::mutex progress_mutex;
#pragma omp parallel for schedule(dynamic, 16)
  for (int64_t i = 0; i < n; ++i) {
    try {
      const ImageJob& job = jobs[i];
      const std::vector<uint8_t> bytes = job.tree->read(job.file);
      GrayImage g = decode_png_gray(bytes.data(), bytes.size(), job.tree->path() + ":" + job.file);
      for (uint8_t& p : g.pixels) p = static_cast<uint8_t>(255 - p);
      const std::vector<uint8_t> small =
          resize_area(g.pixels.data(), g.height, g.width, 1, kSize, kSize);
      std::copy(small.begin(), small.end(), out.begin() + i * kPixels);
    } catch (...) {
      errors[i] = std::current_exception();
    }
    if (progress) {
      std::lock_guard<std::mutex> lock(progress_mutex);
      progress(++done, n);
    }
  }
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
  return out;
}

// Counter-clockwise rotation of a 28x28 image by 90 degrees.
void rotate90(const uint8_t* in, uint8_t* out) {
  for (int y = 0; y < kSize; ++y)
    for (int x = 0; x < kSize; ++x) out[(kSize - 1 - x) * kSize + y] = in[y * kSize + x];
}

// The characters found in the inputs: key "<Alphabet>/<characterNN>" -> image files.
struct Character {
  const SourceTree* tree = nullptr;
  std::string location;            // "<input>:<root>/", for messages
  std::vector<std::string> files;  // sorted
};

// Adds the characters of one input; a character already seen must have identical files.
void collect_characters(const SourceTree& tree, std::map<std::string, Character>& chars) {
  std::map<std::pair<std::string, std::string>, Character> found;  // (key, root) -> files
  for (const std::string& f : tree.files()) {
    if (!ends_with(f, ".png")) continue;
    const std::vector<std::string> parts = path_parts(f);
    const size_t n = parts.size();
    MT_REQUIRE(n >= 3 && is_character_folder(parts[n - 2]), "'", tree.path(),
               "' does not look like Omniglot: entry '", f,
               "' is not <Alphabet>/characterNN/<image>.png (for Lake's one-shot runs "
               "all_runs.zip use 'metapack omniglot-lake')");
    std::string root;
    for (size_t i = 0; i + 3 < n; ++i) root += parts[i] + "/";
    Character& c = found[{parts[n - 3] + "/" + parts[n - 2], root}];
    c.tree = &tree;
    c.location = tree.path() + ":" + root;
    c.files.push_back(f);
  }
  MT_REQUIRE(!found.empty(), "'", tree.path(), "' does not look like Omniglot: it holds no ",
             "<Alphabet>/characterNN/<image>.png files; pass images_background*.zip or "
             "images_evaluation.zip (or their unpacked folders)");
  for (auto& [key_root, c] : found) {
    const std::string& key = key_root.first;
    const auto it = chars.find(key);
    if (it == chars.end()) {
      chars.emplace(key, std::move(c));
      continue;
    }
    const Character& seen = it->second;
    bool same = seen.files.size() == c.files.size();
    for (size_t i = 0; same && i < c.files.size(); ++i)
      same = std::filesystem::path(seen.files[i]).filename() ==
                 std::filesystem::path(c.files[i]).filename() &&
             seen.tree->read(seen.files[i]) == c.tree->read(c.files[i]);
    MT_REQUIRE(same, "character '", key, "' is in both '", seen.location, "' and '", c.location,
               "' with different images; pass only one of them");
  }
}

// After a seeded shuffle of the alphabets, test and then val take alphabets in turn until
// they hold as close to a fifth of the characters as whole alphabets allow; the rest train.
std::map<std::string, std::string> alphabet_split(const std::vector<std::string>& keys,
                                                  uint64_t seed, std::string& method) {
  std::map<std::string, int64_t> size;
  for (const std::string& k : keys) ++size[k.substr(0, k.find('/'))];
  MT_REQUIRE(size.size() >= 3, "split=alphabet needs at least 3 alphabets; the inputs hold ",
             size.size());
  std::vector<std::string> order;
  for (const auto& [a, n] : size) order.push_back(a);
  Rng rng(seed, 0, 0, Stream::kSplit);
  for (size_t i = order.size() - 1; i > 0; --i) std::swap(order[i], order[rng.below(i + 1)]);
  const int64_t total = static_cast<int64_t>(keys.size());
  std::map<std::string, std::string> split_of;
  std::map<std::string, std::vector<std::string>> members;
  size_t next = 0;
  for (const char* s : {"test", "val"}) {
    // Take the next alphabet while that brings the split closer to a fifth of the characters.
    int64_t taken = 0;
    auto gap = [&](int64_t n) { return std::abs(5 * n - total); };
    while (next + 1 < order.size() && (taken == 0 || gap(taken + size[order[next]]) < gap(taken))) {
      split_of[order[next]] = s;
      members[s].push_back(order[next]);
      taken += size[order[next++]];
    }
  }
  for (; next < order.size(); ++next) {
    split_of[order[next]] = "train";
    members["train"].push_back(order[next]);
  }
  std::ostringstream m;
  m << "alphabet: seed " << seed;
  for (const char* s : {"train", "val", "test"}) {
    std::sort(members[s].begin(), members[s].end());
    m << "; " << s << " =";
    for (const std::string& a : members[s]) m << " " << a;
  }
  method = m.str();
  return split_of;
}

std::string joined_hashes(const std::vector<std::unique_ptr<SourceTree>>& trees) {
  std::string out;
  for (const auto& t : trees)
    out += (out.empty() ? "" : ";") + input_label(*t) + ":" + t->content_sha256();
  return out;
}

}  // namespace

OmniglotSplit parse_omniglot_split(const std::string& value, const std::string& key) {
  if (value == "auto") return OmniglotSplit::kAuto;
  if (value == "standard") return OmniglotSplit::kStandard;
  if (value == "alphabet") return OmniglotSplit::kAlphabet;
  throw UsageError(
      concat(key, "='", value, "' is not a split method; use auto, standard or ", "alphabet"));
}

StoreContents pack_omniglot(const std::vector<std::string>& inputs,
                            const OmniglotPackOptions& options) {
  MT_REQUIRE(!inputs.empty(), "no Omniglot input given; pass images_background*.zip and/or ",
             "images_evaluation.zip (or their unpacked folders)");
  std::vector<std::unique_ptr<SourceTree>> trees;
  std::map<std::string, Character> chars;
  for (const std::string& in : inputs) {
    trees.push_back(SourceTree::open(in));
    collect_characters(*trees.back(), chars);
  }
  std::vector<std::string> keys;
  for (const auto& [k, c] : chars) keys.push_back(k);
  const int64_t n_chars = static_cast<int64_t>(keys.size());

  StoreContents out;
  out.dataset = "omniglot";
  out.height = out.width = kSize;
  out.channels = 1;
  out.deflate = 4;  // strokes on black compress about tenfold
  out.string_attrs["source_sha256"] = joined_hashes(trees);
  out.string_attrs["created_by"] = "metapack omniglot";

  OmniglotSplit split = options.split;
  if (split == OmniglotSplit::kAuto)
    split =
        n_chars == kOmniglotFullCharacters ? OmniglotSplit::kStandard : OmniglotSplit::kAlphabet;
  std::vector<std::string> split_of(n_chars);
  if (split == OmniglotSplit::kStandard) {
    MT_REQUIRE(n_chars == kOmniglotFullCharacters, "split=standard needs the full Omniglot (",
               kOmniglotFullCharacters, " characters: images_background.zip and ",
               "images_evaluation.zip); the inputs hold ", n_chars, "; use split=alphabet");
    for (int64_t i = 0; i < n_chars; ++i)
      split_of[i] = i < kOmniglotStandardTrainCharacters ? "train" : "test";
    out.string_attrs["split_method"] = concat(
        "standard: the first ", kOmniglotStandardTrainCharacters, " of ", kOmniglotFullCharacters,
        " characters sorted by <alphabet>/<character> train, the other ",
        kOmniglotFullCharacters - kOmniglotStandardTrainCharacters, " test; no val");
  } else {
    std::string method;
    const auto by_alphabet = alphabet_split(keys, options.split_seed, method);
    for (int64_t i = 0; i < n_chars; ++i)
      split_of[i] = by_alphabet.at(keys[i].substr(0, keys[i].find('/')));
    out.string_attrs["split_method"] = method;
  }

  std::vector<ImageJob> jobs;
  for (const std::string& k : keys)
    for (const std::string& f : chars[k].files) jobs.push_back({chars[k].tree, f});
  const std::vector<uint8_t> base = decode_all(jobs, options.progress);

  out.splits = {{"train", {}}, {"val", {}}, {"test", {}}};
  out.class_offsets = {0};
  int64_t image = 0;
  std::vector<uint8_t> rotated(kPixels);
  for (int64_t i = 0; i < n_chars; ++i) {
    const int64_t count = static_cast<int64_t>(chars[keys[i]].files.size());
    const uint8_t* first = base.data() + image * kPixels;
    image += count;
    const bool rotate = options.rotations && split_of[i] == "train";
    for (int r = 0; r < (rotate ? 4 : 1); ++r) {
      const auto label = static_cast<int32_t>(out.class_names.size());
      out.class_names.push_back(r == 0 ? keys[i] : concat(keys[i], "/rot", 90 * r));
      out.splits[split_of[i]].push_back(label);
      for (int64_t j = 0; j < count; ++j) {
        const uint8_t* src = first + j * kPixels;
        if (r == 0) {
          out.images.insert(out.images.end(), src, src + kPixels);
        } else {  // rotate the previous rotation of this image once more
          const size_t prev = out.images.size() - static_cast<size_t>(count) * kPixels;
          rotate90(out.images.data() + prev, rotated.data());
          out.images.insert(out.images.end(), rotated.begin(), rotated.end());
        }
        out.labels.push_back(label);
      }
      out.class_offsets.push_back(static_cast<int64_t>(out.labels.size()));
    }
  }
  return out;
}

StoreContents pack_omniglot_lake(const std::string& input, const PackProgress& progress) {
  const std::unique_ptr<SourceTree> tree = SourceTree::open(input);
  const std::string not_runs = concat("'", input, "' does not look like Lake's one-shot runs ",
                                      "(all_runs.zip with runNN/class_labels.txt, ",
                                      "runNN/training/classKK.png, runNN/test/itemKK.png)");
  std::vector<std::string> runs;  // "<prefix>runNN/" of each run, sorted
  for (const std::string& f : tree->files())
    if (ends_with(f, "/class_labels.txt")) runs.push_back(f.substr(0, f.size() - 16));
  MT_REQUIRE(!runs.empty(), not_runs, ": no class_labels.txt found");

  constexpr int kWays = 20;
  StoreContents out;
  out.dataset = "omniglot-lake";
  out.height = out.width = kSize;
  out.channels = 1;
  out.deflate = 4;
  out.string_attrs["source_sha256"] = input_label(*tree) + ":" + tree->content_sha256();
  out.string_attrs["created_by"] = "metapack omniglot-lake";
  out.string_attrs["split_method"] =
      "lake: every class in test; /episodes are the 20-way one-shot runs";
  out.episodes.ways = kWays;
  out.episodes.shots = out.episodes.queries = 1;
  out.splits = {{"train", {}}, {"val", {}}, {"test", {}}};
  out.class_offsets = {0};
  std::vector<ImageJob> jobs;
  for (const std::string& run : runs) {
    const std::vector<uint8_t> text = tree->read(run + "class_labels.txt");
    // class_labels.txt names files from the folder holding the runs: "runNN/test/itemKK.png".
    const std::string base = run.substr(0, run.rfind('/', run.size() - 2) + 1);
    const std::string run_name = run.substr(base.size());  // "runNN/"
    std::map<std::string, std::string> item_of;            // exemplar file -> test item file
    std::istringstream lines(std::string(text.begin(), text.end()));
    for (std::string item, exemplar; lines >> item >> exemplar;) {
      MT_REQUIRE(item_of.emplace(base + exemplar, base + item).second, not_runs, ": ", run,
                 "class_labels.txt names ", exemplar, " twice");
    }
    MT_REQUIRE(item_of.size() == kWays, not_runs, ": ", run, "class_labels.txt pairs ",
               item_of.size(), " exemplars, expected ", kWays);
    for (const auto& [exemplar, item] : item_of) {
      for (const std::string& f : {exemplar, item})
        MT_REQUIRE(std::binary_search(tree->files().begin(), tree->files().end(), f), not_runs,
                   ": ", run, "class_labels.txt names ", f, ", which is not in the archive");
      const auto label = static_cast<int32_t>(out.class_names.size());
      const std::string file = path_parts(exemplar).back();  // "classKK.png"
      out.class_names.push_back(run_name + file.substr(0, file.rfind('.')));
      out.splits["test"].push_back(label);
      const int64_t first = static_cast<int64_t>(jobs.size());
      jobs.push_back({tree.get(), exemplar});
      jobs.push_back({tree.get(), item});
      out.labels.push_back(label);
      out.labels.push_back(label);
      out.class_offsets.push_back(first + 2);
      out.episodes.support.push_back(first);
      out.episodes.query.push_back(first + 1);
    }
  }
  out.images = decode_all(jobs, progress);
  return out;
}

}  // namespace mt
