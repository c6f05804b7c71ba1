// Packer for Mini-ImageNet (Vinyals et al., with the Ravi & Larochelle class split): the split
// CSVs plus images/ folder, or the same classes as train/val/test class folders, into the
// episode store of data/episode_store.h as 84x84 RGB images.
#pragma once

#include <string>
#include <vector>

#include "data/episode_store.h"  // StoreContents, PackProgress

namespace mt {

constexpr int kMiniImageNetSize = 84;

struct MiniImageNetPackOptions {
  PackProgress progress;
};

// inputs: either ONE folder holding train.csv, val.csv, test.csv (header "filename,label", the
// Ravi & Larochelle split files) and an images/ subfolder with the JPEGs the CSVs name; or ONE
// folder in the folder-per-class layout <root>/{train,val,test}/<class>/*.jpg (also *.jpeg,
// *.JPEG).
//
// Every image is decoded (data/jpeg_decode.h) and area-resized to 84x84x3 (data/image_resize.h).
// Classes are the labels, ordered by split (train, val, test) then name; images within a class
// by file name. Attributes: source_sha256 ("<folder name>/:<SourceTree content sha256>"),
// split_method ("csv:train.csv,val.csv,test.csv" or "folders:train,val,test"), created_by.
// The result depends only on the input's content (not on the thread count). Throws UsageError
// naming the file and the problem for anything that is not one of the two layouts.
StoreContents pack_miniimagenet(const std::vector<std::string>& inputs,
                                const MiniImageNetPackOptions& options);

}  // namespace mt
