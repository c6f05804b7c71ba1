// Metrics JSONL reading and SVG line charts for metaplot (launch/plot.h): metatrain's lines
// parsed by nlohmann-json and flattened to dotted keys, the reduction of a log to training and
// evaluation points, and an SVG writer with "nice" axis ticks, shaded bands and a legend.
#include "launch/plot.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>

#include "core/check.h"

namespace mt {
namespace {

using detail::concat;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// ---- JSON lines ----------------------------------------------------------------------------

// One metrics line as dotted keys: its numbers (null as NaN: metatrain writes null for NaN /
// Inf) and its strings ("eval.split"); booleans are skipped.
struct Line {
  std::map<std::string, double> numbers;
  std::map<std::string, std::string> strings;
};

// Flattens a parsed JSON object into dotted keys ("eval.acc_mean"). Throws std::string for
// lists and for objects nested more than four deep.
void flatten(const nlohmann::json& object, const std::string& prefix, Line& out, int depth) {
  if (depth > 4) throw std::string("malformed JSON: objects nested too deeply");
  for (const auto& [name, value] : object.items()) {
    const std::string key = prefix + name;
    if (value.is_object())
      flatten(value, key + ".", out, depth + 1);
    else if (value.is_array())
      throw concat("malformed JSON: \"", key, "\": lists are not supported");
    else if (value.is_number())
      out.numbers[key] = value.get<double>();
    else if (value.is_null())
      out.numbers[key] = kNaN;
    else if (value.is_string())
      out.strings[key] = value.get<std::string>();
  }
}

// One metrics line as dotted keys. Throws std::string "malformed JSON at column N: ..." with
// nlohmann's description of the problem.
Line parse_line(const std::string& line) {
  nlohmann::json object;
  try {
    object = nlohmann::json::parse(line);
  } catch (const nlohmann::json::parse_error& e) {
    // what() is "[json.exception.parse_error.101] parse error at line 1, column 14: <problem>".
    const std::string what = e.what();
    const size_t column = what.find("column ");
    const size_t colon = what.find(": ", column == std::string::npos ? 0 : column);
    throw concat("malformed JSON at column ", e.byte, ": ",
                 colon == std::string::npos ? what : what.substr(colon + 2));
  }
  if (!object.is_object()) throw std::string("malformed JSON at column 1: expected '{'");
  Line out;
  flatten(object, "", out, 0);
  return out;
}

double get(const Line& m, const char* key) {
  const auto it = m.numbers.find(key);
  return it == m.numbers.end() ? kNaN : it->second;
}

// y at `x` by linear interpolation in (xs, ys), xs increasing; clamped at the ends.
double interpolate(const std::vector<double>& xs, const std::vector<double>& ys, double x) {
  if (xs.empty()) return kNaN;
  const auto it = std::lower_bound(xs.begin(), xs.end(), x);
  if (it == xs.begin()) return ys.front();
  if (it == xs.end()) return ys.back();
  const size_t k = static_cast<size_t>(it - xs.begin());
  const double t = (x - xs[k - 1]) / (xs[k] - xs[k - 1]);
  return ys[k - 1] + t * (ys[k] - ys[k - 1]);
}

// ---- SVG -----------------------------------------------------------------------------------

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string num(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", x);
  return buf;
}

// Tick positions covering [lo, hi] at a 1, 2 or 5 times a power of ten step, about 5 of them.
struct Axis {
  double lo = 0, hi = 1, step = 0.2;
};
Axis nice_axis(double lo, double hi) {
  if (!(std::isfinite(lo) && std::isfinite(hi))) lo = 0, hi = 1;
  if (hi - lo <= 0) {
    const double pad = lo == 0 ? 1 : std::abs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  const double raw = (hi - lo) / 5;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  Axis a;
  a.step = step;
  a.lo = std::floor(lo / step + 1e-9) * step;
  a.hi = std::ceil(hi / step - 1e-9) * step;
  return a;
}

std::string tick_label(double v, double step) {
  if (std::abs(v) < step * 1e-6) v = 0;
  char buf[32];
  const double a = std::abs(v);
  if (a != 0 && (a >= 1e6 || a < 1e-3))
    std::snprintf(buf, sizeof buf, "%.3g", v);
  else
    std::snprintf(buf, sizeof buf, "%.*f",
                  step >= 1 ? 0 : static_cast<int>(-std::floor(std::log10(step) + 1e-9)), v);
  return buf;
}

const char* const kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                               "#9467bd", "#8c564b", "#e377c2", "#17becf"};
// A log axis in log10 units: whole decades covering [lo, hi], a tick every decade (or every
// few when they are many).
Axis decade_axis(double lo, double hi) {
  if (!(std::isfinite(lo) && std::isfinite(hi))) lo = -1, hi = 0;
  Axis a;
  a.lo = std::floor(lo);
  a.hi = std::max(std::ceil(hi), a.lo + 1);
  a.step = std::max(1.0, std::ceil((a.hi - a.lo) / 6));
  a.hi = a.lo + a.step * std::ceil((a.hi - a.lo) / a.step);
  return a;
}

}  // namespace

MetricsRun read_metrics_jsonl(const std::string& path, const std::string& label) {
  std::ifstream in(path, std::ios::binary);
  MT_REQUIRE(in, "cannot open metrics file '", path,
             "'; give the metrics.jsonl of a metatrain run");
  MetricsRun run;
  run.label = label;
  double evals_sum = 0, prev_step = 0;          // for the running sum of grad_evals
  double elapsed_offset = 0, prev_elapsed = 0;  // elapsed restarts on resume
  int line_no = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    Line m;
    try {
      m = parse_line(line);
    } catch (const std::string& what) {
      throw UsageError(concat(path, ":", line_no, ": ", what));
    }
    const double step = get(m, "step");
    MT_REQUIRE(std::isfinite(step), path, ":", line_no, ": no numeric \"step\"; not a metatrain ",
               "metrics line");
    const bool is_eval = std::isfinite(get(m, "eval.acc_mean"));
    const bool is_train = std::isfinite(get(m, "loss")) && !m.strings.count("eval.split");
    if (std::isfinite(get(m, "bias.fo"))) {
      while (!run.biases.empty() && run.biases.back().step >= step) run.biases.pop_back();
      run.biases.push_back({step, get(m, "bias.fo"), get(m, "bias.fo_noise"), get(m, "bias.ufom"),
                            get(m, "bias.ufom_noise")});
      continue;
    }
    if (!is_eval && !is_train) continue;  // e.g. another program's lines

    if (is_train) {
      // A resume from an earlier checkpoint repeats steps: drop what it superseded.
      while (!run.train.empty() && run.train.back().step >= step) run.train.pop_back();
      while (!run.evals.empty() && run.evals.back().step >= step) run.evals.pop_back();
      prev_step = run.train.empty() ? 0 : run.train.back().step;
      evals_sum = run.train.empty() ? 0 : run.train.back().grad_evals_total;
      MetricsRun::Train t;
      t.step = step;
      t.loss = get(m, "loss");
      t.acc = get(m, "acc");
      t.q = get(m, "q");
      t.fo_bias = get(m, "fo_bias");
      double total = get(m, "grad_evals_total");
      if (!std::isfinite(total)) {
        const double per_step = get(m, "grad_evals");
        total = std::isfinite(per_step) ? evals_sum + per_step * (step - prev_step) : kNaN;
      }
      t.grad_evals_total = total;
      double elapsed = get(m, "train_elapsed");
      if (!std::isfinite(elapsed)) elapsed = get(m, "elapsed");
      if (std::isfinite(elapsed)) {
        if (elapsed < prev_elapsed) elapsed_offset += prev_elapsed;  // a new process
        prev_elapsed = elapsed;
        elapsed += elapsed_offset;
      }
      t.elapsed = elapsed;
      run.train.push_back(t);
    } else {
      while (!run.evals.empty() && run.evals.back().step >= step) run.evals.pop_back();
      MetricsRun::Eval e;
      e.step = step;
      e.acc_mean = get(m, "eval.acc_mean");
      const double ci = get(m, "eval.acc_ci95");
      e.acc_ci95 = std::isfinite(ci) ? ci : 0;
      const auto split = m.strings.find("eval.split");
      if (split != m.strings.end()) e.split = split->second;
      run.evals.push_back(e);
    }
  }
  MT_REQUIRE(!in.bad(), "cannot read metrics file '", path, "'");
  MT_REQUIRE(!run.train.empty() || !run.evals.empty() || !run.biases.empty(), path,
             ": no training lines (step, loss) or evaluation lines (step, eval.acc_mean)");

  // A run starts at step 0 with nothing spent: evaluations before the first training line
  // (log.every larger than eval.every) interpolate from there.
  std::vector<double> steps, totals, seconds;
  if (!run.train.empty() && run.train.front().step > 0) {
    steps.push_back(0);
    totals.push_back(0);
    seconds.push_back(0);
  }
  for (const auto& t : run.train) {
    steps.push_back(t.step);
    totals.push_back(t.grad_evals_total);
    seconds.push_back(t.elapsed);
  }
  for (auto& e : run.evals) {
    e.grad_evals_total = interpolate(steps, totals, e.step);
    e.elapsed = interpolate(steps, seconds, e.step);
  }
  return run;
}

std::string render_svg(const Figure& fig) {
  // The legend column grows with the longest label (about 7 px a character at 12 px).
  size_t longest = 0;
  for (const Curve& c : fig.curves) longest = std::max(longest, c.label.size());
  const double left = 80, top = 45, bottom = 60;
  const double right = std::max(190.0, 55.0 + 7.0 * static_cast<double>(longest));
  const double width = left + 490 + right, height = 460;
  const double pw = width - left - right, ph = height - top - bottom;

  // On a log axis everything is placed by log10(y); values <= 0 have no place and are skipped.
  auto ty = [&](double y) { return fig.log_y ? (y > 0 ? std::log10(y) : kNaN) : y; };
  double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
  for (const Curve& c : fig.curves)
    for (size_t i = 0; i < c.x.size(); ++i) {
      xlo = std::min(xlo, c.x[i]);
      xhi = std::max(xhi, c.x[i]);
      for (double y : {c.y[i], c.band_lo.empty() ? c.y[i] : c.band_lo[i],
                       c.band_hi.empty() ? c.y[i] : c.band_hi[i]}) {
        if (!std::isfinite(ty(y))) continue;
        ylo = std::min(ylo, ty(y));
        yhi = std::max(yhi, ty(y));
      }
    }
  const Axis ax = nice_axis(xlo, xhi);
  const Axis ay = fig.log_y ? decade_axis(ylo, yhi) : nice_axis(ylo, yhi);
  auto px = [&](double x) { return left + (x - ax.lo) / (ax.hi - ax.lo) * pw; };
  auto py = [&](double y) { return top + ph - (ty(y) - ay.lo) / (ay.hi - ay.lo) * ph; };
  auto y_tick = [&](double v) {  // v is in axis units (log10 on a log axis)
    return fig.log_y ? concat("1e", static_cast<int>(std::lround(v))) : tick_label(v, ay.step);
  };
  auto py_axis = [&](double v) { return top + ph - (v - ay.lo) / (ay.hi - ay.lo) * ph; };

  std::string s;
  s += concat("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
              "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"", width, "\" height=\"", height,
              "\" viewBox=\"0 0 ", width, " ", height,
              "\" font-family=\"Helvetica, Arial, sans-serif\" font-size=\"12\">\n");
  s += concat("<rect x=\"0\" y=\"0\" width=\"", width, "\" height=\"", height,
              "\" fill=\"white\"/>\n");
  s += concat("<text x=\"", num(left + pw / 2), "\" y=\"25\" text-anchor=\"middle\" ",
              "font-size=\"15\" font-weight=\"bold\">", escape(fig.title), "</text>\n");

  // Grid, ticks and tick labels.
  s += "<g stroke=\"#e0e0e0\" stroke-width=\"1\">\n";
  for (double v = ax.lo; v <= ax.hi + ax.step * 1e-6; v += ax.step)
    s += concat("<line x1=\"", num(px(v)), "\" y1=\"", num(top), "\" x2=\"", num(px(v)), "\" y2=\"",
                num(top + ph), "\"/>\n");
  for (double v = ay.lo; v <= ay.hi + ay.step * 1e-6; v += ay.step)
    s += concat("<line x1=\"", num(left), "\" y1=\"", num(py_axis(v)), "\" x2=\"", num(left + pw),
                "\" y2=\"", num(py_axis(v)), "\"/>\n");
  s += "</g>\n<g fill=\"#333333\">\n";
  for (double v = ax.lo; v <= ax.hi + ax.step * 1e-6; v += ax.step)
    s += concat("<text x=\"", num(px(v)), "\" y=\"", num(top + ph + 18),
                "\" text-anchor=\"middle\">", tick_label(v, ax.step), "</text>\n");
  for (double v = ay.lo; v <= ay.hi + ay.step * 1e-6; v += ay.step)
    s += concat("<text x=\"", num(left - 8), "\" y=\"", num(py_axis(v) + 4),
                "\" text-anchor=\"end\">", y_tick(v), "</text>\n");
  s += "</g>\n";
  s += concat("<rect x=\"", num(left), "\" y=\"", num(top), "\" width=\"", num(pw), "\" height=\"",
              num(ph), "\" fill=\"none\" stroke=\"#333333\"/>\n");
  s += concat("<text x=\"", num(left + pw / 2), "\" y=\"", num(height - 15),
              "\" text-anchor=\"middle\" font-size=\"13\">", escape(fig.x_label), "</text>\n");
  s += concat("<text x=\"18\" y=\"", num(top + ph / 2), "\" text-anchor=\"middle\" ",
              "font-size=\"13\" transform=\"rotate(-90 18 ", num(top + ph / 2), ")\">",
              escape(fig.y_label), "</text>\n");

  // Bands under the lines, then one polyline per curve, then the legend.
  auto color = [&](size_t k) {
    const int c = fig.curves[k].color;
    return kColors[(c >= 0 ? static_cast<size_t>(c) : k) % 8];
  };
  auto dash = [&](size_t k) {
    return fig.curves[k].dashed ? std::string(" stroke-dasharray=\"6,4\"") : std::string();
  };
  for (size_t k = 0; k < fig.curves.size(); ++k) {
    const Curve& c = fig.curves[k];
    if (c.band_lo.empty() || c.x.empty()) continue;
    std::string pts;
    for (size_t i = 0; i < c.x.size(); ++i)
      if (std::isfinite(py(c.band_hi[i])))
        pts += num(px(c.x[i])) + "," + num(py(c.band_hi[i])) + " ";
    for (size_t i = c.x.size(); i-- > 0;)
      if (std::isfinite(py(c.band_lo[i])))
        pts += num(px(c.x[i])) + "," + num(py(c.band_lo[i])) + " ";
    if (pts.empty()) continue;
    pts.pop_back();
    s += concat("<polygon points=\"", pts, "\" fill=\"", color(k),
                "\" fill-opacity=\"0.15\" stroke=\"none\"/>\n");
  }
  for (size_t k = 0; k < fig.curves.size(); ++k) {
    const Curve& c = fig.curves[k];
    std::string pts;
    for (size_t i = 0; i < c.x.size(); ++i)
      if (std::isfinite(py(c.y[i])))
        pts += (pts.empty() ? "" : " ") + num(px(c.x[i])) + "," + num(py(c.y[i]));
    s += concat("<polyline points=\"", pts, "\" fill=\"none\" stroke=\"", color(k),
                "\" stroke-width=\"1.8\" stroke-linejoin=\"round\"", dash(k), "/>\n");
    if (!c.markers) continue;
    for (size_t i = 0; i < c.x.size(); ++i)
      if (std::isfinite(py(c.y[i])))
        s += concat("<circle cx=\"", num(px(c.x[i])), "\" cy=\"", num(py(c.y[i])),
                    "\" r=\"3.5\" fill=\"", color(k), "\"/>\n");
  }
  for (size_t k = 0; k < fig.curves.size(); ++k) {
    const double y = top + 10 + 20 * static_cast<double>(k);
    const double x = left + pw + 15;
    s += concat("<line x1=\"", num(x), "\" y1=\"", num(y), "\" x2=\"", num(x + 24), "\" y2=\"",
                num(y), "\" stroke=\"", color(k), "\" stroke-width=\"2.5\"", dash(k), "/>\n");
    s += concat("<text x=\"", num(x + 30), "\" y=\"", num(y + 4), "\">",
                escape(fig.curves[k].label), "</text>\n");
  }
  s += "</svg>\n";
  return s;
}

namespace {
// "Test-split accuracy ..." from the splits the runs evaluated ("Evaluation accuracy ..." when
// none is logged; the splits joined when runs differ).
std::string evaluation_title(const std::vector<MetricsRun>& runs) {
  std::vector<std::string> splits;
  for (const MetricsRun& r : runs)
    for (const auto& e : r.evals)
      if (!e.split.empty() && std::find(splits.begin(), splits.end(), e.split) == splits.end())
        splits.push_back(e.split);
  std::string which = "Evaluation";
  if (!splits.empty()) {
    which.clear();
    for (const std::string& s : splits) which += (which.empty() ? "" : " / ") + s;
    which[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(which[0])));
    which += splits.size() == 1 ? "-split" : " splits";
  }
  return which + " accuracy (mean, shaded: 95% CI)";
}
}  // namespace

std::vector<std::pair<std::string, Figure>> standard_figures(const std::vector<MetricsRun>& runs) {
  struct XAxis {
    const char* suffix;
    const char* label;
  };
  const XAxis xs[] = {
      {"step", "outer step"},
      {"grad_evals", "gradient evaluations (cumulative)"},
      {"seconds",
       "wall-clock seconds of training, evaluation excluded (the machine's load shows)"}};
  auto pick = [](int axis, double step, double evals, double sec) {
    return axis == 0 ? step : axis == 1 ? evals : sec;
  };
  // Adds (x, y[, band]) keeping only finite, x-increasing points.
  auto push = [](Curve& c, double x, double y, double lo, double hi, bool band) {
    if (!std::isfinite(x) || !std::isfinite(y) || (!c.x.empty() && x <= c.x.back())) return;
    c.x.push_back(x);
    c.y.push_back(y);
    if (band) {
      c.band_lo.push_back(lo);
      c.band_hi.push_back(hi);
    }
  };

  std::vector<std::pair<std::string, Figure>> out;
  const std::string acc_title = evaluation_title(runs);
  for (int a = 0; a < 3; ++a) {
    Figure acc{acc_title, xs[a].label, "accuracy on held-out tasks", {}};
    Figure loss{"Training loss (query, meta-batch mean)", xs[a].label, "query loss", {}};
    Figure train_acc{"Training accuracy (query, meta-batch mean)",
                     xs[a].label,
                     "query accuracy after adaptation",
                     {}};
    for (size_t k = 0; k < runs.size(); ++k) {
      const MetricsRun& r = runs[k];
      Curve ca{r.label, {}, {}, {}, {}, static_cast<int>(k)};
      Curve cl{r.label, {}, {}, {}, {}, static_cast<int>(k)};
      Curve ct{r.label, {}, {}, {}, {}, static_cast<int>(k)};
      for (const auto& e : r.evals)
        push(ca, pick(a, e.step, e.grad_evals_total, e.elapsed), e.acc_mean,
             e.acc_mean - e.acc_ci95, e.acc_mean + e.acc_ci95, true);
      for (const auto& t : r.train) {
        push(cl, pick(a, t.step, t.grad_evals_total, t.elapsed), t.loss, 0, 0, false);
        push(ct, pick(a, t.step, t.grad_evals_total, t.elapsed), t.acc, 0, 0, false);
      }
      acc.curves.push_back(ca);
      loss.curves.push_back(cl);
      train_acc.curves.push_back(ct);
    }
    out.emplace_back(concat("accuracy_vs_", xs[a].suffix, ".svg"), acc);
    out.emplace_back(concat("loss_vs_", xs[a].suffix, ".svg"), loss);
    out.emplace_back(concat("train_accuracy_vs_", xs[a].suffix, ".svg"), train_acc);
  }
  Figure q{"UFOM: probability q of the exact path", "outer step", "probability q", {}};
  Figure bias{"Measured first-order bias |mean(g_E - g_F)| (log scale)",
              "outer step",
              "first-order bias |mean(g_E - g_F)|",
              {},
              true};
  for (size_t k = 0; k < runs.size(); ++k) {
    const MetricsRun& r = runs[k];
    Curve cq{r.label, {}, {}, {}, {}, static_cast<int>(k)};
    Curve cb{r.label, {}, {}, {}, {}, static_cast<int>(k)};
    for (const auto& t : r.train) {
      push(cq, t.step, t.q, 0, 0, false);
      push(cb, t.step, t.fo_bias, 0, 0, false);
    }
    if (!cq.x.empty()) q.curves.push_back(cq);
    if (!cb.x.empty()) bias.curves.push_back(cb);
  }
  if (!q.curves.empty()) out.emplace_back("ufom_q_vs_step.svg", q);
  // The probes: FOMAML's error g_F − g_E for every run, UFOM's g_U − g_E for UFOM runs; the
  // band up to the noise level is what a zero-mean error would show.
  Figure probe{"Bias |mean(g - g_E)| on fresh tasks",
               "outer step",
               "bias (shaded: zero-mean noise level)",
               {}};
  for (size_t k = 0; k < runs.size(); ++k) {
    const MetricsRun& r = runs[k];
    Curve fo{r.label + " FO", {}, {}, {}, {}, static_cast<int>(k)};
    Curve uf{r.label + " UFOM", {}, {}, {}, {}, static_cast<int>(k), true};
    for (const auto& b : r.biases) {
      push(fo, b.step, b.fo, 0, b.fo_noise, true);
      push(uf, b.step, b.ufom, 0, b.ufom_noise, true);
    }
    if (!fo.x.empty()) probe.curves.push_back(fo);
    if (!uf.x.empty()) probe.curves.push_back(uf);
  }
  if (!probe.curves.empty()) out.emplace_back("bias_vs_step.svg", probe);
  if (!bias.curves.empty()) out.emplace_back("fo_bias_vs_step.svg", bias);
  return out;
}

}  // namespace mt
