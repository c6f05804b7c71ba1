// metapack: packs a dataset into an HDF5 episode store (DESIGN §7): Omniglot (zips or folders),
// Lake's one-shot runs, Mini-ImageNet (split CSVs + images, or folder per class), or any image
// folder or CSV. Prints progress and a summary; the same input always gives the same bytes.
#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "core/check.h"
#include "data/episode_store.h"
#include "data/folder_packer.h"
#include "data/miniimagenet_packer.h"
#include "data/omniglot_packer.h"
#include "launch/exit_codes.h"
#include "launch/progress.h"

namespace {

void usage() {
  std::printf(
      "usage: metapack <omniglot|omniglot-lake|miniimagenet|folder> -o OUT.h5 INPUT... "
      "[options]\n\n"
      "  omniglot       INPUT: images_background*.zip, images_evaluation.zip, or their unpacked\n"
      "                 folders (full set or the small subsets). 105x105 -> 28x28, ink = 1.\n"
      "                 --split auto|standard|alphabet  (auto: standard 1200-character train\n"
      "                    split for the full set, else a seeded split by alphabet)\n"
      "                 --split-seed N   seed of the alphabet split (default 0)\n"
      "                 --no-rotations   do not add 90/180/270-degree rotations to train\n"
      "  omniglot-lake  INPUT: all_runs.zip (Lake et al.'s 20 runs of 20-way one-shot)\n"
      "  miniimagenet   INPUT: a folder with train.csv, val.csv, test.csv and images/, or a\n"
      "                 folder with train/, val/, test/ holding one folder per class. -> "
      "84x84x3\n"
      "  folder         INPUT: a folder of class folders holding PNG/JPEG images, either\n"
      "                 <root>/<class>/<image> or <root>/{train,val,test}/<class>/<image>\n"
      "                 (hidden files, files beside the class folders ignored); or --csv FILE\n"
      "                 [ROOT]. Decode, gray if 1 channel, invert if asked, box-filter resize.\n"
      "                 --size H[xW]      image size (default 84: 84x84)\n"
      "                 --channels 1|3    gray or RGB (default 3)\n"
      "                 --invert          v -> 255 - v before resizing (dark ink -> ink = 1)\n"
      "                 --csv FILE        rows file,class[,split] after a header; files relative\n"
      "                    to ROOT, or to the CSV's folder when no ROOT is given\n"
      "                 --split-ratio T,V,S  shares of whole classes for train, val, test when\n"
      "                    the layout gives no splits (default 0.64,0.16,0.2)\n"
      "                 --split-seed N    seed of the ratio split (default 0)\n"
      "                 --split-lists A,B,C  files naming the train, val, test classes (one per\n"
      "                    line), instead of a ratio\n"
      "                 --name NAME       the store's dataset name (default: the folder's name)\n\n"
      "Exit codes: 0 ok, 2 bad usage or input (the message names the file), 1 runtime failure.\n");
}

struct Args {
  std::string kind, out;
  std::vector<std::string> inputs;
  mt::OmniglotPackOptions omniglot;
  mt::FolderPackOptions folder;
};

uint64_t parse_count(const std::string& key, const std::string& v) {
  MT_REQUIRE(!v.empty() && v.size() <= 19 && v.find_first_not_of("0123456789") == std::string::npos,
             key, "='", v, "' is not a non-negative integer");
  return std::stoull(v);
}

// "H" or "HxW" (the packer checks the range).
void parse_size(const std::string& v, mt::ImageFormat& f) {
  const size_t x = v.find('x');
  const std::string h = v.substr(0, x), w = x == std::string::npos ? h : v.substr(x + 1);
  auto number = [](const std::string& t) {
    return !t.empty() && t.size() <= 9 && t.find_first_not_of("0123456789") == std::string::npos;
  };
  MT_REQUIRE(number(h) && number(w), "--size='", v, "' is not H or HxW (e.g. 84 or 32x48)");
  f.height = std::stoi(h);
  f.width = std::stoi(w);
}

std::vector<std::string> comma_list(const std::string& v) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t at; (at = v.find(',', start)) != std::string::npos; start = at + 1)
    out.push_back(v.substr(start, at - start));
  out.push_back(v.substr(start));
  return out;
}

// The options of `metapack folder`; false if `arg` is not one.
bool folder_option(const std::string& arg, const std::function<std::string()>& value,
                   mt::FolderPackOptions& o) {
  if (arg == "--size") {
    parse_size(value(), o.format);
  } else if (arg == "--channels") {
    const std::string v = value();
    MT_REQUIRE(v == "1" || v == "3", "--channels='", v, "' is not 1 or 3");
    o.format.channels = v[0] - '0';
  } else if (arg == "--invert") {
    o.format.invert = true;
  } else if (arg == "--csv") {
    o.csv = value();
  } else if (arg == "--split-ratio") {
    o.ratio = mt::parse_split_ratio(value(), "--split-ratio");
  } else if (arg == "--split-seed") {
    o.split_seed = parse_count("--split-seed", value());
  } else if (arg == "--split-lists") {
    o.split_lists = comma_list(value());
  } else if (arg == "--name") {
    o.name = value();
  } else {
    return false;
  }
  return true;
}

Args parse(int argc, char** argv) {
  Args a;
  MT_REQUIRE(argc >= 2, "missing dataset kind; usage: metapack <omniglot|omniglot-lake|",
             "miniimagenet|folder> -o OUT.h5 INPUT...");
  a.kind = argv[1];
  MT_REQUIRE(a.kind == "omniglot" || a.kind == "omniglot-lake" || a.kind == "miniimagenet" ||
                 a.kind == "folder",
             "unknown dataset kind '", a.kind,
             "'; use omniglot, omniglot-lake, miniimagenet or folder");
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    const std::function<std::string()> value = [&]() -> std::string {
      MT_REQUIRE(i + 1 < argc, "option ", arg, " needs a value");
      return argv[++i];
    };
    if (arg == "-o" || arg == "--output") {
      a.out = value();
    } else if (arg == "--split" && a.kind == "omniglot") {
      a.omniglot.split = mt::parse_omniglot_split(value(), "--split");
    } else if (arg == "--split-seed" && a.kind == "omniglot") {
      a.omniglot.split_seed = parse_count("--split-seed", value());
    } else if (arg == "--no-rotations" && a.kind == "omniglot") {
      a.omniglot.rotations = false;
    } else if (a.kind == "folder" && folder_option(arg, value, a.folder)) {
    } else {
      MT_REQUIRE(arg.empty() || arg[0] != '-', "unknown option '", arg, "' for ", a.kind,
                 " (see metapack --help)");
      a.inputs.push_back(arg);
    }
  }
  MT_REQUIRE(!a.out.empty(), "missing -o OUT.h5: where to write the store");
  MT_REQUIRE(!a.inputs.empty() || (a.kind == "folder" && !a.folder.csv.empty()),
             "no INPUT given for ", a.kind, " (see metapack --help)");
  const std::filesystem::path dir = std::filesystem::absolute(a.out).parent_path();
  MT_REQUIRE(std::filesystem::is_directory(dir), "-o ", a.out, ": folder ", dir.string(),
             " does not exist; create it first");
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  return mt::guarded_main("metapack", nullptr, [&] {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "-h" || a == "--help") {
        usage();
        return 0;
      }
    }
    const Args args = parse(argc, argv);
    const auto t0 = std::chrono::steady_clock::now();
    mt::Progress bar(0, 0, true);
    int64_t last_total = 0;
    auto progress = [&](int64_t done, int64_t total) {
      if (total != last_total) {
        bar = mt::Progress(total, std::max<int64_t>(1, total / 10), true, "image");
        last_total = total;
      }
      bar.update(done, "decoded");
    };
    mt::StoreContents store;
    if (args.kind == "omniglot") {
      mt::OmniglotPackOptions opt = args.omniglot;
      opt.progress = progress;
      store = mt::pack_omniglot(args.inputs, opt);
    } else if (args.kind == "omniglot-lake") {
      MT_REQUIRE(args.inputs.size() == 1, "omniglot-lake takes one INPUT (all_runs.zip), got ",
                 args.inputs.size());
      store = mt::pack_omniglot_lake(args.inputs[0], progress);
    } else if (args.kind == "folder") {
      MT_REQUIRE(args.inputs.size() <= 1, "folder takes one INPUT folder, got ", args.inputs.size(),
                 " ('", args.inputs[0], "', '", args.inputs[1], "', ...)");
      mt::FolderPackOptions opt = args.folder;
      opt.progress = progress;
      store = mt::pack_folder(args.inputs.empty() ? "" : args.inputs[0], opt);
    } else {
      mt::MiniImageNetPackOptions opt;
      opt.progress = progress;
      store = mt::pack_miniimagenet(args.inputs, opt);
    }
    bar.finish_line();
    mt::write_store(args.out, store);
    const double sec = mt::seconds_since(t0);
    std::printf("metapack %s: wrote %s\n", args.kind.c_str(), args.out.c_str());
    std::printf("  classes %zu (train %zu, val %zu, test %zu), images %lld of %dx%dx%d\n",
                store.class_names.size(), store.splits["train"].size(), store.splits["val"].size(),
                store.splits["test"].size(), static_cast<long long>(store.num_images()),
                store.height, store.width, store.channels);
    if (store.episodes.count() > 0)
      std::printf("  fixed episodes %lld (%d-way %d-shot, %d query per class)\n",
                  static_cast<long long>(store.episodes.count()), store.episodes.ways,
                  store.episodes.shots, store.episodes.queries);
    std::printf("  split: %s\n  bytes %lld, %.1f s\n", store.string_attrs["split_method"].c_str(),
                static_cast<long long>(std::filesystem::file_size(args.out)), sec);
    return 0;
  });
}
