// metapack, metatrain on a store, and metaeval as a user runs them on the real Omniglot subset:
// packing prints its summary, training and evaluation read the store, Lake's runs evaluate a
// 20-way checkpoint; every bad input exits with code 2 and a message naming the problem.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/hdf5.h"
#include "data/episode_store.h"
#include "tests/support/programs.h"

namespace mt {
namespace {

using testing::ProgramResult;
using testing::run_program;

std::string omniglot(const std::string& file) { return testing::data_dir() + "/omniglot/" + file; }

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Packs the subset and Lake's runs once for all tests here.
class DataPrograms : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // CTest runs each test in its own process, side by side: one folder per process.
    dir_ = testing::temp_dir("data_programs_" + std::to_string(getpid()));
    if (!std::filesystem::exists(omniglot("all_runs.zip"))) return;
    packed_ = run_program("metapack", "omniglot -o " + dir_ + "/omniglot.h5 " +
                                          omniglot("images_background_small1.zip") + " " +
                                          omniglot("images_background_small2.zip"));
    lake_ = run_program("metapack",
                        "omniglot-lake -o " + dir_ + "/lake.h5 " + omniglot("all_runs.zip"));
  }
  static void TearDownTestSuite() { std::filesystem::remove_all(dir_); }
  void SetUp() override {
    if (std::filesystem::exists(omniglot("all_runs.zip"))) return;
    if (testing::in_ci()) GTEST_FAIL() << "missing " << omniglot("") << " (set MT_DATA_DIR)";
    GTEST_SKIP() << "missing " << omniglot("") << "; set MT_DATA_DIR to the shared data folder";
  }
  static std::string store() { return dir_ + "/omniglot.h5"; }

  static std::string dir_;
  static ProgramResult packed_, lake_;
};
std::string DataPrograms::dir_;
ProgramResult DataPrograms::packed_, DataPrograms::lake_;

// A job small enough for CI on the packed store.
std::string tiny_job(const std::string& data, const std::string& ckpt_dir) {
  return "data.path=" + data + " model.filters=8 steps=2 meta_batch=2 task.queries=2 " +
         "eval.episodes=10 threads=2 checkpoint.dir=" + ckpt_dir;
}

TEST_F(DataPrograms, MetapackPacksTheSubsetAndLakesRuns) {
  ASSERT_EQ(packed_.exit_code, 0) << packed_.output;
  EXPECT_TRUE(contains(packed_.output, "images 4840 of 28x28x1") ||
              contains(packed_.output, "of 28x28x1"))
      << packed_.output;
  EXPECT_TRUE(contains(packed_.output, "split: alphabet: seed 0")) << packed_.output;
  const StoreContents c = read_store(store());
  int64_t base = 0;
  for (const std::string& n : c.class_names) base += n.find("/rot") == std::string::npos;
  EXPECT_EQ(base, 242);
  EXPECT_NE(c.string_attrs.at("source_sha256").find("images_background_small2.zip:3ccaa407"),
            std::string::npos);

  ASSERT_EQ(lake_.exit_code, 0) << lake_.output;
  EXPECT_TRUE(contains(lake_.output, "fixed episodes 20 (20-way 1-shot")) << lake_.output;
}

TEST_F(DataPrograms, MetapackBadInputsExitWithCode2) {
  const std::string out = " -o " + dir_ + "/bad.h5 ";
  // Mini-ImageNet layouts: split CSVs without the label column; a JPEG that is not one.
  const std::string csv = dir_ + "/mini_csv", jpg = dir_ + "/mini_jpg";
  for (const char* split : {"train", "val", "test"}) {
    std::filesystem::create_directories(csv + "/images");
    std::ofstream(csv + "/" + split + ".csv") << "filename\nx.jpg\n";
    std::filesystem::create_directories(jpg + "/" + split + "/n_" + split);
    std::ofstream(jpg + "/" + split + "/n_" + split + "/a.jpg") << "not a jpeg";
  }
  struct Case {
    std::string args, message;
  };
  const std::vector<Case> cases = {
      {"omniglot" + out + dir_ + "/missing.zip", "missing.zip' does not exist"},
      {"omniglot" + out + omniglot("all_runs.zip"), "does not look like Omniglot"},
      {"omniglot-lake" + out + omniglot("images_background_small1.zip"),
       "does not look like Lake's one-shot runs"},
      {"omniglot " + omniglot("images_background_small1.zip"), "missing -o OUT.h5"},
      {"omniglot" + out + omniglot("images_background_small1.zip") + " --split standard",
       "split=standard needs the full Omniglot"},
      {"fonts" + out + "x", "unknown dataset kind 'fonts'"},
      {"miniimagenet" + out + csv, "missing column"},
      {"miniimagenet" + out + jpg, "is a corrupt JPEG"},
      {"omniglot -o /no/such/dir/x.h5 " + omniglot("images_background_small1.zip"),
       "folder /no/such/dir does not exist"},
  };
  for (const Case& c : cases) {
    const ProgramResult r = run_program("metapack", c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args << "\n" << r.output;
    EXPECT_TRUE(contains(r.output, c.message)) << c.args << "\n" << r.output;
  }
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/bad.h5"));
}

TEST_F(DataPrograms, MetatrainAndMetaevalRunOnTheStore) {
  ASSERT_EQ(packed_.exit_code, 0) << packed_.output;
  const std::string run = testing::temp_dir("data_programs_train");
  const ProgramResult t = run_program("metatrain", tiny_job(store(), run));
  ASSERT_EQ(t.exit_code, 0) << t.output;
  EXPECT_TRUE(contains(t.output, "data omniglot store " + store())) << t.output;
  EXPECT_TRUE(contains(t.output, "final eval (test, 10 episodes")) << t.output;

  const ProgramResult e = run_program("metaeval", run + "/latest.h5 eval.episodes=50");
  ASSERT_EQ(e.exit_code, 0) << e.output;
  EXPECT_TRUE(contains(e.output, "5-way 1-shot, 2 queries per class, 3 inner steps")) << e.output;
  EXPECT_TRUE(contains(e.output, "50 episodes")) << e.output;
  const ProgramResult j = run_program("metaeval", run + "/latest.h5 --json eval.episodes=50");
  ASSERT_EQ(j.exit_code, 0) << j.output;
  EXPECT_TRUE(contains(j.output, "\"split\": \"test\"") || contains(j.output, "\"split\":\"test\""))
      << j.output;
  EXPECT_TRUE(contains(j.output, "acc_ci95")) << j.output;
  // The same checkpoint on the val split, and on 5-shot episodes.
  const ProgramResult v =
      run_program("metaeval", run + "/latest.h5 data.eval_split=val task.shots=5 eval.episodes=20");
  ASSERT_EQ(v.exit_code, 0) << v.output;
  EXPECT_TRUE(contains(v.output, "split val")) << v.output;
}

TEST_F(DataPrograms, LakesRunsEvaluateATwentyWayCheckpoint) {
  ASSERT_EQ(packed_.exit_code, 0) << packed_.output;
  ASSERT_EQ(lake_.exit_code, 0) << lake_.output;
  const std::string run20 = testing::temp_dir("data_programs_20way");
  const ProgramResult t = run_program("metatrain", tiny_job(store(), run20) + " task.ways=20");
  ASSERT_EQ(t.exit_code, 0) << t.output;
  const ProgramResult e =
      run_program("metaeval", run20 + "/latest.h5 --json data.path=" + dir_ + "/lake.h5");
  ASSERT_EQ(e.exit_code, 0) << e.output;
  EXPECT_TRUE(contains(e.output, "lake-runs")) << e.output;
  EXPECT_TRUE(contains(e.output, "\"episodes\": 20") || contains(e.output, "\"episodes\":20"))
      << e.output;

  const std::string run5 = testing::temp_dir("data_programs_5way");
  ASSERT_EQ(run_program("metatrain", tiny_job(store(), run5)).exit_code, 0);
  const ProgramResult bad =
      run_program("metaeval", run5 + "/latest.h5 data.path=" + dir_ + "/lake.h5");
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_TRUE(contains(bad.output, "holds 20-way fixed episodes but checkpoint")) << bad.output;
}

// The UFOM paper's configs (issue 7) run as shipped on the subset, only the network made small:
// meta-batch 5, r = 10 with the recompute trajectory, so an exact MAML step costs
// 5 · (C_F + C_E) = 5 · (11 + 55) = 330 gradient evaluations (DESIGN 3.6), and a budget of 331
// stops after step 2 at 660. 60 ways exceed the 47 classes of the held-out test alphabet.
TEST_F(DataPrograms, UfomPaperConfigsRunOnTheSubset) {
  ASSERT_EQ(packed_.exit_code, 0) << packed_.output;
  for (const int ways : {5, 20}) {
    SCOPED_TRACE(ways);
    const std::string run = testing::temp_dir("data_programs_ufom" + std::to_string(ways));
    const std::string config = std::string(MT_SOURCE_DIR) + "/launch/configs/ufom_paper_omniglot" +
                               std::to_string(ways) + ".yaml";
    const std::string small = " model.filters=8 task.queries=1 eval.episodes=4 threads=2 " +
                              std::string("checkpoint.every=0 log.every=1 checkpoint.dir=") + run;
    const ProgramResult t =
        run_program("metatrain", "--config " + config + " data.path=" + store() + " algo=maml " +
                                     "budget.grad_evals=331" + small);
    ASSERT_EQ(t.exit_code, 0) << t.output;
    EXPECT_TRUE(contains(t.output, "gradient-evaluation budget spent")) << t.output;
    EXPECT_TRUE(contains(t.output, std::to_string(ways) + "-way 1-shot")) << t.output;
    std::vector<std::string> lines;
    std::ifstream log(run + "/metrics.jsonl");
    for (std::string line; std::getline(log, line);)
      if (contains(line, "\"loss\"")) lines.push_back(line);
    ASSERT_EQ(lines.size(), 2u);
    EXPECT_TRUE(contains(lines[0], "\"grad_evals_total\": 330")) << lines[0];
    EXPECT_TRUE(contains(lines[1], "\"grad_evals_total\": 660")) << lines[1];

    const ProgramResult too_many = run_program(
        "metatrain", "--config " + config + " data.path=" + store() + " task.ways=60" + small +
                         "/too_many");  // a folder of its own: `run` holds a run now
    EXPECT_EQ(too_many.exit_code, 2) << too_many.output;
    EXPECT_TRUE(contains(too_many.output, "task.ways = 60 exceeds the")) << too_many.output;
  }
}

// Impossible or broken data for metatrain and metaeval: exit code 2, the problem named.
TEST_F(DataPrograms, BadStoresAndSpecsExitWithCode2) {
  ASSERT_EQ(packed_.exit_code, 0) << packed_.output;
  const std::string run = testing::temp_dir("data_programs_bad");
  // A truncated copy and a copy with another format version.
  {
    std::ifstream in(store(), std::ios::binary);
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream(run + "/cut.h5", std::ios::binary).write(bytes.data(), bytes.size() / 3);
    std::filesystem::copy_file(store(), run + "/v9.h5");
    h5::File f = h5::File::open_write(run + "/v9.h5");
    f.set_attr("/", "format_version", 9);
    f.close();
  }
  struct Case {
    std::string args, message;
  };
  const std::vector<Case> cases = {
      {"data.path=" + run + "/nope.h5", run + "/nope.h5: cannot open"},
      {"data.path=" + run + "/cut.h5", run + "/cut.h5: "},
      {"data.path=" + run + "/v9.h5", "format_version 9 is not supported"},
      {"data.path=" + store() + " task.ways=500", "task.ways = 500 exceeds the"},
      {"data.path=" + store() + " task.shots=10 task.queries=15",
       "task.shots + task.queries = 25 exceeds the 20 examples"},
      {"data.path=" + store() + " data.eval_split=holdout", "split 'holdout' does not exist"},
  };
  for (const Case& c : cases) {
    const ProgramResult r = run_program("metatrain", c.args + " checkpoint.dir=" + run + "/ck");
    EXPECT_EQ(r.exit_code, 2) << c.args << "\n" << r.output;
    EXPECT_TRUE(contains(r.output, c.message)) << c.args << "\n" << r.output;
  }
  const ProgramResult missing = run_program("metaeval", run + "/nope.h5");
  EXPECT_EQ(missing.exit_code, 2) << missing.output;
  EXPECT_TRUE(contains(missing.output, run + "/nope.h5: cannot open")) << missing.output;
  const ProgramResult not_ckpt = run_program("metaeval", store());
  EXPECT_EQ(not_ckpt.exit_code, 2) << not_ckpt.output;
  EXPECT_TRUE(contains(not_ckpt.output, "not a metatrain checkpoint")) << not_ckpt.output;
  const ProgramResult model_key = run_program("metaeval", store() + " model.filters=32");
  EXPECT_EQ(model_key.exit_code, 2) << model_key.output;
  EXPECT_TRUE(contains(model_key.output, "metaeval cannot change this key")) << model_key.output;
}

}  // namespace
}  // namespace mt
