// Mini-ImageNet packer: finds the classes and images of one of the two layouts, then decodes and
// resizes every image in parallel (each into its final slot, so the store does not depend on
// the thread count), and fills StoreContents in class order.
#include "data/miniimagenet_packer.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstring>
#include <exception>
#include <filesystem>
#include <map>
#include <memory>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "core/check.h"
#include "data/image_resize.h"
#include "data/jpeg_decode.h"
#include "data/zip_reader.h"

namespace mt {
namespace {

namespace fs = std::filesystem;
using detail::concat;

const char* const kSplitNames[] = {"train", "val", "test"};
constexpr int kNumSplits = 3;

struct ImageRef {
  std::string file;  // path inside the tree
  std::string name;  // sort key within the class: the file name
};

struct ClassEntry {
  int split = 0;      // index into kSplitNames
  std::string where;  // where the class was first seen, for messages
  std::vector<ImageRef> images;
};

// Classes keyed by label.
using ClassMap = std::map<std::string, ClassEntry>;

std::string join(const std::string& root, const std::string& rel) {
  return (fs::path(root) / rel).generic_string();
}

std::string folder_name(const std::string& root) {
  fs::path p = fs::absolute(root).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();
  return p.filename().string();
}

bool is_jpeg_name(const std::string& name) {
  const size_t dot = name.rfind('.');
  if (dot == std::string::npos) return false;
  std::string ext = name.substr(dot + 1);
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  return ext == "jpg" || ext == "jpeg";
}

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

struct CsvRow {
  int line = 0;
  std::string filename, label;
};

// Rows of one split file. `shown` names it in messages.
std::vector<CsvRow> parse_split_csv(const std::vector<uint8_t>& bytes, const std::string& shown) {
  std::string text(bytes.begin(), bytes.end());
  if (text.compare(0, 3, "\xEF\xBB\xBF") == 0) text.erase(0, 3);  // UTF-8 byte order mark
  std::vector<std::string> header;
  int filename_col = -1, label_col = -1;
  std::vector<CsvRow> rows;
  int line_no = 0;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(start, end - start);
    start = end + 1;
    ++line_no;
    if (trim(line).empty()) continue;
    std::vector<std::string> fields = split_fields(line);
    if (header.empty()) {
      header = std::move(fields);
      for (size_t i = 0; i < header.size(); ++i) {
        if (header[i] == "filename") filename_col = static_cast<int>(i);
        if (header[i] == "label") label_col = static_cast<int>(i);
      }
      MT_REQUIRE(filename_col >= 0 && label_col >= 0, "'", shown, "' is missing column '",
                 filename_col < 0 ? "filename" : "label", "' (its header is '", trim(line),
                 "'); the first line must be the header 'filename,label'");
      continue;
    }
    MT_REQUIRE(fields.size() == header.size(), "'", shown, "' line ", line_no, " has ",
               fields.size(), " fields, expected ", header.size(),
               " like its header; fix or remove the line");
    CsvRow row{line_no, fields[filename_col], fields[label_col]};
    MT_REQUIRE(!row.filename.empty() && !row.label.empty(), "'", shown, "' line ", line_no,
               " has an empty ", row.filename.empty() ? "filename" : "label",
               "; fix or remove the line");
    rows.push_back(std::move(row));
  }
  MT_REQUIRE(!header.empty(), "'", shown,
             "' is empty; it must start with the header 'filename,label'");
  return rows;
}

// The CSV layout: <root>/{train,val,test}.csv naming JPEGs in <root>/images/.
ClassMap scan_csv_layout(const SourceTree& tree, const std::string& root) {
  const std::unordered_set<std::string> files(tree.files().begin(), tree.files().end());
  for (const char* split : kSplitNames) {
    const std::string csv = concat(split, ".csv");
    MT_REQUIRE(files.count(csv) != 0, "'", join(root, csv),
               "' is missing: the CSV layout needs train.csv, val.csv and test.csv (the Ravi & "
               "Larochelle split files) next to the images/ folder");
  }
  MT_REQUIRE(fs::is_directory(fs::path(root) / "images"), "'", join(root, "images/"),
             "' is missing: the CSV layout keeps the JPEGs the split files name in images/");
  ClassMap classes;
  std::unordered_map<std::string, std::string> listed;  // filename -> "<csv> line <n>"
  for (int s = 0; s < kNumSplits; ++s) {
    const std::string csv = concat(kSplitNames[s], ".csv");
    const std::string shown = join(root, csv);
    for (const CsvRow& row : parse_split_csv(tree.read(csv), shown)) {
      const std::string here = concat(csv, " line ", row.line);
      const std::string file = "images/" + row.filename;
      MT_REQUIRE(files.count(file) != 0, "'", shown, "' line ", row.line, " names '", row.filename,
                 "', which is not in '", join(root, "images/"),
                 "'; add the image or remove the line");
      const auto [seen, fresh] = listed.emplace(row.filename, here);
      MT_REQUIRE(fresh, "'", shown, "' line ", row.line, " lists image '", row.filename,
                 "' again (", seen->second, " lists it already); remove one of the lines");
      auto [it, is_new] = classes.try_emplace(row.label);
      ClassEntry& c = it->second;
      if (is_new) {
        c.split = s;
        c.where = here;
      }
      MT_REQUIRE(c.split == s, "'", shown, "' line ", row.line, " puts label '", row.label,
                 "' in split ", kSplitNames[s], ", but ", c.where, " puts it in ",
                 kSplitNames[c.split], "; a class must belong to one split");
      c.images.push_back({file, row.filename});
    }
  }
  return classes;
}

bool is_hidden(const std::vector<std::string>& parts) {
  return std::any_of(parts.begin(), parts.end(),
                     [](const std::string& p) { return !p.empty() && p[0] == '.'; });
}

// The folder layout: <root>/{train,val,test}/<class>/<image>.jpg. Hidden files are ignored.
ClassMap scan_folder_layout(const SourceTree& tree, const std::string& root) {
  const char* const layout = "<root>/{train,val,test}/<class>/<image>.jpg";
  ClassMap classes;
  for (int s = 0; s < kNumSplits; ++s) {
    const fs::path dir = fs::path(root) / kSplitNames[s];
    MT_REQUIRE(fs::is_directory(dir), "'", join(root, kSplitNames[s]),
               "/' is missing: the folder layout needs train/, val/ and test/, each holding one "
               "folder per class (",
               layout, ")");
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      if (!it->is_directory(ec) || name.empty() || name[0] == '.') continue;
      auto [entry, is_new] = classes.try_emplace(name);
      const std::string here = concat(join(root, kSplitNames[s]), "/", name, "/");
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
  for (const std::string& file : tree.files()) {
    const std::vector<std::string> parts = split_on(file, '/');
    const char* const* split = std::find(kSplitNames, kSplitNames + kNumSplits, parts[0]);
    if (split == kSplitNames + kNumSplits || is_hidden(parts)) continue;
    MT_REQUIRE(parts.size() == 3, "'", join(root, file), "' is not inside a class folder; the ",
               "folder layout is ", layout, ": move or remove it");
    MT_REQUIRE(is_jpeg_name(parts[2]), "'", join(root, file),
               "' is not a JPEG (.jpg or .jpeg); class folders hold only JPEG images: remove it");
    classes.at(parts[1]).images.push_back({file, parts[2]});
  }
  for (const auto& [label, c] : classes)
    MT_REQUIRE(!c.images.empty(), "class folder '", c.where,
               "' holds no JPEG images; add its images or remove the folder");
  return classes;
}

}  // namespace

StoreContents pack_miniimagenet(const std::vector<std::string>& inputs,
                                const MiniImageNetPackOptions& options) {
  const char* const expected =
      "give one folder holding train.csv, val.csv, test.csv and images/, or one folder holding "
      "train/, val/ and test/ with a folder per class";
  MT_REQUIRE(!inputs.empty(), "no Mini-ImageNet input given; ", expected);
  MT_REQUIRE(inputs.size() == 1, inputs.size(), " Mini-ImageNet inputs given ('", inputs[0], "', '",
             inputs[1], "'", inputs.size() > 2 ? ", ..." : "", "); ", expected);
  const std::string& root = inputs[0];
  MT_REQUIRE(fs::exists(root), "Mini-ImageNet input '", root, "' does not exist; check the path");
  MT_REQUIRE(fs::is_directory(root), "Mini-ImageNet input '", root,
             "' is not a folder (unpack archives first); ", expected);
  const std::unique_ptr<SourceTree> tree = SourceTree::open(root);

  const fs::path base(root);
  bool csv_layout = fs::is_directory(base / "images");
  for (const char* split : kSplitNames)
    csv_layout = csv_layout || fs::exists(base / concat(split, ".csv"));
  bool folder_layout = false;
  for (const char* split : kSplitNames)
    folder_layout = folder_layout || fs::is_directory(base / split);
  MT_REQUIRE(csv_layout || folder_layout, "'", root,
             "' is neither Mini-ImageNet layout (it has no train.csv, val.csv, test.csv or "
             "images/, and no train/, val/ or test/ folder); ",
             expected);
  const ClassMap classes =
      csv_layout ? scan_csv_layout(*tree, root) : scan_folder_layout(*tree, root);

  // Class order: split (train, val, test), then label; images within a class by file name.
  std::vector<std::pair<std::string, const ClassEntry*>> order;
  for (const auto& [label, c] : classes) order.emplace_back(label, &c);
  std::stable_sort(order.begin(), order.end(),
                   [](const auto& a, const auto& b) { return a.second->split < b.second->split; });

  StoreContents out;
  out.dataset = "miniimagenet";
  out.height = out.width = kMiniImageNetSize;
  out.channels = 3;
  out.deflate = 0;
  std::vector<std::string> files;
  out.class_offsets.push_back(0);
  for (const char* split : kSplitNames) out.splits[split] = {};
  for (size_t k = 0; k < order.size(); ++k) {
    std::vector<ImageRef> images = order[k].second->images;
    std::sort(images.begin(), images.end(),
              [](const ImageRef& a, const ImageRef& b) { return a.name < b.name; });
    for (const ImageRef& img : images) {
      files.push_back(img.file);
      out.labels.push_back(static_cast<int32_t>(k));
    }
    out.class_offsets.push_back(static_cast<int64_t>(files.size()));
    out.class_names.push_back(order[k].first);
    out.splits[kSplitNames[order[k].second->split]].push_back(static_cast<int32_t>(k));
  }
  const auto n = static_cast<int64_t>(files.size());
  MT_REQUIRE(n > 0, "'", root, "' holds no images; ", expected);

  const int64_t bytes = out.image_bytes();
  out.images.assign(static_cast<size_t>(n * bytes), 0);
  // On failure, images after the first failing one are skipped; every image before it is still
  // decoded, so the error reported is always that of the first bad image in store order.
  std::atomic<int64_t> first_bad{n};
  std::atomic<int64_t> done{0};
  std::exception_ptr error;
  int64_t reported = 0;  // touched by thread 0 only
  const int64_t report_every = std::max<int64_t>(1, n / 200);
  if (options.progress) options.progress(0, n);
#pragma omp parallel for schedule(dynamic, 8)
  for (int64_t i = 0; i < n; ++i) {
    if (i > first_bad.load()) continue;
    try {
      const std::vector<uint8_t> data = tree->read(files[i]);
      const RgbImage img = decode_jpeg_rgb(data.data(), data.size(), join(root, files[i]));
      const std::vector<uint8_t> small = resize_area(img.pixels.data(), img.height, img.width, 3,
                                                     kMiniImageNetSize, kMiniImageNetSize);
      std::memcpy(out.images.data() + i * bytes, small.data(), static_cast<size_t>(bytes));
      const int64_t d = ++done;
      if (options.progress && omp_get_thread_num() == 0 && d - reported >= report_every) {
        reported = d;
        options.progress(d, n);
      }
    } catch (...) {
#pragma omp critical(mt_miniimagenet_pack_error)
      if (i < first_bad.load()) {
        first_bad = i;
        error = std::current_exception();
      }
    }
  }
  if (error) std::rethrow_exception(error);
  if (options.progress) options.progress(n, n);

  out.string_attrs["source_sha256"] = concat(folder_name(root), "/:", tree->content_sha256());
  out.string_attrs["split_method"] =
      csv_layout ? "csv:train.csv,val.csv,test.csv" : "folders:train,val,test";
  out.string_attrs["created_by"] = "metapack miniimagenet";
  const std::string problem = store_problem(out);
  MT_CHECK(problem.empty(), "packed Mini-ImageNet store is invalid: ", problem);
  return out;
}

}  // namespace mt
