// Packers for Omniglot (Lake et al.): the character archives (images_background*.zip,
// images_evaluation.zip, full or small subsets, as zips or unpacked folders) and Lake's 20 runs
// of 20-way one-shot classification (all_runs.zip), into the episode store of data/episode_store.h.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/episode_store.h"

namespace mt {

constexpr int kOmniglotFullCharacters = 1623;           // 964 background + 659 evaluation
constexpr int kOmniglotStandardTrainCharacters = 1200;  // Vinyals et al. / Finn et al.
constexpr int kOmniglotSize = 28;

// auto: standard when all 1623 characters are given, alphabet otherwise.
// standard: the first 1200 characters (sorted by "<alphabet>/<character>") train, the rest test.
// alphabet: whole alphabets to train / val / test by a seeded shuffle (no alphabet in two splits).
enum class OmniglotSplit { kAuto, kStandard, kAlphabet };
// Parses auto | standard | alphabet; UsageError naming `key` otherwise.
OmniglotSplit parse_omniglot_split(const std::string& value, const std::string& key);

struct OmniglotPackOptions {
  OmniglotSplit split = OmniglotSplit::kAuto;
  uint64_t split_seed = 0;  // alphabet split only
  bool rotations = true;    // add 90/180/270-degree rotations of train characters as classes
  PackProgress progress;
};

// Images: each 105x105 PNG is decoded, inverted (ink = 255 on background 0, like the glyphs),
// and area-resized to 28x28 (data/image_resize.h: exact box filter, round half up). Classes are
// the characters "<Alphabet>/<characterNN>" in sorted order, images sorted by file name; each
// train character is followed by its rotations "<name>/rot90", "/rot180", "/rot270" (counter-
// clockwise). A character found in several inputs (Greek and Latin are in both small subsets)
// is taken once if its files are byte-identical, and rejected otherwise. Attributes:
// source_sha256 ("<input name>:<sha256>;..."), split_method, created_by.
// Throws UsageError naming the input for anything that is not Omniglot.
StoreContents pack_omniglot(const std::vector<std::string>& inputs,
                            const OmniglotPackOptions& options);

// Lake's one-shot runs: run r has 20 training exemplars classKK.png and 20 test items itemKK.png
// with the pairing in class_labels.txt. The store has one class "runNN/classKK" per exemplar
// holding [exemplar, its test item], all in split "test", and 20 fixed episodes (20-way,
// 1 shot, 1 query each) that are exactly the runs. Images as in pack_omniglot.
StoreContents pack_omniglot_lake(const std::string& input, const PackProgress& progress = {});

}  // namespace mt
