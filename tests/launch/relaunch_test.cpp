// Launching metatrain again on a run's folder: resume starts from the checkpoint's stored config
// with the launch's overrides on top (and says which keys they change), so a 20-way run resumes
// from `resume=latest steps=N` alone, bit for bit; a fresh run into a used checkpoint.dir is
// refused untouched unless checkpoint.overwrite=true, which removes only the old run's files.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "core/hdf5.h"
#include "tests/support/checkpoints.h"
#include "tests/support/programs.h"

namespace mt {
namespace {

namespace fs = std::filesystem;
using testing::temp_dir;
using Result = testing::ProgramResult;

Result metatrain(const std::string& args) { return testing::run_program("metatrain", args); }

// A small 20-way job: 8 filters, 2 tasks per step, 10 evaluation episodes.
std::string job20(const std::string& dir) {
  return "model.filters=8 meta_batch=2 task.ways=20 task.shots=1 task.queries=1 "
         "eval.episodes=10 threads=2 log.every=1 checkpoint.dir=" +
         dir;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Every file under dir (relative name -> bytes).
std::map<std::string, std::string> contents(const std::string& dir) {
  std::map<std::string, std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) files[fs::relative(e.path(), dir).string()] = read_text(e.path());
  return files;
}

using testing::checkpoint_params;

bool has(const Result& r, const std::string& text) {
  return r.output.find(text) != std::string::npos;
}

// The 20-way head comes from the stored config: 2 + 2 steps resumed equal 4 straight steps.
TEST(Relaunch, ResumeStartsFromTheStoredConfig) {
  const std::string straight = temp_dir("relaunch_straight"), split = temp_dir("relaunch_split");
  ASSERT_EQ(metatrain(job20(straight) + " steps=4").exit_code, 0);
  const Result first = metatrain(job20(split) + " steps=2");
  ASSERT_EQ(first.exit_code, 0) << first.output;

  const Result r = metatrain("resume=latest steps=4 checkpoint.dir=" + split);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(has(r, "resuming from " + split + "/latest.h5 at step 2")) << r.output;
  EXPECT_TRUE(has(r, "resume: overrides change steps 2 -> 4\n")) << r.output;
  EXPECT_TRUE(has(r, "  ways: 20\n")) << r.output;  // the effective config printed at start
  EXPECT_TRUE(checkpoint_params(split + "/latest.h5") == checkpoint_params(straight + "/latest.h5"))
      << "resumed run differs from the straight run";
  // New checkpoints store the merged config.
  const std::string stored = h5::File::open_read(split + "/latest.h5").read_string("/config");
  EXPECT_NE(stored.find("  ways: 20\n"), std::string::npos) << stored;
  EXPECT_NE(stored.find("\nsteps: 4\n"), std::string::npos) << stored;
}

// sl-BAMM runs resume through the same scaffold: the toy's dimension comes from the checkpoint.
TEST(Relaunch, SlbammResumesFromTheStoredConfigToo) {
  const std::string toy =
      "algo=slbamm slbamm.toy_dim=12 slbamm.z_lr_max=1 threads=1 checkpoint.dir=";
  const std::string straight = temp_dir("relaunch_slbamm_straight");
  const std::string split = temp_dir("relaunch_slbamm_split");
  ASSERT_EQ(metatrain(toy + straight + " steps=10").exit_code, 0);
  ASSERT_EQ(metatrain(toy + split + " steps=5").exit_code, 0);
  const Result r = metatrain("resume=latest steps=10 checkpoint.dir=" + split);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(has(r, "resume: overrides change steps 5 -> 10\n")) << r.output;
  for (const char* v : {"/slbamm/x", "/slbamm/y", "/slbamm/z"})
    EXPECT_TRUE(h5::File::open_read(split + "/latest.h5").read<double>(v) ==
                h5::File::open_read(straight + "/latest.h5").read<double>(v))
        << v << " of the resumed run differs from the straight run";
}

// Overrides and --config keys land on top of the stored config, and the line names each change;
// a key a continuation must keep is still refused.
TEST(Relaunch, OverridesAreNamedAndFixedKeysRefused) {
  const std::string dir = temp_dir("relaunch_overrides");
  ASSERT_EQ(metatrain(job20(dir) + " steps=2").exit_code, 0);
  const std::string yaml = dir + "/more.yaml";
  std::ofstream(yaml) << "eval:\n  episodes: 6\n";

  const Result r = metatrain("--config " + yaml + " resume=latest steps=3 eval.every=1 " +
                             "checkpoint.dir=" + dir);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(has(r,
                  "resume: overrides change steps 2 -> 3, eval.every 100 -> 1, "
                  "eval.episodes 10 -> 6\n"))
      << r.output;

  const auto before = contents(dir);
  const Result refused = metatrain("resume=latest steps=4 seed=7 checkpoint.dir=" + dir);
  EXPECT_EQ(refused.exit_code, 2) << refused.output;
  EXPECT_TRUE(has(refused, "seed was 0 and is now 7")) << refused.output;
  EXPECT_TRUE(contents(dir) == before) << "a refused resume changed " << dir;
}

// A fresh run into a folder that holds a run (its checkpoints, or only its metrics log) exits 2
// naming the folder and the three ways out, and leaves every byte as it was.
TEST(Relaunch, FreshRunIntoAUsedFolderIsRefused) {
  const std::string dir = temp_dir("relaunch_used");
  ASSERT_EQ(metatrain(job20(dir) + " steps=2").exit_code, 0);
  const auto before = contents(dir);
  const Result r = metatrain(job20(dir) + " steps=2");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  for (const std::string& s : {dir, std::string("resume=latest"), std::string("checkpoint.dir"),
                               std::string("checkpoint.overwrite=true")})
    EXPECT_TRUE(has(r, s)) << s << " missing in\n" << r.output;
  EXPECT_TRUE(contents(dir) == before) << "a refused run changed " << dir;

  const std::string log_only = temp_dir("relaunch_log_only");
  std::ofstream(log_only + "/metrics.jsonl") << "{\"step\": 1}\n";
  const Result l = metatrain(job20(log_only) + " steps=1");
  EXPECT_EQ(l.exit_code, 2) << l.output;
  EXPECT_EQ(read_text(log_only + "/metrics.jsonl"), "{\"step\": 1}\n");
}

// checkpoint.overwrite=true removes the old run's checkpoints and log, and nothing else.
TEST(Relaunch, OverwriteRemovesOnlyTheOldRunsFiles) {
  const std::string dir = temp_dir("relaunch_overwrite");
  ASSERT_EQ(metatrain(job20(dir) + " steps=3").exit_code, 0);
  std::ofstream(dir + "/notes.txt") << "mine\n";
  std::ofstream(dir + "/ckpt_notes.h5") << "not a checkpoint\n";
  const Result r = metatrain(job20(dir) + " steps=2 checkpoint.overwrite=true");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FALSE(fs::exists(dir + "/ckpt_00000003.h5"));
  EXPECT_TRUE(fs::exists(dir + "/ckpt_00000002.h5"));
  EXPECT_EQ(h5::File::open_read(dir + "/latest.h5").read_scalar<int64_t>("/state/step"), 2);
  const std::string log = read_text(dir + "/metrics.jsonl");
  EXPECT_EQ(log.find("\"step\": 3"), std::string::npos) << log;
  EXPECT_EQ(read_text(dir + "/notes.txt"), "mine\n");
  EXPECT_EQ(read_text(dir + "/ckpt_notes.h5"), "not a checkpoint\n");
}

// An empty folder, or one with only unrelated files, is not a run: accepted, files kept.
TEST(Relaunch, EmptyOrUnrelatedFolderIsAccepted) {
  const std::string empty = temp_dir("relaunch_empty");
  const Result e = metatrain(job20(empty) + " steps=1");
  ASSERT_EQ(e.exit_code, 0) << e.output;
  EXPECT_TRUE(fs::exists(empty + "/latest.h5"));

  const std::string other = temp_dir("relaunch_other");
  std::ofstream(other + "/README") << "data notes\n";
  std::ofstream(other + "/metrics.csv") << "a,b\n";
  const Result o = metatrain(job20(other) + " steps=1");
  ASSERT_EQ(o.exit_code, 0) << o.output;
  EXPECT_EQ(read_text(other + "/README"), "data notes\n");
  EXPECT_EQ(read_text(other + "/metrics.csv"), "a,b\n");
}

// Under several ranks the refusal, decided on rank 0, ends every rank with code 2.
TEST(Relaunch, RefusalEndsEveryRankCleanly) {
  if (testing::run_shell("command -v mpiexec").exit_code != 0) {
    if (testing::in_ci()) GTEST_FAIL() << "mpiexec missing";
    GTEST_SKIP() << "mpiexec missing";
  }
  const std::string dir = temp_dir("relaunch_mpi");
  ASSERT_EQ(metatrain(job20(dir) + " steps=1").exit_code, 0);
  const auto before = contents(dir);
  const Result r = testing::run_mpi(2, "metatrain", job20(dir) + " steps=1 threads=1");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(has(r, "checkpoint.overwrite=true")) << r.output;
  EXPECT_TRUE(contents(dir) == before) << "a refused run changed " << dir;
}

}  // namespace
}  // namespace mt
