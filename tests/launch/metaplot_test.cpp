// The metaplot program as a user runs it: hand-written metrics logs of two runs become SVG
// figures that parse as balanced XML, with one polyline per run holding one point per logged
// value, x increasing; a malformed log exits with code 2 naming the file and line. Also the
// metrics lines' text (launch/metrics_log.h) and their reading back (launch/plot.h).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "launch/metrics_log.h"
#include "launch/plot.h"
#include "tests/support/errors.h"
#include "tests/support/programs.h"

namespace mt {
namespace {

using testing::temp_dir;
using testing::usage_error;
using Result = testing::ProgramResult;

Result metaplot(const std::string& args) { return testing::run_program("metaplot", args); }

void write_file(const std::string& path, const std::string& text) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path) << text;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Checks that every element is closed in order (a rough XML well-formedness test); returns the
// names of the elements opened, in document order.
std::vector<std::string> check_balanced(const std::string& svg) {
  std::vector<std::string> stack, names;
  size_t i = 0;
  while ((i = svg.find('<', i)) != std::string::npos) {
    const size_t end = svg.find('>', i);
    EXPECT_NE(end, std::string::npos) << "unterminated tag";
    if (end == std::string::npos) break;
    const std::string tag = svg.substr(i + 1, end - i - 1);
    i = end + 1;
    if (tag.empty() || tag[0] == '?' || tag[0] == '!') continue;
    if (tag[0] == '/') {
      EXPECT_FALSE(stack.empty()) << "closing </" << tag << "> without an opening tag";
      if (stack.empty()) continue;
      EXPECT_EQ(stack.back(), tag.substr(1));
      stack.pop_back();
      continue;
    }
    const std::string name = tag.substr(0, tag.find_first_of(" \t\n/"));
    names.push_back(name);
    if (tag.back() != '/') stack.push_back(name);
  }
  EXPECT_TRUE(stack.empty()) << "unclosed <" << (stack.empty() ? "" : stack.back()) << ">";
  return names;
}

// The points of every <polyline>, as lists of (x, y).
std::vector<std::vector<std::pair<double, double>>> polylines(const std::string& svg) {
  std::vector<std::vector<std::pair<double, double>>> out;
  size_t i = 0;
  while ((i = svg.find("<polyline points=\"", i)) != std::string::npos) {
    i += 18;
    const std::string pts = svg.substr(i, svg.find('"', i) - i);
    std::vector<std::pair<double, double>> line;
    std::istringstream in(pts);
    for (std::string p; in >> p;) {
      const size_t comma = p.find(',');
      line.emplace_back(std::atof(p.substr(0, comma).c_str()),
                        std::atof(p.substr(comma + 1).c_str()));
    }
    out.push_back(line);
  }
  return out;
}

// The stroke colour of every <polyline>, and whether it is dashed, in document order.
std::vector<std::pair<std::string, bool>> polyline_styles(const std::string& svg) {
  std::vector<std::pair<std::string, bool>> out;
  size_t i = 0;
  while ((i = svg.find("<polyline ", i)) != std::string::npos) {
    const std::string tag = svg.substr(i, svg.find('>', i) - i);
    const size_t s = tag.find("stroke=\"") + 8;
    out.emplace_back(tag.substr(s, tag.find('"', s) - s),
                     tag.find("stroke-dasharray") != std::string::npos);
    i += tag.size();
  }
  return out;
}

TEST(Metaplot, WritesOneWellFormedSvgPerFigureWithOnePolylinePerRun) {
  const std::string dir = temp_dir("metaplot");
  // Run A (FOMAML-like): no grad_evals_total (running sum of grad_evals instead), resumed after
  // step 2 (elapsed restarts), evaluations at steps 2 and 4.
  write_file(dir + "/fomaml/metrics.jsonl",
             "{\"step\": 1, \"loss\": 1.6, \"acc\": 0.3, \"grad_evals\": 4, \"elapsed\": 0.1}\n"
             "{\"step\": 2, \"loss\": 1.5, \"acc\": 0.4, \"grad_evals\": 4, \"elapsed\": 0.2}\n"
             "{\"step\": 2, \"eval\": {\"split\": \"test\", \"episodes\": 20, \"acc_mean\": 0.4, "
             "\"acc_ci95\": 0.05, \"loss_mean\": 1.4}}\n"
             "\n"
             "{\"step\": 3, \"loss\": 1.4, \"acc\": 0.5, \"grad_evals\": 4, \"elapsed\": 0.05}\n"
             "{\"step\": 4, \"loss\": 1.2, \"acc\": 0.6, \"grad_evals\": 4, \"elapsed\": 0.1}\n"
             "{\"step\": 4, \"eval\": {\"split\": \"test\", \"episodes\": 20, \"acc_mean\": 0.5, "
             "\"acc_ci95\": 0.04, \"loss_mean\": 1.3}}\n");
  // Run B (UFOM): q and fo_bias, grad_evals_total, evaluations at steps 1, 2 and 3.
  std::string b;
  for (int s = 1; s <= 3; ++s) {
    b += "{\"step\": " + std::to_string(s) + ", \"loss\": 1." + std::to_string(7 - s) +
         ", \"q\": 0.2, \"fo_bias\": 0.0" + std::to_string(s) +
         ", \"grad_evals\": 6, \"grad_evals_total\": " + std::to_string(6 * s) +
         ", \"elapsed\": 0." + std::to_string(s) + ", \"flag\": true, \"none\": null}\n";
    b += "{\"step\": " + std::to_string(s) + ", \"eval\": {\"split\": \"test\", \"acc_mean\": 0." +
         std::to_string(3 + s) + ", \"acc_ci95\": 0.03}}\n";
  }
  // Bias-probe lines: run B's at steps 0 and 2 (FO and UFOM errors), with a resumed run
  // repeating step 2, which replaces the earlier line.
  b += "{\"step\": 0, \"bias\": {\"tasks\": 20, \"fo\": 0.5, \"fo_noise\": 0.1, "
       "\"ufom\": 0.05, \"ufom_noise\": 0.06, \"q\": 0.2}}\n"
       "{\"step\": 2, \"bias\": {\"tasks\": 20, \"fo\": 0.4, \"fo_noise\": 0.1, "
       "\"ufom\": 0.9, \"ufom_noise\": 0.06, \"q\": 0.2}}\n"
       "{\"step\": 2, \"bias\": {\"tasks\": 20, \"fo\": 0.4, \"fo_noise\": 0.1, "
       "\"ufom\": 0.04, \"ufom_noise\": 0.05, \"q\": 0.2}}\n";
  write_file(dir + "/ufom/metrics.jsonl", b);

  const Result r = metaplot("-o " + dir + "/figs " + dir + "/fomaml/metrics.jsonl " + dir +
                            "/ufom/metrics.jsonl --label FOMAML --label \"UFOM q=0.2\"");
  ASSERT_EQ(r.exit_code, 0) << r.output;

  struct Expect {
    const char* file;
    std::vector<size_t> points;  // per polyline, in run order
  };
  const Expect expected[] = {
      {"accuracy_vs_step.svg", {2, 3}},
      {"accuracy_vs_grad_evals.svg", {2, 3}},
      {"accuracy_vs_seconds.svg", {2, 3}},
      {"loss_vs_step.svg", {4, 3}},
      {"loss_vs_grad_evals.svg", {4, 3}},
      {"loss_vs_seconds.svg", {4, 3}},
      {"ufom_q_vs_step.svg", {3}},
      {"fo_bias_vs_step.svg", {3}},
      {"bias_vs_step.svg", {2, 2}},            // run B's FO and UFOM errors
      {"train_accuracy_vs_step.svg", {4, 0}},  // run B logs no training accuracy
      {"train_accuracy_vs_grad_evals.svg", {4, 0}},
      {"train_accuracy_vs_seconds.svg", {4, 0}},
  };
  for (const Expect& e : expected) {
    SCOPED_TRACE(e.file);
    const std::string path = dir + "/figs/" + e.file;
    ASSERT_TRUE(std::filesystem::exists(path)) << r.output;
    const std::string svg = read_file(path);
    const std::vector<std::string> names = check_balanced(svg);
    ASSERT_FALSE(names.empty());
    EXPECT_EQ(names.front(), "svg");
    const auto lines = polylines(svg);
    ASSERT_EQ(lines.size(), e.points.size());
    for (size_t k = 0; k < lines.size(); ++k) {
      EXPECT_EQ(lines[k].size(), e.points[k]) << "polyline " << k;
      for (size_t i = 1; i < lines[k].size(); ++i)
        EXPECT_GT(lines[k][i].first, lines[k][i - 1].first) << "polyline " << k << " point " << i;
    }
    EXPECT_NE(svg.find("<text"), std::string::npos);  // ticks, labels, legend
  }
  const std::string acc = read_file(dir + "/figs/accuracy_vs_step.svg");
  // Titled by the split evaluated (test here), never "Validation" for a test split; human axis
  // labels (no raw metric names); the first-order bias on a log axis with decade ticks.
  EXPECT_NE(acc.find(">Test-split accuracy"), std::string::npos) << acc;
  EXPECT_EQ(acc.find("Validation"), std::string::npos);
  const std::string fo = read_file(dir + "/figs/fo_bias_vs_step.svg");
  EXPECT_EQ(fo.find(">fo_bias<"), std::string::npos);
  EXPECT_NE(fo.find(">first-order bias"), std::string::npos) << fo;
  EXPECT_NE(fo.find(">1e-2<"), std::string::npos) << "no decade ticks: " << fo;
  EXPECT_NE(read_file(dir + "/figs/loss_vs_seconds.svg").find(">wall-clock seconds"),
            std::string::npos);
  const std::string train = read_file(dir + "/figs/train_accuracy_vs_step.svg");
  EXPECT_NE(train.find(">Training accuracy"), std::string::npos);
  EXPECT_NE(acc.find(">FOMAML<"), std::string::npos);
  EXPECT_NE(acc.find(">UFOM q=0.2<"), std::string::npos);
  EXPECT_NE(acc.find("<polygon"), std::string::npos);  // the 95% CI band
  const std::string bias = read_file(dir + "/figs/bias_vs_step.svg");
  EXPECT_NE(bias.find(">UFOM q=0.2 FO<"), std::string::npos);
  EXPECT_NE(bias.find(">UFOM q=0.2 UFOM<"), std::string::npos);
  EXPECT_EQ(bias.find(">FOMAML FO<"), std::string::npos);  // run A has no probes
  // UFOM's kept errors, 0.05 and 0.04, lie a few pixels apart on the 355-pixel-high plot; the
  // superseded 0.9 at step 2 would put the second point hundreds of pixels higher.
  const auto bias_lines = polylines(bias);
  ASSERT_EQ(bias_lines.size(), 2u);
  ASSERT_EQ(bias_lines[1].size(), 2u);
  EXPECT_LT(std::abs(bias_lines[1][1].second - bias_lines[1][0].second), 30);

  // A run keeps its colour across figures: run B is the second curve of the accuracy figure but
  // the only one of the q figure; its FO and UFOM errors share that colour, UFOM's dashed.
  const auto acc_styles = polyline_styles(acc);
  const auto q_styles = polyline_styles(read_file(dir + "/figs/ufom_q_vs_step.svg"));
  const auto bias_styles = polyline_styles(bias);
  ASSERT_EQ(acc_styles.size(), 2u);
  ASSERT_EQ(q_styles.size(), 1u);
  ASSERT_EQ(bias_styles.size(), 2u);
  EXPECT_NE(acc_styles[0].first, acc_styles[1].first);
  EXPECT_EQ(q_styles[0].first, acc_styles[1].first);
  EXPECT_EQ(bias_styles[0].first, acc_styles[1].first);
  EXPECT_EQ(bias_styles[1].first, acc_styles[1].first);
  EXPECT_FALSE(bias_styles[0].second);
  EXPECT_TRUE(bias_styles[1].second);
  EXPECT_FALSE(acc_styles[1].second);
}

// Evaluations before the first training line (eval.every < log.every) sit between step 0, where
// nothing is spent, and that line: here at 5 and 10 of 20 gradient evaluations.
TEST(Metaplot, EvaluationsBeforeTheFirstTrainingLineStartFromZero) {
  const std::string dir = temp_dir("metaplot_early");
  write_file(dir + "/run.jsonl",
             "{\"step\": 1, \"eval\": {\"acc_mean\": 0.3}}\n"
             "{\"step\": 2, \"eval\": {\"acc_mean\": 0.4}}\n"
             "{\"step\": 4, \"loss\": 1.2, \"grad_evals_total\": 20, \"elapsed\": 8}\n"
             "{\"step\": 4, \"eval\": {\"acc_mean\": 0.5}}\n");
  const Result r = metaplot("-o " + dir + "/figs " + dir + "/run.jsonl");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* f : {"accuracy_vs_grad_evals.svg", "accuracy_vs_seconds.svg"}) {
    SCOPED_TRACE(f);
    const auto lines = polylines(read_file(dir + "/figs/" + f));
    ASSERT_EQ(lines.size(), 1u);
    ASSERT_EQ(lines[0].size(), 3u);  // x = 5, 10, 20 (or 2, 4, 8 s): distinct and increasing
    // (x1 − x0) / (x2 − x0) = (10 − 5) / (20 − 5) = 1/3 (pixels, so 1e-2 for their rounding).
    EXPECT_NEAR((lines[0][1].first - lines[0][0].first) / (lines[0][2].first - lines[0][0].first),
                1.0 / 3.0, 1e-2);
  }
}

TEST(Metaplot, MalformedLogExitsWithCode2NamingFileAndLine) {
  const std::string dir = temp_dir("metaplot_bad");
  write_file(dir + "/bad.jsonl",
             "{\"step\": 1, \"loss\": 1.6}\n"
             "{\"step\": 2, \"loss\": 1.5}\n"
             "{\"step\": 3, \"loss\": }\n");
  Result r = metaplot("-o " + dir + "/figs " + dir + "/bad.jsonl");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("bad.jsonl:3"), std::string::npos) << r.output;

  write_file(dir + "/nostep.jsonl", "{\"loss\": 1.6}\n");
  r = metaplot("-o " + dir + "/figs " + dir + "/nostep.jsonl");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("nostep.jsonl:1"), std::string::npos) << r.output;

  r = metaplot("-o " + dir + "/figs " + dir + "/missing.jsonl");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  r = metaplot(dir + "/bad.jsonl");  // no -o
  EXPECT_EQ(r.exit_code, 2) << r.output;
}

// The text of a metrics line: keys in insertion order, ", " and ": " separators, nine
// significant digits, integers exact, null for NaN / Inf, escaped strings, nested objects.
TEST(MetricsLog, LineTextIsStableValidJson) {
  JsonObject eval;
  eval.add("split", "val").add("acc_mean", 0.5).add("acc_ci95", 1.0 / 3.0);
  JsonObject line;
  line.add("step", 3)
      .add("loss", 2.0 / 3.0)
      .add("grad_evals_total", 12345678901.0)
      .add("tiny", 1.5e-12)
      .add("nan", std::nan(""))
      .add("inf", -INFINITY)
      .add("note", "a \"b\"\\\n")
      .add("eval", eval);
  const std::string text = line.str();
  EXPECT_EQ(text,
            "{\"step\": 3, \"loss\": 0.666666667, \"grad_evals_total\": 12345678901, "
            "\"tiny\": 1.5e-12, \"nan\": null, \"inf\": null, \"note\": \"a \\\"b\\\"\\\\\\n\", "
            "\"eval\": {\"split\": \"val\", \"acc_mean\": 0.5, \"acc_ci95\": 0.333333333}}");
  const nlohmann::json back = nlohmann::json::parse(text);
  EXPECT_EQ(back["note"], "a \"b\"\\\n");
  EXPECT_EQ(back["grad_evals_total"].get<double>(), 12345678901.0);
  EXPECT_TRUE(back["nan"].is_null());
  line.add("step", 4);  // a key added again keeps its place
  EXPECT_EQ(line.str().rfind("{\"step\": 4, \"loss\"", 0), 0u) << line.str();
}

// read_metrics_jsonl flattens nested objects to dotted keys and names file, line and column of
// a malformed line.
TEST(MetricsLog, ReaderFlattensAndLocatesErrors) {
  const std::string dir = temp_dir("metaplot_reader");
  JsonObject eval;
  eval.add("acc_mean", 0.75).add("acc_ci95", 0.01).add("split", "val");
  write_file(dir + "/ok.jsonl",
             JsonObject().add("step", 2).add("loss", 1.25).add("sec", 0.5).str() + "\n\n" +
                 JsonObject().add("step", 2).add("eval", eval).str() + "\r\n" +
                 "{\"step\": 4, \"loss\": null, \"ok\": true, \"eval\": {}}\n");
  const MetricsRun run = read_metrics_jsonl(dir + "/ok.jsonl", "ok");
  ASSERT_EQ(run.train.size(), 1u);
  EXPECT_EQ(run.train[0].step, 2);
  EXPECT_EQ(run.train[0].loss, 1.25);
  ASSERT_EQ(run.evals.size(), 1u);
  EXPECT_EQ(run.evals[0].acc_mean, 0.75);
  EXPECT_EQ(run.evals[0].acc_ci95, 0.01);

  auto error_of = [&](const std::string& text) {
    write_file(dir + "/bad.jsonl", "{\"step\": 1, \"loss\": 1}\n" + text + "\n");
    return usage_error([&] { read_metrics_jsonl(dir + "/bad.jsonl", "bad"); });
  };
  const std::string where = dir + "/bad.jsonl:2: malformed JSON";
  std::string e = error_of("{\"step\": 3, \"loss\": }");
  EXPECT_EQ(e.rfind(where + " at column 21: syntax error while parsing value", 0), 0u) << e;
  e = error_of("{\"step\": 3} trailing");
  EXPECT_EQ(e.rfind(where + " at column ", 0), 0u) << e;
  e = error_of("[1, 2]");
  EXPECT_EQ(e.rfind(where + " at column 1: expected '{'", 0), 0u) << e;
  e = error_of("{\"step\": 3, \"xs\": [1, 2]}");
  EXPECT_EQ(e, where + ": \"xs\": lists are not supported") << e;
  e = error_of("{\"a\": {\"b\": {\"c\": {\"d\": {\"e\": {\"f\": 1}}}}}}");
  EXPECT_EQ(e, where + ": objects nested too deeply") << e;
}

}  // namespace
}  // namespace mt
