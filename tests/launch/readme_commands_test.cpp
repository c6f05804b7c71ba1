// README's commands as a user types them: every command line in README.md's ```sh blocks is
// matched by exactly one rule below and run as written, in README order, in a scratch folder laid
// out like the repository (build/ and launch/ linked; stand-ins for the datasets we cannot ship).
// Only size limits are appended (later keys override earlier ones: limits_for). A README command no
// rule matches, or a rule no command uses, fails the test: README and this list move together.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "core/device.h"
#include "tests/support/images.h"
#include "tests/support/programs.h"

namespace mt {
namespace {

namespace fs = std::filesystem;

// The command lines of README.md's fenced sh/bash blocks (also indented ones inside lists):
// comments and blank lines dropped, a trailing "  # ..." comment cut, continuations joined.
std::vector<std::string> readme_commands(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> commands;
  bool in_block = false;
  std::string pending;
  const std::regex fence(R"(^\s*```(\w*)\s*$)");
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (std::regex_match(line, m, fence)) {
      in_block = !in_block && (m[1] == "sh" || m[1] == "bash");
      continue;
    }
    if (!in_block) continue;
    line = std::regex_replace(line, std::regex(R"(^\s+|\s+#.*$|\s+$)"), "");
    if (line.empty() || line[0] == '#') continue;
    if (line.back() == '\\') {
      pending += line.substr(0, line.size() - 1) + " ";
      continue;
    }
    commands.push_back(pending + line);
    pending.clear();
  }
  return commands;
}

enum class Expect { kSuccess, kSkip, kNoGpuMessage };

// How one kind of README command is checked here.
struct Rule {
  const char* pattern;  // ECMAScript regex on the whole command
  const char* why;      // what running it shows, or why it is not run
  Expect expect;
  const char* replace_from = "";  // optional: a prefix swapped for `replace_to` before running
  const char* replace_to = "";
};

const std::vector<Rule>& rules() {
  static const std::vector<Rule> r = {
      {"bash launch/setup/run_tests\\.sh.*", "CI's own command (.ci/run runs it)", Expect::kSkip},
      {"bash launch/setup/run_default\\.sh.*", "the metatrain call it ends with, after build.sh",
       Expect::kSuccess, "bash launch/setup/run_default.sh",
       "build/bin/metatrain checkpoint.overwrite=true"},
      {"build/bin/metatrain --help", "lists the keys", Expect::kSuccess},
      {".*device=cuda.*", "trains or evaluates on a GPU; without one, the plain no-GPU message",
       Expect::kNoGpuMessage},  // not run where it asks for more GPUs than the machine has
      {"srun (.*)", "no Slurm here: the step's command on one rank", Expect::kSuccess, "srun ", ""},
      {"mpirun .*", "a multi-rank run", Expect::kSuccess},
      {"build/bin/metapack .*", "packs the stand-in input", Expect::kSuccess},
      {"build/bin/metatrain .*", "trains", Expect::kSuccess},
      {"build/bin/metaeval .*", "evaluates", Expect::kSuccess},
  };
  return r;
}

// Keys appended to keep every run to seconds: 2 steps (4 after a resume), few evaluation episodes,
// one thread, and a narrow ResNet-12.
std::string limits_for(const std::string& command) {
  if (command.find("bin/metaeval") != std::string::npos) return " eval.episodes=10 threads=1";
  if (command.find("bin/metatrain") == std::string::npos ||
      command.find("--help") != std::string::npos)
    return "";
  const bool resumed = command.find("resume=") != std::string::npos;
  // ResNet-12 at its full widths is ~6 GB and tens of seconds per step at 84x84: a narrow one.
  const bool resnet = command.find("model.name=resnet12") != std::string::npos;
  return std::string(resumed ? " steps=4" : " steps=2") + " eval.episodes=10 threads=1" +
         (resnet ? " model.widths=4,4,8,8" : "");
}

// The stand-ins: the small Omniglot subsets under the full set's names (the packer takes either),
// Lake's runs, tiny Mini-ImageNet and image-folder layouts of generated JPEGs and PNGs, my.yaml.
void make_stand_ins(const fs::path& dir) {
  const fs::path omniglot = fs::path(testing::data_dir()) / "omniglot";
  fs::copy_file(omniglot / "images_background_small1.zip", dir / "images_background.zip");
  fs::copy_file(omniglot / "images_background_small2.zip", dir / "images_evaluation.zip");
  fs::copy_file(omniglot / "all_runs.zip", dir / "all_runs.zip");
  const fs::path mini = dir / "path/to/miniimagenet";
  int seed = 0;
  for (const char* split : {"train", "val", "test"})
    for (int c = 0; c < 5; ++c) {
      const fs::path cls = mini / split / (std::string(split) + std::to_string(c));
      fs::create_directories(cls);
      for (int i = 0; i < 16; ++i)
        testing::write_file(cls / (std::to_string(i) + ".jpg"),
                            testing::encode_jpeg(testing::pattern(24, 20, 3, ++seed), 24, 20, 3));
    }
  // `metapack folder`: 20 classes of 32x32 RGB PNGs, as one folder per class (path/to/root)
  // and as CIFAR-FS lays them out, with its class lists (10 / 5 / 5 classes here).
  const fs::path cifar = dir / "cifar100";
  std::string lists[3];
  for (int c = 0; c < 20; ++c) {
    const std::string name = "class" + std::to_string(c);
    lists[c < 10 ? 0 : c < 15 ? 1 : 2] += name + "\n";
    for (int i = 0; i < 20; ++i) {
      const testing::Bytes png =
          testing::encode_png(testing::pattern(32, 32, 3, ++seed), 32, 32, PNG_FORMAT_RGB);
      testing::write_file(dir / "path/to/root" / name / (std::to_string(i) + ".png"), png);
      testing::write_file(cifar / "data" / name / (std::to_string(i) + ".png"), png);
    }
  }
  const char* split_names[3] = {"train", "val", "test"};
  for (int k = 0; k < 3; ++k)
    testing::write_text(cifar / "splits/bertinetto" / (std::string(split_names[k]) + ".txt"),
                        lists[k]);
  fs::copy_file(fs::path(MT_SOURCE_DIR) / "launch/configs/default.yaml", dir / "my.yaml");
  fs::create_directories(dir / "data");
  fs::create_directory_symlink(testing::binary_dir(), dir / "build");
  fs::create_directory_symlink(fs::path(MT_SOURCE_DIR) / "launch", dir / "launch");
}

// The rank count of an mpirun command (-np N), else 1.
int ranks_of(const std::string& command) {
  std::smatch m;
  return std::regex_search(command, m, std::regex(R"(-np (\d+))")) ? std::stoi(m[1]) : 1;
}

const Rule* rule_for(const std::string& command) {
  for (const Rule& r : rules())
    if (std::regex_match(command, std::regex(r.pattern))) return &r;
  return nullptr;
}

std::string runnable(const std::string& command, const Rule& rule) {
  std::string cmd = command;
  const std::string from = rule.replace_from;
  if (!from.empty() && cmd.compare(0, from.size(), from) == 0)
    cmd = rule.replace_to + cmd.substr(from.size());
  return cmd + limits_for(cmd);
}

TEST(Readme, EveryCommandRunsAsWritten) {
  if (!fs::exists(fs::path(testing::data_dir()) / "omniglot/all_runs.zip")) {
    if (testing::in_ci()) FAIL() << "no Omniglot data in " << testing::data_dir();
    GTEST_SKIP() << "no Omniglot data in " << testing::data_dir() << " (set MT_DATA_DIR)";
  }
  const std::vector<std::string> commands =
      readme_commands(std::string(MT_SOURCE_DIR) + "/README.md");
  const fs::path dir = testing::temp_dir("readme");
  make_stand_ins(dir);
  const bool gpu = gpu_count() > 0;
  std::vector<int> used(rules().size(), 0);
  for (const std::string& command : commands) {
    const Rule* rule = rule_for(command);
    ASSERT_NE(rule, nullptr) << "README command with no rule in this test: " << command;
    ++used[rule - rules().data()];
    if (rule->expect == Expect::kSkip) continue;
    if (rule->expect == Expect::kNoGpuMessage && gpu && gpu_count() < ranks_of(command)) continue;
    const std::string cmd = runnable(command, *rule);
    const testing::ProgramResult r = testing::run_shell(
        "cd '" + dir.string() + "' && " + testing::kMpiTestEnv + "timeout 300 " + cmd);
    SCOPED_TRACE("README: " + command + "\nran: " + cmd + "\n(" + rule->why + ")\n" + r.output);
    if (rule->expect == Expect::kNoGpuMessage && !gpu) {
      EXPECT_EQ(r.exit_code, 2);
      EXPECT_NE(r.output.find("error: device=cuda"), std::string::npos);
    } else {
      EXPECT_EQ(r.exit_code, 0);
    }
  }
  for (size_t k = 0; k < rules().size(); ++k)
    EXPECT_GT(used[k], 0) << "no README command uses the rule '" << rules()[k].pattern
                          << "': remove it";
}

}  // namespace
}  // namespace mt
