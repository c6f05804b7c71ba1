// Mini-ImageNet packer: finds the classes of one of the two layouts, then packs them with the
// shared class-folder machinery (data/folder_packer.h): every image decoded and resized in
// parallel into its final slot, so the store does not depend on the thread count.
#include "data/miniimagenet_packer.h"

#include <filesystem>
#include <memory>
#include <unordered_map>
#include <unordered_set>

#include "core/check.h"
#include "data/folder_packer.h"
#include "data/zip_reader.h"

namespace mt {
namespace {

namespace fs = std::filesystem;
using detail::concat;
using image_folder::ClassEntry;
using image_folder::ClassMap;
using image_folder::join;
using image_folder::kSplitNames;

constexpr int kNumSplits = 3;
const image_folder::ImageKinds kJpegOnly{false, "JPEG", ".jpg or .jpeg", "<image>.jpg"};

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
    const image_folder::CsvTable table =
        image_folder::parse_csv(tree.read(csv), shown, {"filename", "label"}, {}, "filename,label");
    for (const image_folder::CsvRow& row : table.rows) {
      const std::string &filename = row.fields[0], &label = row.fields[1];
      const std::string here = concat(csv, " line ", row.line);
      const std::string file = "images/" + filename;
      MT_REQUIRE(files.count(file) != 0, "'", shown, "' line ", row.line, " names '", filename,
                 "', which is not in '", join(root, "images/"),
                 "'; add the image or remove the line");
      const auto [seen, fresh] = listed.emplace(filename, here);
      MT_REQUIRE(fresh, "'", shown, "' line ", row.line, " lists image '", filename, "' again (",
                 seen->second, " lists it already); remove one of the lines");
      auto [it, is_new] = classes.try_emplace(label);
      ClassEntry& c = it->second;
      if (is_new) {
        c.split = s;
        c.where = here;
      }
      MT_REQUIRE(c.split == s, "'", shown, "' line ", row.line, " puts label '", label,
                 "' in split ", kSplitNames[s], ", but ", c.where, " puts it in ",
                 kSplitNames[c.split], "; a class must belong to one split");
      c.images.push_back({file, filename});
    }
  }
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
  const ClassMap classes = csv_layout
                               ? scan_csv_layout(*tree, root)
                               : image_folder::scan_class_folders(*tree, root, true, kJpegOnly);
  MT_REQUIRE(!classes.empty(), "'", root, "' holds no images; ", expected);
  const ImageFormat format{kMiniImageNetSize, kMiniImageNetSize, 3, false};
  StoreContents out = image_folder::pack_classes(*tree, root, classes, format, options.progress);
  out.dataset = "miniimagenet";
  out.string_attrs["source_sha256"] =
      concat(image_folder::folder_name(root), "/:", tree->content_sha256());
  out.string_attrs["split_method"] =
      csv_layout ? "csv:train.csv,val.csv,test.csv" : "folders:train,val,test";
  out.string_attrs["created_by"] = "metapack miniimagenet";
  const std::string problem = store_problem(out);
  MT_CHECK(problem.empty(), "packed Mini-ImageNet store is invalid: ", problem);
  return out;
}

}  // namespace mt
