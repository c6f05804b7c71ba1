// Folder packer (data/folder_packer.h): finds the classes of a class-folder tree or a CSV, takes
// the splits from the layout, the user's lists or a seeded ratio, then decodes every image in
// parallel into its final slot (so the store does not depend on the thread count).
#include "data/folder_packer.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "core/check.h"
#include "core/rng.h"
#include "data/image_resize.h"
#include "data/jpeg_decode.h"
#include "data/png_decode.h"
#include "data/sha256.h"

namespace mt {
namespace {

namespace fs = std::filesystem;
using detail::concat;

constexpr int kNumSplits = 3;

std::vector<std::string> split_on(const std::string& text, char sep) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (size_t at; (at = text.find(sep, start)) != std::string::npos; start = at + 1)
    parts.push_back(text.substr(start, at - start));
  parts.push_back(text.substr(start));
  return parts;
}

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  const size_t e = s.find_last_not_of(" \t\r");
  std::string t = s.substr(b, e - b + 1);
  if (t.size() >= 2 && t.front() == '"' && t.back() == '"') t = t.substr(1, t.size() - 2);
  return t;
}

std::vector<std::string> split_fields(const std::string& line) {
  std::vector<std::string> fields;
  for (const std::string& f : split_on(line, ',')) fields.push_back(trim(f));
  return fields;
}

bool is_hidden(const std::vector<std::string>& parts) {
  return std::any_of(parts.begin(), parts.end(),
                     [](const std::string& p) { return !p.empty() && p[0] == '.'; });
}

enum class ImageType { kNone, kPng, kJpeg };

ImageType image_type(const std::string& name) {
  const size_t dot = name.rfind('.');
  if (dot == std::string::npos) return ImageType::kNone;
  std::string ext = name.substr(dot + 1);
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  if (ext == "png") return ImageType::kPng;
  return ext == "jpg" || ext == "jpeg" ? ImageType::kJpeg : ImageType::kNone;
}

bool accepts(const image_folder::ImageKinds& kinds, const std::string& name) {
  const ImageType t = image_type(name);
  return t == ImageType::kJpeg || (kinds.png && t == ImageType::kPng);
}

// Column index of each wanted column in `header`, or -1.
std::vector<int> find_columns(const std::vector<std::string>& header,
                              const std::vector<std::string>& columns) {
  std::vector<int> at(columns.size(), -1);
  for (size_t c = 0; c < columns.size(); ++c)
    for (size_t i = 0; i < header.size(); ++i)
      if (header[i] == columns[c]) at[c] = static_cast<int>(i);
  return at;
}

}  // namespace

namespace image_folder {

const char* const kSplitNames[3] = {"train", "val", "test"};

namespace {

// Adds the class folders in <root>/<sub> (split s; -1 without splits) to `classes`.
void add_class_folders(const std::string& root, const std::string& sub, int s, ClassMap& classes) {
  const fs::path dir = sub.empty() ? fs::path(root) : fs::path(root) / sub;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!it->is_directory(ec) || name.empty() || name[0] == '.') continue;
    const std::string here = join(root, sub.empty() ? name : sub + "/" + name) + "/";
    auto [entry, is_new] = classes.try_emplace(name);
    if (is_new) {
      entry->second.split = s;
      entry->second.where = here;
    }
    MT_REQUIRE(entry->second.split == s, "class '", name, "' has a folder in both '",
               entry->second.where, "' and '", here,
               "'; a class must belong to one split: remove one of them");
  }
  MT_REQUIRE(!ec, "cannot list folder '", dir.generic_string(), "': ", ec.message(),
             "; check its permissions");
}

// One image file into `out` [height, width, channels] of `format` (see ImageFormat).
void decode_image(const std::vector<uint8_t>& data, const std::string& what, bool png,
                  const ImageFormat& format, uint8_t* out) {
  RgbImage img = png ? decode_png_rgb(data.data(), data.size(), what)
                     : decode_jpeg_rgb(data.data(), data.size(), what);
  std::vector<uint8_t> pixels =
      format.channels == 1
          ? gray_from_rgb(img.pixels.data(), static_cast<size_t>(img.height) * img.width)
          : std::move(img.pixels);
  if (format.invert)
    for (uint8_t& p : pixels) p = static_cast<uint8_t>(255 - p);
  const std::vector<uint8_t> small = resize_area(pixels.data(), img.height, img.width,
                                                 format.channels, format.height, format.width);
  std::memcpy(out, small.data(), small.size());
}

// Decodes image i into slot i of out.images, in parallel. On failure, images after the
// first failing one are skipped; every image before it is still decoded, so the error reported
// is always that of the first bad image in store order.
void decode_all(const SourceTree& tree, const std::string& root, const std::vector<ImageRef>& files,
                const ImageFormat& format, const PackProgress& progress, StoreContents& out) {
  const auto n = static_cast<int64_t>(files.size());
  const int64_t bytes = out.image_bytes();
  out.images.assign(static_cast<size_t>(n * bytes), 0);
  std::atomic<int64_t> first_bad{n};
  std::atomic<int64_t> done{0};
  std::exception_ptr error;
  int64_t reported = 0;  // touched by thread 0 only
  const int64_t report_every = std::max<int64_t>(1, n / 200);
  if (progress) progress(0, n);
#pragma omp parallel for schedule(dynamic, 8)
  for (int64_t i = 0; i < n; ++i) {
    if (i > first_bad.load()) continue;
    try {
      const ImageRef& f = files[i];
      decode_image(tree.read(f.file), join(root, f.file), f.png, format,
                   out.images.data() + i * bytes);
      const int64_t d = ++done;
      if (progress && omp_get_thread_num() == 0 && d - reported >= report_every) {
        reported = d;
        progress(d, n);
      }
    } catch (...) {
#pragma omp critical(mt_image_folder_pack_error)
      if (i < first_bad.load()) {
        first_bad = i;
        error = std::current_exception();
      }
    }
  }
  if (error) std::rethrow_exception(error);
  if (progress) progress(n, n);
}

}  // namespace

std::string join(const std::string& root, const std::string& rel) {
  return (fs::path(root) / rel).generic_string();
}

std::string folder_name(const std::string& root) {
  fs::path p = fs::absolute(root).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();
  return p.filename().string();
}

CsvTable parse_csv(const std::vector<uint8_t>& bytes, const std::string& shown,
                   const std::vector<std::string>& required,
                   const std::vector<std::string>& optional, const std::string& header) {
  std::vector<std::string> columns = required;
  columns.insert(columns.end(), optional.begin(), optional.end());
  std::string text(bytes.begin(), bytes.end());
  if (text.compare(0, 3, "\xEF\xBB\xBF") == 0) text.erase(0, 3);  // UTF-8 byte order mark
  std::vector<std::string> head;
  std::vector<int> at;
  CsvTable table;
  int line_no = 0;
  for (size_t start = 0; start < text.size();) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(start, end - start);
    start = end + 1;
    ++line_no;
    if (trim(line).empty()) continue;
    std::vector<std::string> fields = split_fields(line);
    if (head.empty()) {
      head = std::move(fields);
      at = find_columns(head, columns);
      for (size_t c = 0; c < required.size(); ++c)
        MT_REQUIRE(at[c] >= 0, "'", shown, "' is missing column '", columns[c],
                   "' (its header is '", trim(line), "'); the first line must be the header '",
                   header, "'");
      for (int a : at) table.present.push_back(a >= 0);
      continue;
    }
    MT_REQUIRE(fields.size() == head.size(), "'", shown, "' line ", line_no, " has ", fields.size(),
               " fields, expected ", head.size(), " like its header; fix or remove the line");
    CsvRow row{line_no, {}};
    for (size_t c = 0; c < columns.size(); ++c) {
      row.fields.push_back(at[c] >= 0 ? fields[at[c]] : "");
      MT_REQUIRE(at[c] < 0 || !row.fields.back().empty(), "'", shown, "' line ", line_no,
                 " has an empty ", columns[c], "; fix or remove the line");
    }
    table.rows.push_back(std::move(row));
  }
  MT_REQUIRE(!head.empty(), "'", shown, "' is empty; it must start with the header '", header, "'");
  return table;
}

ClassMap scan_class_folders(const SourceTree& tree, const std::string& root, bool with_splits,
                            const ImageKinds& kinds) {
  const std::string layout =
      concat("<root>/", with_splits ? "{train,val,test}/" : "", "<class>/", kinds.example);
  ClassMap classes;
  if (!with_splits) add_class_folders(root, "", -1, classes);
  for (int s = 0; with_splits && s < kNumSplits; ++s) {
    MT_REQUIRE(fs::is_directory(fs::path(root) / kSplitNames[s]), "'", join(root, kSplitNames[s]),
               "/' is missing: the folder layout needs train/, val/ and test/, each holding one "
               "folder per class (",
               layout, ")");
    add_class_folders(root, kSplitNames[s], s, classes);
  }
  const size_t depth = with_splits ? 1 : 0;  // index of the class folder in a path
  for (const std::string& file : tree.files()) {
    const std::vector<std::string> parts = split_on(file, '/');
    const bool in_split =
        std::find(kSplitNames, kSplitNames + kNumSplits, parts[0]) != kSplitNames + kNumSplits;
    if (is_hidden(parts) || (with_splits ? !in_split : parts.size() == 1)) continue;
    MT_REQUIRE(parts.size() == depth + 2, "'", join(root, file),
               parts.size() < depth + 2 ? "' is not inside a class folder"
                                        : "' is in a folder inside a class folder",
               "; the folder layout is ", layout, ": move or remove it");
    MT_REQUIRE(accepts(kinds, parts.back()), "'", join(root, file), "' is not a ", kinds.name, " (",
               kinds.extensions, "); class folders hold only ", kinds.name, " images: remove it");
    const bool png = image_type(parts.back()) == ImageType::kPng;
    classes.at(parts[depth]).images.push_back({file, parts.back(), png});
  }
  for (const auto& [label, c] : classes)
    MT_REQUIRE(!c.images.empty(), "class folder '", c.where, "' holds no ", kinds.name,
               " images; add its images or remove the folder");
  return classes;
}

StoreContents pack_classes(const SourceTree& tree, const std::string& root, const ClassMap& classes,
                           const ImageFormat& format, const PackProgress& progress) {
  // Class order: split (train, val, test), then name; images within a class by name.
  std::vector<std::pair<std::string, const ClassEntry*>> order;
  for (const auto& [label, c] : classes) {
    MT_CHECK(c.split >= 0 && c.split < kNumSplits, "class '", label, "' has no split");
    order.emplace_back(label, &c);
  }
  std::stable_sort(order.begin(), order.end(),
                   [](const auto& a, const auto& b) { return a.second->split < b.second->split; });
  StoreContents out;
  out.height = format.height;
  out.width = format.width;
  out.channels = format.channels;
  out.deflate = 0;
  std::vector<ImageRef> files;  // in store order
  out.class_offsets.push_back(0);
  for (const char* split : kSplitNames) out.splits[split] = {};
  for (size_t k = 0; k < order.size(); ++k) {
    std::vector<ImageRef> images = order[k].second->images;
    std::sort(images.begin(), images.end(),
              [](const ImageRef& a, const ImageRef& b) { return a.name < b.name; });
    for (const ImageRef& img : images) {
      files.push_back(img);
      out.labels.push_back(static_cast<int32_t>(k));
    }
    out.class_offsets.push_back(static_cast<int64_t>(files.size()));
    out.class_names.push_back(order[k].first);
    out.splits[kSplitNames[order[k].second->split]].push_back(static_cast<int32_t>(k));
  }
  decode_all(tree, root, files, format, progress, out);
  return out;
}

}  // namespace image_folder

namespace {

using image_folder::ClassEntry;
using image_folder::ClassMap;
using image_folder::join;
using image_folder::kSplitNames;

constexpr int64_t kMillion = 1000000;
const image_folder::ImageKinds kPngOrJpeg{true, "PNG or JPEG", ".png, .jpg or .jpeg",
                                          "<image>.png|.jpg"};

// A decimal >= 0 with at most 6 digits either side of the point, in millionths; -1 otherwise.
int64_t parse_millionths(const std::string& s) {
  const size_t dot = s.find('.');
  const std::string whole = s.substr(0, dot);
  const std::string frac = dot == std::string::npos ? "" : s.substr(dot + 1);
  auto digits = [](const std::string& t) {
    return t.size() <= 6 && t.find_first_not_of("0123456789") == std::string::npos;
  };
  if ((whole.empty() && frac.empty()) || !digits(whole) || !digits(frac)) return -1;
  const int64_t w = whole.empty() ? 0 : std::stoll(whole);
  const int64_t f = frac.empty() ? 0 : std::stoll(frac + std::string(6 - frac.size(), '0'));
  return w * kMillion + f;
}

std::vector<uint8_t> read_input_file(const std::string& path, const char* what) {
  MT_REQUIRE(fs::is_regular_file(path), what, " '", path, "' does not exist; check the path");
  std::ifstream in(path, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  MT_REQUIRE(!in.bad(), "cannot read ", what, " '", path, "'; check its permissions");
  return bytes;
}

// Provenance of the side files: ";<file name>:<sha256>".
std::string file_hash(const std::string& path, const std::vector<uint8_t>& bytes) {
  return concat(";", fs::path(path).filename().string(), ":", sha256_hex(bytes));
}

// Where the splits came from, and the side files' hashes for source_sha256.
struct SplitSource {
  std::string method;
  std::string hashes;
};

int split_index(const std::string& name) {
  for (int s = 0; s < kNumSplits; ++s)
    if (name == kSplitNames[s]) return s;
  return -1;
}

// The CSV layout: rows file,class[,split] naming images of `tree`. Sets *has_split.
ClassMap scan_csv(const SourceTree& tree, const std::string& root, const std::string& csv,
                  const std::vector<uint8_t>& bytes, bool* has_split) {
  const image_folder::CsvTable table =
      image_folder::parse_csv(bytes, csv, {"file", "class"}, {"split"}, "file,class,split");
  *has_split = table.present[2];
  const std::unordered_set<std::string> files(tree.files().begin(), tree.files().end());
  std::unordered_map<std::string, int> listed;  // file -> line
  ClassMap classes;
  for (const image_folder::CsvRow& row : table.rows) {
    const std::string at = concat("'", csv, "' line ", row.line);
    const std::string file = fs::path(row.fields[0]).lexically_normal().generic_string();
    MT_REQUIRE(files.count(file) != 0, at, " names '", row.fields[0], "', which is not in '",
               join(root, ""), "'; add the image or fix the line");
    MT_REQUIRE(image_type(file) != ImageType::kNone, at, " names '", join(root, file),
               "', which is not a PNG or JPEG (.png, .jpg or .jpeg); remove the line");
    const auto [seen, fresh] = listed.emplace(file, row.line);
    MT_REQUIRE(fresh, at, " lists '", file, "' again (line ", seen->second,
               " lists it already); remove one of the lines");
    const int split = *has_split ? split_index(row.fields[2]) : -1;
    MT_REQUIRE(!*has_split || split >= 0, at, " has split '", row.fields[2],
               "'; use train, val or test");
    auto [it, is_new] = classes.try_emplace(row.fields[1]);
    if (is_new) it->second = {split, concat(csv, " line ", row.line), {}};
    MT_REQUIRE(it->second.split == split, at, " puts class '", row.fields[1], "' in split ",
               kSplitNames[std::max(split, 0)], ", but ", it->second.where, " puts it in ",
               kSplitNames[std::max(it->second.split, 0)], "; a class must belong to one split");
    it->second.images.push_back({file, file, image_type(file) == ImageType::kPng});
  }
  return classes;
}

// Every class to the split whose list (one class name per line) names it.
SplitSource assign_split_lists(ClassMap& classes, const std::vector<std::string>& lists,
                               const std::string& source) {
  MT_REQUIRE(lists.size() == 3, "--split-lists takes three files (train,val,test), got ",
             lists.size());
  SplitSource out{"lists:", ""};
  std::map<std::string, std::string> listed_at;  // class -> "'<list>' line <n>"
  for (int s = 0; s < kNumSplits; ++s) {
    const std::vector<uint8_t> bytes = read_input_file(lists[s], "split list");
    out.method += (s > 0 ? "," : "") + fs::path(lists[s]).filename().string();
    out.hashes += file_hash(lists[s], bytes);
    int line_no = 0;
    for (const std::string& line : split_on(std::string(bytes.begin(), bytes.end()), '\n')) {
      const std::string name = trim(line);
      const std::string at = concat("'", lists[s], "' line ", ++line_no);
      if (name.empty()) continue;
      const auto it = classes.find(name);
      MT_REQUIRE(it != classes.end(), at, " names class '", name, "', which is not in '", source,
                 "'; fix the name or remove the line");
      const auto [seen, fresh] = listed_at.emplace(name, at);
      MT_REQUIRE(fresh, at, " lists class '", name, "' again (", seen->second,
                 " lists it already); a class must belong to one split: remove one of the lines");
      it->second.split = s;
    }
  }
  for (const auto& [name, c] : classes)
    MT_REQUIRE(c.split >= 0, "class '", name, "' (", c.where, ") is in none of the split lists ",
               out.method.substr(6), "; add it to one of them");
  return out;
}

// Whole classes by a seeded shuffle of the classes in name order: the first split_counts[0]
// train, the next val, the rest test.
SplitSource assign_ratio_split(ClassMap& classes, const SplitRatio& ratio, uint64_t seed,
                               const std::string& source) {
  std::vector<ClassEntry*> order;
  for (auto& [name, c] : classes) order.push_back(&c);
  Rng rng(seed, 0, 0, Stream::kSplit);
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);
  const auto n = static_cast<int64_t>(order.size());
  const std::array<int64_t, 3> counts = split_counts(n, ratio);
  for (int s = 0; s < kNumSplits; ++s)
    MT_REQUIRE(counts[s] >= 1, "--split-ratio ", ratio.text(), " leaves split ", kSplitNames[s],
               " without a class: '", source, "' has ", n,
               " classes; give that split a larger share or add classes");
  size_t next = 0;
  for (int s = 0; s < kNumSplits; ++s)
    for (int64_t j = 0; j < counts[s]; ++j) order[next++]->split = s;
  return {concat("ratio:", ratio.text(), " seed ", seed), ""};
}

// The classes of options.csv or of the class folders under `root`, splits assigned where the
// layout gives them (*has_splits). `shown` names the input in messages.
ClassMap scan_layout(const SourceTree& tree, const std::string& root,
                     const FolderPackOptions& options, const std::string& shown, bool* has_splits,
                     SplitSource* source) {
  ClassMap classes;
  if (!options.csv.empty()) {
    const std::vector<uint8_t> bytes = read_input_file(options.csv, "CSV");
    classes = scan_csv(tree, root, options.csv, bytes, has_splits);
    *source = {concat("csv:", fs::path(options.csv).filename().string()),
               file_hash(options.csv, bytes)};
  } else {
    *has_splits = false;
    for (const char* split : kSplitNames) *has_splits |= fs::is_directory(fs::path(root) / split);
    classes = image_folder::scan_class_folders(tree, root, *has_splits, kPngOrJpeg);
    *source = {"folders:train,val,test", ""};
  }
  MT_REQUIRE(!classes.empty(), "'", shown,
             "' holds no classes; lay out <root>/<class>/<image> or "
             "<root>/{train,val,test}/<class>/<image>, or list file,class,split in a CSV");
  return classes;
}

// Splits for a layout without them (has_splits false): the user's lists, else the seeded ratio.
// A layout that fixes the splits takes neither option.
void assign_splits(ClassMap& classes, const FolderPackOptions& options, const std::string& shown,
                   bool has_splits, SplitSource* source) {
  const char* given = options.split_lists.empty() ? "--split-ratio" : "--split-lists";
  MT_REQUIRE(!has_splits || (options.split_lists.empty() && !options.ratio), given,
             " given, but the splits of '", shown, "' are fixed by its ",
             options.csv.empty() ? "train/, val/, test/ folders" : "split column", "; drop ",
             given);
  if (has_splits) return;
  MT_REQUIRE(options.split_lists.empty() || !options.ratio,
             "give --split-lists or --split-ratio, not both");
  const SplitSource chosen = options.split_lists.empty()
                                 ? assign_ratio_split(classes, options.ratio.value_or(SplitRatio{}),
                                                      options.split_seed, shown)
                                 : assign_split_lists(classes, options.split_lists, shown);
  source->method = chosen.method;
  source->hashes += chosen.hashes;
}

// Every split needs a class: episodes are drawn from each.
void require_every_split(const ClassMap& classes, const std::string& shown) {
  std::array<int, 3> count{};
  for (const auto& [name, c] : classes) ++count[c.split];
  for (int s = 0; s < kNumSplits; ++s)
    MT_REQUIRE(count[s] > 0, "split ", kSplitNames[s], " of '", shown,
               "' has no class; every split needs at least one: give it one");
}

void require_format(const ImageFormat& f) {
  MT_REQUIRE(f.channels == 1 || f.channels == 3, "channels=", f.channels, " is not 1 or 3");
  MT_REQUIRE(f.height >= 1 && f.width >= 1 && f.height <= 4096 && f.width <= 4096, "size ",
             f.height, "x", f.width, " is not within 1x1 .. 4096x4096");
}

}  // namespace

std::string SplitRatio::text() const {
  std::string out;
  for (int64_t m : millionths) {
    std::string frac = std::to_string(kMillion + m % kMillion).substr(1);
    frac.erase(frac.find_last_not_of('0') + 1);
    out += concat(out.empty() ? "" : ",", m / kMillion, frac.empty() ? "" : ".", frac);
  }
  return out;
}

SplitRatio parse_split_ratio(const std::string& value, const std::string& key) {
  const std::vector<std::string> parts = split_on(value, ',');
  SplitRatio r;
  int64_t sum = 0;
  bool ok = parts.size() == 3;
  for (size_t s = 0; ok && s < 3; ++s) {
    r.millionths[s] = parse_millionths(trim(parts[s]));
    ok = r.millionths[s] >= 0;
    sum += r.millionths[s];
  }
  MT_REQUIRE(ok && sum == kMillion, key, "='", value,
             "' is not three shares TRAIN,VAL,TEST (decimals, at most 6 places) summing to 1; "
             "e.g. 0.64,0.16,0.2");
  return r;
}

std::array<int64_t, 3> split_counts(int64_t n, const SplitRatio& ratio) {
  const int64_t val = (n * ratio.millionths[1] + kMillion / 2) / kMillion;
  const int64_t test = (n * ratio.millionths[2] + kMillion / 2) / kMillion;
  return {n - val - test, val, test};
}

std::vector<uint8_t> gray_from_rgb(const uint8_t* rgb, size_t pixels) {
  std::vector<uint8_t> gray(pixels);
  for (size_t i = 0; i < pixels; ++i) {
    const uint32_t r = rgb[3 * i], g = rgb[3 * i + 1], b = rgb[3 * i + 2];
    gray[i] = static_cast<uint8_t>((6968 * r + 23434 * g + 2366 * b + 16384) >> 15);
  }
  return gray;
}

StoreContents pack_folder(const std::string& input, const FolderPackOptions& options) {
  require_format(options.format);
  const std::string root = input.empty() && !options.csv.empty()
                               ? fs::absolute(options.csv).parent_path().generic_string()
                               : input;
  MT_REQUIRE(!root.empty(), "no folder given; give the dataset's root folder (or --csv FILE)");
  MT_REQUIRE(fs::exists(root), "input '", root, "' does not exist; check the path");
  MT_REQUIRE(fs::is_directory(root), "input '", root,
             "' is not a folder (unpack archives first); give the dataset's root folder");
  const std::unique_ptr<SourceTree> tree = SourceTree::open(root);
  const std::string shown = options.csv.empty() ? root : options.csv;
  SplitSource source;
  bool has_splits = false;
  ClassMap classes = scan_layout(*tree, root, options, shown, &has_splits, &source);
  assign_splits(classes, options, shown, has_splits, &source);
  require_every_split(classes, shown);
  StoreContents out =
      image_folder::pack_classes(*tree, root, classes, options.format, options.progress);
  out.dataset = options.name.empty() ? image_folder::folder_name(root) : options.name;
  out.string_attrs["source_sha256"] =
      concat(image_folder::folder_name(root), "/:", tree->content_sha256(), source.hashes);
  out.string_attrs["split_method"] = source.method;
  out.string_attrs["created_by"] = "metapack folder";
  const std::string problem = store_problem(out);
  MT_CHECK(problem.empty(), "packed folder store is invalid: ", problem);
  return out;
}

}  // namespace mt
