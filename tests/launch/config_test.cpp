// Tests of the config system: built-in defaults, file and override precedence, one rejection per
// validation rule (the message must name the key and the bad value), unknown keys, the to_yaml
// round trip, command-line parsing and trajectory-mode parsing.
#include "launch/config.h"

#include <gtest/gtest.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "core/check.h"

namespace mt {
namespace {

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// The message of the UsageError thrown by f, or "" (and a test failure) when none is thrown.
std::string usage_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const UsageError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a UsageError";
  return "";
}

std::string overrides_error(const std::vector<std::string>& overrides) {
  return usage_error([&] { load_config("", overrides); });
}

class TempFile {
 public:
  explicit TempFile(const std::string& content) {
    // CTest runs each test as its own process, side by side: the pid keeps their files apart.
    static int counter = 0;
    path_ = ::testing::TempDir() + "mt_config_test_" + std::to_string(getpid()) + "_" +
            std::to_string(counter++) + ".yaml";
    std::ofstream(path_) << content;
  }
  ~TempFile() { std::remove(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string file_error(const std::string& content) {
  TempFile f(content);
  return usage_error([&] { load_config(f.path(), {}); });
}

TEST(Config, DefaultsComeFromTheEmbeddedDefaultYaml) {
  std::ifstream in(std::string(MT_SOURCE_DIR) + "/launch/configs/default.yaml");
  ASSERT_TRUE(in) << "cannot read launch/configs/default.yaml";
  std::stringstream on_disk;
  on_disk << in.rdbuf();
  EXPECT_EQ(default_config_yaml(), on_disk.str()) << "the embedded copy is stale";

  const YAML::Node d = YAML::Load(on_disk.str());
  const Config cfg = load_config("", {});
  EXPECT_EQ(to_string(cfg.algo), d["algo"].as<std::string>());
  EXPECT_EQ(cfg.seed, d["seed"].as<int64_t>());
  EXPECT_EQ(cfg.steps, d["steps"].as<int64_t>());
  EXPECT_EQ(cfg.meta_batch, d["meta_batch"].as<int>());
  EXPECT_EQ(cfg.threads, d["threads"].as<int>());
  EXPECT_EQ(cfg.task.ways, d["task"]["ways"].as<int>());
  EXPECT_EQ(cfg.task.shots, d["task"]["shots"].as<int>());
  EXPECT_EQ(cfg.task.queries, d["task"]["queries"].as<int>());
  EXPECT_EQ(cfg.inner.steps, d["inner"]["steps"].as<int>());
  EXPECT_EQ(cfg.inner.eval_steps, d["inner"]["eval_steps"].as<int>());
  EXPECT_EQ(cfg.inner.lr, d["inner"]["lr"].as<double>());
  EXPECT_EQ(to_string(cfg.inner.trajectory), d["inner"]["trajectory"].as<std::string>());
  EXPECT_EQ(cfg.inner.truncate, d["inner"]["truncate"].as<int>());
  EXPECT_EQ(cfg.outer.lr, d["outer"]["lr"].as<double>());
  EXPECT_EQ(cfg.outer.momentum, d["outer"]["momentum"].as<double>());
  EXPECT_EQ(cfg.ufom.q_min, d["ufom"]["q_min"].as<double>());
  EXPECT_EQ(cfg.ufom.d2_scale, d["ufom"]["d2_scale"].as<double>());
  EXPECT_EQ(cfg.ufom.adjoint_clip, d["ufom"]["adjoint_clip"].as<double>());
  EXPECT_EQ(cfg.model.name, d["model"]["name"].as<std::string>());
  EXPECT_EQ(cfg.model.filters, d["model"]["filters"].as<int>());
  EXPECT_EQ(cfg.data.path, d["data"]["path"].as<std::string>());
  EXPECT_EQ(cfg.data.train_split, d["data"]["train_split"].as<std::string>());
  EXPECT_EQ(cfg.data.eval_split, d["data"]["eval_split"].as<std::string>());
  EXPECT_EQ(cfg.data.prefetch, d["data"]["prefetch"].as<int>());
  EXPECT_EQ(cfg.budget.grad_evals, d["budget"]["grad_evals"].as<int64_t>());
  EXPECT_EQ(cfg.dist.backend, d["dist"]["backend"].as<std::string>());
  EXPECT_EQ(cfg.dist.assign, d["dist"]["assign"].as<std::string>());
  EXPECT_EQ(cfg.dist.check_every, d["dist"]["check_every"].as<int64_t>());
  EXPECT_EQ(cfg.eval.every, d["eval"]["every"].as<int64_t>());
  EXPECT_EQ(cfg.eval.episodes, d["eval"]["episodes"].as<int>());
  EXPECT_EQ(cfg.checkpoint.dir, d["checkpoint"]["dir"].as<std::string>());
  EXPECT_EQ(cfg.checkpoint.every, d["checkpoint"]["every"].as<int64_t>());
  EXPECT_EQ(cfg.checkpoint.keep, d["checkpoint"]["keep"].as<int>());
  EXPECT_EQ(cfg.resume, d["resume"].as<std::string>());
  EXPECT_EQ(cfg.log.jsonl, d["log"]["jsonl"].as<std::string>());
  EXPECT_EQ(cfg.log.every, d["log"]["every"].as<int>());
  EXPECT_EQ(cfg.debug.dump, d["debug"]["dump"].as<std::string>());
  EXPECT_EQ(cfg.effective_yaml, to_yaml(cfg));
}

TEST(Config, EnumsAndSpecialValuesParse) {
  const Config cfg =
      load_config("", {"algo=ufom", "outer.optimizer=sgd", "model.pool=stride", "device=cuda",
                       "ufom.q=adaptive", "inner.trajectory=checkpoint:3"});
  EXPECT_EQ(cfg.algo, Algo::kUfom);
  EXPECT_EQ(cfg.outer.optimizer, Config::Outer::Optimizer::kSgd);
  EXPECT_EQ(cfg.model.pool, Config::Model::Pool::kStride);
  EXPECT_EQ(cfg.device, Config::Device::kCuda);
  EXPECT_TRUE(cfg.ufom.adaptive);
  EXPECT_EQ(cfg.inner.trajectory.kind, TrajectoryMode::kCheckpoint);
  EXPECT_EQ(cfg.inner.trajectory.every, 3);

  const Config fixed = load_config("", {"ufom.q=0.25"});
  EXPECT_FALSE(fixed.ufom.adaptive);
  EXPECT_EQ(fixed.ufom.q, 0.25);
}

TEST(Config, OverridesBeatFileWhichBeatsDefaults) {
  const Config defaults = load_config("", {});
  TempFile file(
      "seed: 3\n"
      "task: {ways: 7}\n"
      "inner:\n"
      "  lr: 0.25\n"
      "  steps: 4\n");
  const Config from_file = load_config(file.path(), {});
  EXPECT_EQ(from_file.seed, 3);
  EXPECT_EQ(from_file.task.ways, 7);
  EXPECT_EQ(from_file.inner.lr, 0.25);
  EXPECT_EQ(from_file.inner.steps, 4);
  EXPECT_EQ(from_file.task.queries, defaults.task.queries);
  EXPECT_EQ(from_file.outer.lr, defaults.outer.lr);

  const Config both = load_config(file.path(), {"inner.lr=0.125", "task.shots=5", "seed=9"});
  EXPECT_EQ(both.inner.lr, 0.125);
  EXPECT_EQ(both.task.shots, 5);
  EXPECT_EQ(both.seed, 9);
  EXPECT_EQ(both.task.ways, 7);
  EXPECT_EQ(both.inner.steps, 4);

  const Config later_wins = load_config("", {"seed=1", "seed=2"});
  EXPECT_EQ(later_wins.seed, 2);
}

TEST(Config, EachValidationRuleRejectsNamingKeyAndValue) {
  struct Case {
    std::vector<std::string> overrides;
    std::string key;
    std::string value;
  };
  const std::vector<Case> cases = {
      {{"algo=protonet"}, "algo", "protonet"},
      {{"seed=-1"}, "seed", "-1"},
      {{"steps=-5"}, "steps", "-5"},
      {{"meta_batch=0"}, "meta_batch", "0"},
      {{"threads=-1"}, "threads", "-1"},
      {{"task.ways=1"}, "task.ways", "1"},
      {{"task.shots=0"}, "task.shots", "0"},
      {{"task.queries=0"}, "task.queries", "0"},
      {{"inner.steps=-1"}, "inner.steps", "-1"},
      {{"inner.eval_steps=-2"}, "inner.eval_steps", "-2"},
      {{"inner.lr=0"}, "inner.lr", "0"},
      {{"inner.lr=-0.5"}, "inner.lr", "-0.5"},
      {{"inner.lr=.nan"}, "inner.lr", ".nan"},
      {{"inner.truncate=-2"}, "inner.truncate", "-2"},
      {{"inner.steps=2", "inner.truncate=3"}, "inner.truncate", "3"},
      {{"inner.trajectory=foo"}, "inner.trajectory", "foo"},
      {{"inner.trajectory=checkpoint:0"}, "inner.trajectory", "checkpoint:0"},
      {{"outer.optimizer=rmsprop"}, "outer.optimizer", "rmsprop"},
      {{"outer.lr=0"}, "outer.lr", "0"},
      {{"outer.momentum=1"}, "outer.momentum", "1"},
      {{"outer.momentum=-0.1"}, "outer.momentum", "-0.1"},
      {{"ufom.q=1.5"}, "ufom.q", "1.5"},
      {{"ufom.q=-0.1"}, "ufom.q", "-0.1"},
      {{"ufom.q=sometimes"}, "ufom.q", "sometimes"},
      {{"ufom.q_min=0"}, "ufom.q_min", "0"},
      {{"ufom.q_min=1.5"}, "ufom.q_min", "1.5"},
      {{"ufom.d2_scale=0"}, "ufom.d2_scale", "0"},
      {{"ufom.adjoint_clip=-0.1"}, "ufom.adjoint_clip", "-0.1"},
      {{"model.name=resnet18"}, "model.name", "resnet18"},
      {{"model.filters=0"}, "model.filters", "0"},
      {{"model.widths=0"}, "model.widths", "0"},
      {{"model.widths=4,x"}, "model.widths", "4,x"},
      {{"model.widths=[4, -1]"}, "model.widths", "[4, -1]"},
      {{"model.widths="}, "model.widths", "\"\""},
      {{"model.widths=4,4"}, "model.widths", "4,4"},  // conv4 takes one
      {{"model.name=resnet12", "model.widths=4,4,8"}, "model.widths", "4,4,8"},
      {{"model.filters=32", "model.widths=48"}, "model.widths", "48"},
      {{"model.activation=tanh"}, "model.activation", "tanh"},
      {{"model.pool=avg"}, "model.pool", "avg"},
      {{"eval.every=-1"}, "eval.every", "-1"},
      {{"eval.episodes=0"}, "eval.episodes", "0"},
      {{"checkpoint.every=-1"}, "checkpoint.every", "-1"},
      {{"checkpoint.keep=0"}, "checkpoint.keep", "0"},
      {{"device=tpu"}, "device", "tpu"},
      {{"log.every=0"}, "log.every", "0"},
      {{"data.path="}, "data.path", "\"\""},
  };
  for (const Case& c : cases) {
    const std::string msg = overrides_error(c.overrides);
    EXPECT_TRUE(contains(msg, c.key + " = " + c.value)) << c.key << ": " << msg;
  }
  EXPECT_TRUE(contains(overrides_error({"algo=protonet"}), "maml, fomaml, ufom"));
  EXPECT_TRUE(contains(overrides_error({"algo=protonet"}), "reptile, imaml"));
  EXPECT_TRUE(contains(overrides_error({"inner.steps=-1"}), "must be >= 0"));
  EXPECT_TRUE(contains(overrides_error({"inner.steps=-1"}), "override 'inner.steps=-1'"));
}

TEST(Config, BoundaryValuesAreAccepted) {
  const Config cfg = load_config(
      "", {"seed=0", "steps=0", "meta_batch=1", "threads=0", "task.ways=2", "task.shots=1",
           "task.queries=1", "inner.steps=3", "inner.truncate=3", "inner.eval_steps=0",
           "outer.momentum=0", "ufom.q=1", "ufom.q_min=1", "ufom.adjoint_clip=0", "eval.every=0",
           "checkpoint.every=0", "checkpoint.keep=1", "log.every=1"});
  EXPECT_EQ(cfg.inner.truncate, 3);
  EXPECT_EQ(cfg.ufom.q, 1.0);
  EXPECT_EQ(load_config("", {"inner.steps=0", "inner.truncate=0"}).inner.truncate, 0);
  EXPECT_EQ(load_config("", {"ufom.q=0"}).ufom.q, 0.0);
  EXPECT_EQ(load_config("", {"inner.truncate=-1"}).inner.truncate, -1);
}

TEST(Config, TypeErrorsNameKeyAndExpectedType) {
  std::string msg = overrides_error({"inner.steps=1.5"});
  EXPECT_TRUE(contains(msg, "inner.steps = 1.5") && contains(msg, "integer")) << msg;
  msg = overrides_error({"inner.lr=fast"});
  EXPECT_TRUE(contains(msg, "inner.lr = fast") && contains(msg, "number")) << msg;
  msg = overrides_error({"task.ways=[1, 2]"});
  EXPECT_TRUE(contains(msg, "task.ways") && contains(msg, "a list")) << msg;
  msg = overrides_error({"seed=99999999999999999999"});
  EXPECT_TRUE(contains(msg, "seed") && contains(msg, "integer")) << msg;
  msg = overrides_error({"meta_batch=4000000000"});
  EXPECT_TRUE(contains(msg, "meta_batch") && contains(msg, "out of range")) << msg;
  msg = file_error("inner:\n  lr:\n");
  EXPECT_TRUE(contains(msg, "inner.lr") && contains(msg, "got no value") && contains(msg, ":2:3"))
      << msg;
  msg = file_error("task: 5\n");
  EXPECT_TRUE(contains(msg, "task") && contains(msg, "map")) << msg;
  msg = file_error("outer:\n  optimizer: {name: adam}\n");
  EXPECT_TRUE(contains(msg, "outer.optimizer") && contains(msg, "a map")) << msg;
}

TEST(Config, UnknownKeysAreRejectedWithValidAlternatives) {
  std::string msg = file_error("inner:\n  lrr: 0.1\n");
  EXPECT_TRUE(contains(msg, "'inner.lrr'")) << msg;
  EXPECT_TRUE(contains(msg, "valid keys in 'inner': steps, eval_steps, lr, trajectory, truncate"))
      << msg;
  EXPECT_TRUE(contains(msg, ":2:3")) << "file location missing: " << msg;

  msg = file_error("algo: maml\nbogus: 1\n");
  EXPECT_TRUE(contains(msg, "'bogus'") && contains(msg, "valid top-level keys: algo, seed")) << msg;

  msg = overrides_error({"inner.lrr=0.1"});
  EXPECT_TRUE(contains(msg, "'inner.lrr'") && contains(msg, "valid keys in 'inner'")) << msg;
  msg = overrides_error({"foo.bar=1"});
  EXPECT_TRUE(contains(msg, "'foo.bar'") && contains(msg, "valid top-level keys")) << msg;
  msg = overrides_error({"seed.x=1"});
  EXPECT_TRUE(contains(msg, "'seed.x'") && contains(msg, "not a section")) << msg;
  msg = overrides_error({"task={ways: 20}"});
  EXPECT_TRUE(contains(msg, "'task'") && contains(msg, "task.ways=")) << msg;
  msg = overrides_error({"inner.lr"});
  EXPECT_TRUE(contains(msg, "'inner.lr'") && contains(msg, "key=value")) << msg;
}

TEST(Config, FileProblemsNameTheFile) {
  const std::string missing = ::testing::TempDir() + "mt_config_test_no_such_file.yaml";
  std::string msg = usage_error([&] { load_config(missing, {}); });
  EXPECT_TRUE(contains(msg, missing)) << msg;

  TempFile malformed("inner: {lr: 0.1\nseed: 2\n");
  msg = usage_error([&] { load_config(malformed.path(), {}); });
  EXPECT_TRUE(contains(msg, malformed.path()) && contains(msg, "line") && contains(msg, "column"))
      << msg;

  msg = file_error("- algo: maml\n");
  EXPECT_TRUE(contains(msg, "top level must be a map")) << msg;
  msg = file_error("seed: 1\nseed: 2\n");
  EXPECT_TRUE(contains(msg, "'seed'") && contains(msg, "twice")) << msg;
  msg = file_error("inner:\n  steps: -3\n");
  EXPECT_TRUE(contains(msg, "inner.steps = -3") && contains(msg, ":2:10")) << msg;

  TempFile empty("# nothing but a comment\n");
  EXPECT_EQ(load_config(empty.path(), {}).effective_yaml, load_config("", {}).effective_yaml);
}

TEST(Config, ToYamlRoundTripsExactly) {
  const Config cfg = load_config(
      "", {"algo=ufom", "seed=123456789012", "inner.lr=0.1234567890123457", "outer.lr=1e-7",
           "outer.momentum=0.3", "ufom.q=adaptive", "ufom.d2_scale=0.1",
           "inner.trajectory=checkpoint:4", "inner.steps=5", "inner.truncate=2",
           "data.path=\"my data/omniglot: v1.h5\"", "checkpoint.dir=\"-runs/#7\"",
           "log.jsonl=\"quote\\\"and\\\\back\\tslash\"", "debug.dump=null.h5", "resume=\"null\"",
           "device=cuda", "outer.optimizer=sgd", "model.pool=stride"});
  EXPECT_EQ(cfg.data.path, "my data/omniglot: v1.h5");
  EXPECT_EQ(cfg.checkpoint.dir, "-runs/#7");
  EXPECT_EQ(cfg.log.jsonl, "quote\"and\\back\tslash");
  EXPECT_EQ(cfg.resume, "null");

  const std::string yaml = to_yaml(cfg);
  TempFile file(yaml);
  const Config back = load_config(file.path(), {});
  EXPECT_EQ(to_yaml(back), yaml);
  EXPECT_EQ(back.effective_yaml, cfg.effective_yaml);
  EXPECT_EQ(back.seed, 123456789012);
  EXPECT_EQ(back.inner.lr, 0.1234567890123457);
  EXPECT_EQ(back.outer.lr, 1e-7);
  EXPECT_EQ(back.outer.momentum, 0.3);
  EXPECT_TRUE(back.ufom.adaptive);
  EXPECT_EQ(back.inner.trajectory.every, 4);
  EXPECT_EQ(back.data.path, cfg.data.path);
  EXPECT_EQ(back.checkpoint.dir, cfg.checkpoint.dir);
  EXPECT_EQ(back.log.jsonl, cfg.log.jsonl);
  EXPECT_EQ(back.resume, "null");
  EXPECT_EQ(back.debug.dump, "null.h5");

  const Config defaults = load_config("", {});
  EXPECT_EQ(load_config_text(to_yaml(defaults), "defaults", {}).effective_yaml,
            defaults.effective_yaml);
}

TEST(Config, CommandLineArguments) {
  TempFile file("task:\n  ways: 9\n");
  std::vector<std::string> args = {"metatrain", "--config", file.path(), "inner.lr=0.5"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  Config cfg = config_from_args(static_cast<int>(argv.size()), argv.data());
  EXPECT_EQ(cfg.task.ways, 9);
  EXPECT_EQ(cfg.inner.lr, 0.5);
  EXPECT_FALSE(has_help_flag(static_cast<int>(argv.size()), argv.data()));

  const auto run = [](std::vector<std::string> words) {
    std::vector<char*> v;
    for (auto& w : words) v.push_back(w.data());
    return usage_error([&] { config_from_args(static_cast<int>(v.size()), v.data()); });
  };
  std::string eq_form = "--config=" + file.path();
  EXPECT_TRUE(contains(run({"metatrain", eq_form, "--config", file.path()}), "twice"));
  EXPECT_TRUE(contains(run({"metatrain", "--config"}), "--config needs a file"));
  EXPECT_TRUE(contains(run({"metatrain", "--verbose"}), "unknown option '--verbose'"));
  EXPECT_TRUE(contains(run({"metatrain", "--inner.lr=0.1"}), "without dashes: inner.lr=0.1"));
  EXPECT_TRUE(contains(run({"metatrain", "config.yaml"}), "unexpected argument 'config.yaml'"));
  EXPECT_TRUE(contains(run({"metatrain", "task.ways=1"}), "task.ways = 1"));

  std::vector<std::string> help = {"metatrain", "-h"};
  std::vector<char*> help_argv = {help[0].data(), help[1].data()};
  EXPECT_TRUE(has_help_flag(2, help_argv.data()));
}

TEST(Config, MetricsPathDefaultsIntoCheckpointDir) {
  EXPECT_EQ(metrics_jsonl_path(load_config("", {"checkpoint.dir=out/a", "log.jsonl="})),
            "out/a/metrics.jsonl");
  EXPECT_EQ(metrics_jsonl_path(load_config("", {"log.jsonl=m.jsonl"})), "m.jsonl");
}

TEST(Trajectory, ParsesAndPrints) {
  EXPECT_EQ(parse_trajectory("store").kind, TrajectoryMode::kStore);
  EXPECT_EQ(parse_trajectory("recompute").kind, TrajectoryMode::kRecompute);
  const TrajectoryMode c4 = parse_trajectory("checkpoint:4");
  EXPECT_EQ(c4.kind, TrajectoryMode::kCheckpoint);
  EXPECT_EQ(c4.every, 4);
  for (const char* s : {"store", "recompute", "checkpoint:4", "checkpoint:1"})
    EXPECT_EQ(to_string(parse_trajectory(s)), s);
}

TEST(Trajectory, RejectsMalformedModes) {
  for (const char* s : {"checkpoint:0", "checkpoint:x", "foo", "checkpoint:", "checkpoint",
                        "checkpoint:-2", "checkpoint:+3", "checkpoint:4x", "Store"}) {
    const std::string msg = usage_error([&] { parse_trajectory(s); });
    EXPECT_TRUE(contains(msg, std::string("inner.trajectory = ") + s)) << s << ": " << msg;
  }
}

TEST(Algo, ParsesAndPrints) {
  for (Algo a : {Algo::kMaml, Algo::kFomaml, Algo::kUfom}) EXPECT_EQ(parse_algo(to_string(a)), a);
  EXPECT_EQ(to_string(Algo::kFomaml), "fomaml");
  const std::string msg = usage_error([] { parse_algo("MAML"); });
  EXPECT_TRUE(contains(msg, "algo = MAML") && contains(msg, "maml, fomaml, ufom")) << msg;
}

// model.name picks the backbone; model.widths (conv4: one, alias model.filters; resnet12: four)
// and model.activation default to the model's own; the effective config records them.
TEST(Config, ModelKeysResolveToTheArchitecture) {
  const Config conv4 = load_config("", {});
  EXPECT_EQ(conv4.model.name, "conv4");
  EXPECT_EQ(conv4.model.widths, (std::vector<int>{64}));
  EXPECT_EQ(conv4.model.activation, "relu");
  EXPECT_EQ(describe_model(conv4), "conv4 (64 filters, relu, max-pool)");
  EXPECT_TRUE(contains(conv4.effective_yaml, "  widths: auto\n")) << conv4.effective_yaml;
  EXPECT_EQ(load_config("", {"model.widths=48"}).model.filters, 48);
  EXPECT_EQ(load_config("", {"model.widths=[48]"}).model.filters, 48);
  EXPECT_EQ(load_config("", {"model.filters=32"}).model.widths, (std::vector<int>{32}));
  EXPECT_EQ(load_config("", {"model.filters=48", "model.widths=48"}).model.filters, 48);
  EXPECT_EQ(load_config("", {"model.activation=leaky_relu"}).model.activation, "leaky_relu");

  const Config resnet = load_config("", {"model.name=resnet12"});
  EXPECT_EQ(resnet.model.widths, (std::vector<int>{64, 160, 320, 640}));
  EXPECT_EQ(resnet.model.activation, "leaky_relu");
  EXPECT_EQ(describe_model(resnet), "resnet12 (widths 64,160,320,640, leaky_relu)");
  const Config small = load_config("", {"model.name=resnet12", "model.widths=4, 4,8,8"});
  EXPECT_EQ(small.model.widths, (std::vector<int>{4, 4, 8, 8}));
  EXPECT_EQ(load_config("", {"model.name=resnet12", "model.widths=[4, 4, 8, 8]"}).effective_yaml,
            small.effective_yaml);
  EXPECT_TRUE(contains(small.effective_yaml, "  widths: 4,4,8,8\n")) << small.effective_yaml;
  EXPECT_EQ(load_config_text(small.effective_yaml, "stored", {}).effective_yaml,
            small.effective_yaml);
  EXPECT_EQ(load_config("", {"model.name=resnet12", "model.activation=relu"}).model.activation,
            "relu");

  const std::string p = printed_config(small);
  EXPECT_TRUE(contains(p, "  widths: 4,4,8,8\n") && !contains(p, "filters:") &&
              !contains(p, "pool:"))
      << p;
  const std::string c = printed_config(conv4);
  EXPECT_TRUE(contains(c, "filters: 64") && !contains(c, "widths:")) << c;
  const std::string help(default_config_yaml());
  EXPECT_TRUE(contains(help, "widths:") && contains(help, "activation:") &&
              contains(help, "resnet12"));

  // A resumed run's model is its checkpoint's: another architecture is left to launch_config to
  // refuse naming both, rather than refused here as a bad width for the new model.
  const Config as_conv4 = merge_config(
      small.effective_yaml, "ckpt",
      load_config("", {"resume=latest", "model.name=conv4", "model.widths=4,4,8,8"}), {});
  EXPECT_NE(describe_model(as_conv4), describe_model(small));
  const Config same =
      merge_config(small.effective_yaml, "ckpt", load_config("", {"resume=latest"}), {});
  EXPECT_EQ(describe_model(same), describe_model(small));
}

// The printed config: only what applies to the run; the full text stays in effective_yaml.
TEST(Config, PrintedConfigShowsOnlyTheKeysThatApply) {
  const Config maml = load_config("", {"algo=maml"});
  const std::string m = printed_config(maml);
  EXPECT_FALSE(contains(m, "slbamm:")) << m;
  EXPECT_FALSE(contains(m, "cuda:")) << m;            // device=cpu
  EXPECT_FALSE(contains(m, "  q: ")) << m;            // UFOM's q is not MAML's
  EXPECT_TRUE(contains(m, "  adjoint_clip: ")) << m;  // clips MAML's exact path too
  EXPECT_TRUE(contains(m, "inner:\n  steps: 1\n")) << m;
  EXPECT_TRUE(contains(m, "keys that do not apply to this run (algo maml, device cpu)")) << m;
  EXPECT_TRUE(contains(maml.effective_yaml, "slbamm:"));  // checkpoints keep everything

  const std::string u = printed_config(load_config("", {"algo=ufom", "device=cuda"}));
  EXPECT_TRUE(contains(u, "ufom:\n  q: 0.1\n")) << u;
  EXPECT_TRUE(contains(u, "cuda:\n")) << u;

  const std::string b = printed_config(load_config("", {"algo=slbamm"}));
  for (const char* absent : {"\ninner:", "\ntask:", "\nouter:", "\nufom:", "\nmodel:", "\neval:",
                             "\ncuda:", "\nmeta_batch:", "\nbudget:", "eval_split:", "assign:"})
    EXPECT_FALSE(contains(b, absent)) << absent << " in\n" << b;
  for (const char* present : {"slbamm:\n  problem: ", "steps: ", "data:\n  path: ", "checkpoint:\n",
                              "dist:\n  backend: "})
    EXPECT_TRUE(contains(b, present)) << present << " not in\n" << b;

  // Every key of the schema is either printed or counted as left out.
  const Config all =
      load_config("", {"algo=ufom", "device=cuda", "outer.optimizer=sgd", "log.bias_every=5"});
  const std::string a = printed_config(all);
  size_t printed = 0;
  for (const char* key :
       {"slbamm.problem", "ufom.q", "cuda.conv", "outer.momentum", "log.bias_tasks", "inner.lr"})
    printed += key_applies(all, key) ? 1 : 0;
  EXPECT_EQ(printed, 5u);  // only the slbamm key is left out of a UFOM run on a GPU
  EXPECT_TRUE(contains(a, "momentum: 0.9")) << a;
}

}  // namespace
}  // namespace mt
