// metabench estimators on a small Conv-4 over the glyphs: one JSON line per estimator with the
// right anchors (the exact gradient scores itself perfectly, FOMAML and the truncated adjoint do
// not, the mean over UFOM's draws beats one draw's mean), an SVG, and exit 2 for an algorithm
// whose gradient is not MAML's.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tests/support/programs.h"

namespace mt {
namespace {

std::vector<nlohmann::json> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<nlohmann::json> rows;
  for (std::string line; std::getline(in, line);) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

TEST(Metabench, ScoresEveryEstimatorAgainstTheExactGradient) {
  const std::string dir = testing::temp_dir("metabench");
  const testing::ProgramResult r = testing::run_program(
      "metabench",
      "estimators model.filters=4 task.queries=2 inner.steps=4 threads=1 --tasks 4 "
      "--draws 50 --out " +
          dir + "/est.jsonl --svg " + dir + "/est.svg");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::map<std::string, nlohmann::json> by;
  int imaml = 0, truncated = 0, ufom = 0;
  for (const auto& row : read_lines(dir + "/est.jsonl")) {
    const std::string name =
        row["estimator"].get<std::string>() + " " + row["setting"].get<std::string>();
    by[name] = row;
    imaml += row["estimator"] == "imaml";
    truncated += row["estimator"] == "truncated";
    ufom += row["estimator"] == "ufom";
    EXPECT_GT(row["grad_evals"].get<double>(), 0) << name;
  }
  EXPECT_EQ(imaml, 9);
  EXPECT_EQ(truncated, 2);  // k = 1, 2 below r = 4
  EXPECT_EQ(ufom, 4);
  ASSERT_TRUE(by.count("exact maml") && by.count("fomaml ") && by.count("reptile "));
  EXPECT_NEAR(by["exact maml"]["cosine"].get<double>(), 1.0, 1e-12);
  EXPECT_EQ(by["exact maml"]["rel_err"].get<double>(), 0.0);
  EXPECT_GT(by["fomaml "]["rel_err"].get<double>(), 1e-3);
  EXPECT_GT(by["truncated k=1"]["rel_err"].get<double>(), 1e-4);
  // 50 draws of an unbiased estimator: their mean is closer than one draw's mean.
  const auto& q5 = by["ufom q=0.50"];
  EXPECT_LT(q5["rel_err"].get<double>(), q5["draw_rel_err"].get<double>());
  EXPECT_GT(q5["variance"].get<double>(), 0);
  EXPECT_LT(by["fomaml "]["grad_evals"].get<double>(),
            by["exact maml"]["grad_evals"].get<double>());
  std::ifstream svg(dir + "/est.svg");
  std::stringstream text;
  text << svg.rdbuf();
  EXPECT_NE(text.str().find("<svg"), std::string::npos);
}

TEST(Metabench, RefusesAnAlgorithmWhoseGradientIsNotMamls) {
  const testing::ProgramResult r =
      testing::run_program("metabench", "estimators algo=metasgd model.filters=4 --tasks 2");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("maml, fomaml or ufom"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace mt
