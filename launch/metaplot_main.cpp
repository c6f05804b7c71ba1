// metaplot: turns the metrics JSONL logs of one or more metatrain runs into SVG figures
// (evaluation accuracy, training loss and accuracy against outer step, gradient evaluations and
// seconds; UFOM's q and the measured first-order bias against step), one polyline per run.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/check.h"
#include "launch/exit_codes.h"
#include "launch/plot.h"

namespace {

const char* const kUsage =
    "usage: metaplot -o OUT_DIR METRICS.jsonl [METRICS.jsonl ...] [--label NAME ...]";

void usage() {
  std::printf(
      "%s\n\n"
      "Draws the metrics logs of metatrain runs (log.jsonl, by default\n"
      "<checkpoint.dir>/metrics.jsonl) as SVG figures in OUT_DIR, one line per run:\n"
      "  accuracy_vs_{step,grad_evals,seconds}.svg  evaluation accuracy (titled by the split\n"
      "                                             evaluated), shaded 95%% CI\n"
      "  loss_vs_{step,grad_evals,seconds}.svg      training loss\n"
      "  train_accuracy_vs_{step,grad_evals,seconds}.svg  training (query) accuracy\n"
      "  ufom_q_vs_step.svg, fo_bias_vs_step.svg    when a run logs q / fo_bias (log scale)\n"
      "  bias_vs_step.svg                           when a run has bias probes (log.bias_every):\n"
      "                                             FOMAML's error solid, UFOM's dashed\n"
      "A run has the same colour in every figure.\n"
      "--label NAME names the runs in the legend, in the order of the files (give one per file);\n"
      "by default a run is named after the folder of its file.\n"
      "Exit codes: 0 ok, 2 bad usage or malformed metrics file, 1 runtime failure.\n",
      kUsage);
}

struct Args {
  std::string out_dir;
  std::vector<std::string> files, labels;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-o" || arg == "--out" || arg == "--label") {
      MT_REQUIRE(i + 1 < argc, arg, " needs a value; ", kUsage);
      (arg == "--label" ? a.labels.emplace_back(argv[++i]) : a.out_dir = argv[++i]);
    } else {
      MT_REQUIRE(arg.empty() || arg[0] != '-', "unknown option '", arg, "'; ", kUsage);
      a.files.push_back(arg);
    }
  }
  MT_REQUIRE(!a.out_dir.empty(), "no output folder given (-o OUT_DIR); ", kUsage);
  MT_REQUIRE(!a.files.empty(), "no metrics file given; ", kUsage);
  MT_REQUIRE(a.labels.empty() || a.labels.size() == a.files.size(), a.labels.size(),
             " --label for ", a.files.size(), " files; give one label per file or none");
  return a;
}

// "runs/maml/metrics.jsonl" -> "maml"; a file without a folder -> its stem.
std::string default_label(const std::string& file) {
  const std::filesystem::path p = std::filesystem::absolute(file);
  const std::string parent = p.parent_path().filename().string();
  return parent.empty() ? p.stem().string() : parent;
}

}  // namespace

int main(int argc, char** argv) {
  return mt::guarded_main("metaplot", kUsage, [&] {
    for (int i = 1; i < argc; ++i)
      if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
        usage();
        return 0;
      }
    const Args args = parse(argc, argv);
    std::vector<mt::MetricsRun> runs;
    for (size_t k = 0; k < args.files.size(); ++k)
      runs.push_back(mt::read_metrics_jsonl(
          args.files[k], args.labels.empty() ? default_label(args.files[k]) : args.labels[k]));

    std::error_code ec;
    std::filesystem::create_directories(args.out_dir, ec);
    MT_REQUIRE(!ec && std::filesystem::is_directory(args.out_dir), "-o ", args.out_dir,
               ": cannot create the output folder (", ec.message(), ")");
    for (const auto& [name, fig] : mt::standard_figures(runs)) {
      const std::string path = args.out_dir + "/" + name;
      std::ofstream out(path, std::ios::binary);
      MT_REQUIRE(out, "cannot write ", path, ": ", std::strerror(errno));
      out << mt::render_svg(fig);
      out.close();
      if (!out) throw mt::Error(mt::ExitCode::kRuntime, "failed writing " + path);
      std::printf("wrote %s\n", path.c_str());
    }
    return 0;
  });
}
