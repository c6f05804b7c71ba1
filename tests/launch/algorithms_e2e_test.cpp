// The algorithm family through metatrain and metaeval: every name trains on the glyphs, stores
// its learned rates in the checkpoint beside θ, resumes bit for bit (rates, optimizer moments
// and MAML++'s schedules included), and trains the same bits on 1 and 2 ranks with the exact
// reduction; metaeval adapts with the learned rates; impossible combinations exit 2 naming
// the key. The numerics of each algorithm are checked in tests/core/algorithms_test.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/hdf5.h"
#include "tests/support/checkpoints.h"
#include "tests/support/programs.h"

namespace mt {
namespace {

using testing::ProgramResult;

struct Case {
  std::string name, args;
};
// MAML++ with 2 inner steps, first order at step 0 and weights that anneal within the run.
const std::vector<Case>& cases() {
  static const std::vector<Case> all = {
      {"metasgd", "algo=metasgd"},
      {"mamlpp", "algo=mamlpp inner.steps=2 inner.first_order_steps=1 inner.msl_anneal_steps=3"},
      {"anil", "algo=anil"},
      {"boil", "algo=boil"},
      {"reptile", "algo=reptile inner.steps=3 outer.optimizer=sgd outer.lr=0.5"},
      {"imaml", "algo=imaml inner.steps=3 imaml.cg_steps=3"},
      {"ufom_metasgd", "algo=ufom ufom.q=0.5 inner.rates=per_param"},
  };
  return all;
}

std::string job(const std::string& dir, const std::string& extra) {
  return "model.filters=4 meta_batch=4 task.queries=2 eval.episodes=4 eval.every=0 threads=1 "
         "steps=4 checkpoint.every=2 checkpoint.dir=" +
         dir + " " + extra;
}

// Every /params and /optimizer tensor of a checkpoint, by name.
std::string state_bytes(const std::string& ckpt) {
  const auto f = h5::File::open_read(ckpt);
  std::string out;
  for (const std::string& name : f.list("/params")) {
    const std::vector<float> v = f.read<float>("/params/" + name);
    out += name + ":" + std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
  }
  for (const std::string& buf : f.list("/optimizer"))
    for (const std::string& name : f.list("/optimizer/" + buf)) {
      const std::vector<float> v = f.read<float>("/optimizer/" + buf + "/" + name);
      out += buf + name + ":" + std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
    }
  return out;
}

TEST(AlgorithmsE2e, EveryNameTrainsResumesBitForBitAndEvaluates) {
  for (const Case& c : cases()) {
    const std::string straight = testing::temp_dir("alg_" + c.name);
    ProgramResult r = testing::run_program("metatrain", job(straight, c.args));
    ASSERT_EQ(r.exit_code, 0) << c.name << "\n" << r.output;
    const std::vector<float> params = testing::checkpoint_params(straight + "/latest.h5");
    for (float v : params) ASSERT_TRUE(std::isfinite(v)) << c.name;

    const std::string split = testing::temp_dir("alg_" + c.name + "_resumed");
    r = testing::run_program("metatrain", job(split, c.args) + " steps=2");
    ASSERT_EQ(r.exit_code, 0) << c.name << "\n" << r.output;
    r = testing::run_program("metatrain", job(split, c.args) + " resume=latest");
    ASSERT_EQ(r.exit_code, 0) << c.name << "\n" << r.output;
    EXPECT_TRUE(state_bytes(split + "/latest.h5") == state_bytes(straight + "/latest.h5"))
        << c.name << ": resumed run differs from the straight run";

    r = testing::run_program("metaeval", straight + "/latest.h5 --json eval.episodes=4");
    EXPECT_EQ(r.exit_code, 0) << c.name << "\n" << r.output;
    EXPECT_NE(r.output.find("\"acc_mean\""), std::string::npos) << c.name << "\n" << r.output;
  }
}

// The rates are meta-parameters in the checkpoint, named after their tensor, and they moved.
TEST(AlgorithmsE2e, LearnedRatesAreCheckpointedAndTrained) {
  const std::string dir = testing::temp_dir("alg_rates");
  ProgramResult r = testing::run_program("metatrain", job(dir, "algo=mamlpp inner.steps=2"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto f = h5::File::open_read(dir + "/latest.h5");
  const std::vector<float> lslr = f.read<float>("/params/lslr.head.weight");
  ASSERT_EQ(lslr.size(), 2u);
  for (float v : lslr) EXPECT_NE(v, 0.4f) << "an LSLR rate kept its initial value";
  const std::string sgd = testing::temp_dir("alg_rates_sgd");
  r = testing::run_program("metatrain", job(sgd, "algo=metasgd"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto g = h5::File::open_read(sgd + "/latest.h5");
  EXPECT_EQ(g.read<float>("/params/lr.head.weight").size(),
            g.read<float>("/params/head.weight").size());
}

// dist.reduce = exact: 1 and 2 ranks train the same bits, learned rates included.
TEST(AlgorithmsE2e, ExactReductionGivesTheSameBitsOnOneAndTwoRanks) {
  for (const Case& c : {cases()[0], cases()[1], cases()[5]}) {
    std::string bytes[2];
    for (int n : {1, 2}) {
      const std::string dir = testing::temp_dir("alg_ranks_" + c.name + std::to_string(n));
      const ProgramResult r = testing::run_mpi(n, "metatrain", job(dir, c.args));
      ASSERT_EQ(r.exit_code, 0) << c.name << " on " << n << " ranks\n" << r.output;
      bytes[n - 1] = state_bytes(dir + "/latest.h5");
    }
    EXPECT_TRUE(bytes[0] == bytes[1]) << c.name << ": 1 and 2 ranks differ";
  }
}

TEST(AlgorithmsE2e, ImpossibleCombinationsExitWithCode2NamingTheKey) {
  const std::string dir = testing::temp_dir("alg_bad");
  const std::pair<std::string, std::string> bad[] = {
      {"algo=reptile inner.rates=per_param", "inner.rates"},
      {"algo=imaml inner.multi_step_loss=true", "inner.multi_step_loss"},
      {"algo=metasgd log.bias_every=5", "log.bias_every"},
      {"algo=imaml imaml.prox=0", "imaml.prox"},
  };
  for (const auto& [args, key] : bad) {
    const ProgramResult r = testing::run_program("metatrain", job(dir, args));
    EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(key), std::string::npos) << args << "\n" << r.output;
  }
}

}  // namespace
}  // namespace mt
