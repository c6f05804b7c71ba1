// libFuzzer target for the YAML config parser (launch/config.h): the input is loaded as a config
// file's text and, split on newlines, as key=value overrides and as program arguments. Bad input
// must throw mt::UsageError and nothing else; a config that loads must survive a round trip
// through to_yaml. Run by tests/fuzz/run_fuzz.sh.
//
// With MT_FUZZ_WRITE_SEEDS=DIR set, the binary writes valid configs to DIR (and, with
// MT_FUZZ_WRITE_DICT=FILE, a libFuzzer dictionary of the keys and values) and exits.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/check.h"
#include "launch/config.h"

namespace {

constexpr size_t kMaxLines = 64;

[[noreturn]] void bug(const std::string& what, const std::string& input) {
  std::fprintf(stderr, "fuzz_config: BUG: %s\ninput:\n%s\n", what.c_str(), input.c_str());
  std::fflush(stderr);
  std::abort();
}

// A loaded config must load again from its own to_yaml, to the same effective YAML.
void check_round_trip(const mt::Config& cfg, const std::string& input) {
  mt::Config again;
  try {
    again = mt::load_config_text(cfg.effective_yaml, "round trip", {});
  } catch (const mt::UsageError& e) {
    bug(std::string("to_yaml wrote YAML that does not load back: ") + e.what() + "\nyaml:\n" +
            cfg.effective_yaml,
        input);
  }
  if (again.effective_yaml != cfg.effective_yaml)
    bug("to_yaml does not round-trip:\nfirst:\n" + cfg.effective_yaml + "second:\n" +
            again.effective_yaml,
        input);
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  std::string line;
  while (lines.size() < kMaxLines && std::getline(in, line)) lines.push_back(line);
  return lines;
}

void run(const std::string& input) {
  // 1. The input as a config file.
  try {
    check_round_trip(mt::load_config_text(input, "fuzz.yaml", {}), input);
  } catch (const mt::UsageError&) {
  }
  // 2. Its lines as key=value overrides of the defaults.
  const std::vector<std::string> lines = lines_of(input);
  try {
    check_round_trip(mt::load_config_text("", "fuzz.yaml", lines), input);
  } catch (const mt::UsageError&) {
  }
  // 3. Its lines as program arguments, without --config (which would read files) and --help
  //    (which the caller must handle before config_from_args).
  std::vector<std::string> args = {"metatrain"};
  for (const std::string& l : lines)
    if (l.compare(0, 8, "--config") != 0) args.push_back(l);
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const int argc = static_cast<int>(args.size());
  if (!mt::has_help_flag(argc, argv.data())) {
    try {
      check_round_trip(mt::config_from_args(argc, argv.data()), input);
    } catch (const mt::UsageError&) {
    }
  }
  // 4. The first line through the public value parsers.
  const std::string first = lines.empty() ? std::string() : lines[0];
  try {
    const mt::TrajectoryMode mode = mt::parse_trajectory(first);
    if (mt::parse_trajectory(mt::to_string(mode)).every != mode.every)
      bug("parse_trajectory(to_string(mode)) differs", input);
  } catch (const mt::UsageError&) {
  }
  try {
    const mt::Algo algo = mt::parse_algo(first);
    if (mt::parse_algo(mt::to_string(algo)) != algo) bug("parse_algo does not round-trip", input);
  } catch (const mt::UsageError&) {
  }
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

void write_seeds(const std::string& dir) {
  const mt::Config defaults = mt::load_config_text("", "defaults", {});
  const std::vector<std::string> seeds = {
      std::string(mt::default_config_yaml()),
      defaults.effective_yaml,
      "algo: ufom\nufom:\n  q: adaptive\n  q_min: 0.1\ninner:\n  steps: 5\n"
      "  trajectory: checkpoint:2\n  truncate: 3\n",
      "inner.lr=0.1\nufom.q=adaptive\ntask.ways=20\nlog.jsonl=\"a b\"\nouter.optimizer=sgd\n",
      "model: {filters: 32, pool: stride}\ndata: {path: /tmp/x.h5, train_split: val}\n"
      "checkpoint: {dir: 'runs/a b', every: 0, keep: 1}\nresume: latest\n",
      "seed: 7\nsteps: 0\nmeta_batch: 1\nthreads: 2\ndevice: cpu\ndebug:\n  dump: \"x\\ty\"\n",
      "algo=fomaml\ninner.trajectory=recompute\neval.every=0\neval.episodes=3\n",
  };
  for (size_t i = 0; i < seeds.size(); ++i) {
    run(seeds[i]);
    write_file(dir + "/seed" + std::to_string(i), seeds[i]);
  }
}

// Keys (plain and dotted), choice values and YAML punctuation.
void write_dict(const std::string& path) {
  std::set<std::string> words = {"true",      "null",
                                 "~",         "&a",
                                 "*a",        "!!str",
                                 "---",       "...",
                                 "[",         "]",
                                 "{",         "}",
                                 ": ",        "- ",
                                 "\"",        "'",
                                 "#",         "|\n",
                                 ">\n",       "? ",
                                 "1e400",     ".nan",
                                 ".inf",      "-1",
                                 "0x10",      "99999999999999999999",
                                 "adaptive",  "store",
                                 "recompute", "checkpoint:",
                                 "maml",      "fomaml",
                                 "ufom",      "adam",
                                 "sgd",       "max",
                                 "stride",    "conv4",
                                 "cpu",       "cuda",
                                 "glyphs",    "latest",
                                 "none"};
  const mt::Config defaults = mt::load_config_text("", "defaults", {});
  std::string section;
  for (const std::string& line : lines_of(defaults.effective_yaml)) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    const bool nested = line.compare(0, 2, "  ") == 0;
    const std::string name = line.substr(nested ? 2 : 0, colon - (nested ? 2 : 0));
    if (!nested) section = colon + 1 == line.size() ? name : "";
    words.insert(name + ":");
    words.insert((nested ? section + "." : "") + name + "=");
  }
  std::ofstream out(path);
  for (const std::string& w : words) {
    out << '"';
    for (char c : w) {
      if (c == '"' || c == '\\')
        out << '\\' << c;
      else if (c == '\n')
        out << "\\x0A";
      else
        out << c;
    }
    out << "\"\n";
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  if (const char* path = std::getenv("MT_FUZZ_WRITE_DICT")) write_dict(path);
  if (const char* dir = std::getenv("MT_FUZZ_WRITE_SEEDS")) {
    write_seeds(dir);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  try {
    run(input);
  } catch (const std::exception& e) {
    bug(std::string("exception other than mt::UsageError escaped: ") + e.what(), input);
  } catch (...) {
    bug("a non-std exception escaped", input);
  }
  return 0;
}
