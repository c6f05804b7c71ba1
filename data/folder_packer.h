// Packer for any image dataset laid out as class folders or listed in a CSV ("metapack folder"):
// PNG and JPEG at a chosen size and channel count, splits from the layout, the user's lists or a
// seeded ratio. Also the machinery the Mini-ImageNet packer shares (scanning, CSV, decoding).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "data/episode_store.h"  // StoreContents, PackProgress
#include "data/zip_reader.h"     // SourceTree

namespace mt {

// What every image becomes: decoded to RGB by its extension (.png: decode_png_rgb, .jpg/.jpeg:
// decode_jpeg_rgb), reduced to gray if channels == 1 (gray_from_rgb, for both formats),
// inverted if asked (v -> 255 - v, ink = 255 as in the Omniglot packer), then area-resized to
// height x width (data/image_resize.h) -- in that order.
struct ImageFormat {
  int height = 84, width = 84;  // the Mini-ImageNet size, when --size is not given
  int channels = 3;             // 1 or 3
  bool invert = false;
};

// Shares of the classes for train, val, test, in millionths (exact; they sum to 10^6).
struct SplitRatio {
  std::array<int64_t, 3> millionths = {640000, 160000, 200000};
  std::string text() const;  // "0.64,0.16,0.2"
};

// Parses "TRAIN,VAL,TEST": three decimals >= 0 with at most 6 decimal places, summing to 1.
// UsageError naming `key` otherwise.
SplitRatio parse_split_ratio(const std::string& value, const std::string& key);

// Classes per split (train, val, test) for n classes: val and test get round-half-up of
// n * share, train the rest. Example: 20 classes at 0.64,0.16,0.2 -> 13, 3, 4.
std::array<int64_t, 3> split_counts(int64_t n, const SplitRatio& ratio);

// Gray from interleaved RGB with libpng's default weights (Rec. 709 luma in 1/32768ths):
// g = (6968 R + 23434 G + 2366 B + 16384) >> 15, on the stored values (no gamma). Exact for gray
// input: R = G = B = v gives v.
std::vector<uint8_t> gray_from_rgb(const uint8_t* rgb, size_t pixels);

struct FolderPackOptions {
  ImageFormat format;
  std::string csv;                       // rows "file,class[,split]"; "" = class folders
  std::vector<std::string> split_lists;  // train, val, test files of class names; or none
  std::optional<SplitRatio> ratio;       // only when the input gives no splits; default 0.64,...
  uint64_t split_seed = 0;               // of the ratio split
  std::string name;                      // the dataset attribute; "" = the root folder's name
  PackProgress progress;
};

// root: a folder in one of the layouts below; "" with options.csv = the CSV's folder.
//   <root>/{train,val,test}/<class>/<image>   splits by the folders ("folders:train,val,test")
//   <root>/<class>/<image>                    no splits: by split_lists or ratio
//   options.csv with header file,class[,split] (any column order; files relative to root): splits
//     by the split column ("csv:<csv file name>") or, without it, by split_lists or ratio.
// Images: *.png, *.jpg, *.jpeg (any case); hidden files and files beside the class folders are
// ignored, anything else in a class folder is an error. Ratio split ("ratio:<text> seed <s>"):
// the classes in name order are shuffled by Rng(seed, 0, 0, kSplit); the first train count of
// split_counts go to train, the next to val, the rest to test. Split lists ("lists:<files>"):
// one class name per line, every class in exactly one list.
// Store: classes ordered by split (train, val, test) then name, images within a class by file
// name (CSV: by its path); every split holds at least one class. Attributes: source_sha256
// ("<root name>/:<SourceTree content sha256>" then ";<file name>:<sha256>" for the CSV and each
// list), split_method, created_by "metapack folder". The result depends only on the input's
// content and the root folder's name, not on where it lies or the thread count. Every bad input is
// a UsageError naming the file and the fix.
StoreContents pack_folder(const std::string& root, const FolderPackOptions& options);

// The pieces pack_folder and pack_miniimagenet share.
namespace image_folder {

extern const char* const kSplitNames[3];  // train, val, test

struct ImageRef {
  std::string file;  // path inside the tree
  std::string name;  // sort key within the class
  bool png = false;  // decoded as PNG, else as JPEG
};

struct ClassEntry {
  int split = -1;     // index into kSplitNames; -1 while not yet assigned
  std::string where;  // where the class was first seen, for messages
  std::vector<ImageRef> images;
};

using ClassMap = std::map<std::string, ClassEntry>;  // by class name

// The image files a layout accepts: JPEG only (Mini-ImageNet) or PNG and JPEG.
struct ImageKinds {
  bool png = false;
  const char* name;        // "JPEG", "PNG or JPEG"
  const char* extensions;  // ".jpg or .jpeg"
  const char* example;     // "<image>.jpg", for layout messages
};

std::string join(const std::string& root, const std::string& rel);
std::string folder_name(const std::string& root);  // last component of the absolute path

// A CSV whose first non-blank line is the header. Each row holds the fields of `columns`
// (required then optional, in that order; "" for an absent optional column). Fields are trimmed
// and unquoted; a UTF-8 byte order mark is skipped. `shown` names the file in messages, `header`
// is the header they suggest. UsageError for a missing required column, a row with another
// number of fields than the header, or an empty field of a present column.
struct CsvRow {
  int line = 0;
  std::vector<std::string> fields;
};
struct CsvTable {
  std::vector<bool> present;  // per column
  std::vector<CsvRow> rows;
};
CsvTable parse_csv(const std::vector<uint8_t>& bytes, const std::string& shown,
                   const std::vector<std::string>& required,
                   const std::vector<std::string>& optional, const std::string& header);

// Classes of a class-folder tree: <root>/{train,val,test}/<class>/ (with_splits) or
// <root>/<class>/; files beside the class folders and hidden files are ignored. UsageError for a
// missing split folder, a class in two splits, a file that is not a `kinds` image or not directly
// in a class folder, and a class folder without images.
ClassMap scan_class_folders(const SourceTree& tree, const std::string& root, bool with_splits,
                            const ImageKinds& kinds);

// Decodes every image of `classes` (split assigned) into a store of `format`: classes in split
// then name order, images by name, each decoded in parallel into its final slot. dataset and
// attributes are left to the caller.
StoreContents pack_classes(const SourceTree& tree, const std::string& root, const ClassMap& classes,
                           const ImageFormat& format, const PackProgress& progress);

}  // namespace image_folder
}  // namespace mt
