// Figures of training runs for metaplot (DESIGN §9, issue 7): reads metatrain's metrics JSONL
// files and draws line charts as standalone SVG, written here in C++ (no Python, no external
// tools): one polyline per run, an optional shaded band (e.g. a 95% CI), axes, ticks, legend.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace mt {

// One run's metrics log, reduced to what the figures need. Absent numbers are NaN.
struct MetricsRun {
  struct Train {
    double step = 0, loss = 0, acc = 0, grad_evals_total = 0, elapsed = 0, q = 0, fo_bias = 0;
  };
  struct Eval {
    double step = 0, acc_mean = 0, acc_ci95 = 0, grad_evals_total = 0, elapsed = 0;
    std::string split;  // eval.split ("test", "val", ...), "" when not logged
  };
  struct Bias {  // a log.bias_every probe (core/bias_probe.h); ufom* NaN unless a UFOM run
    double step = 0, fo = 0, fo_noise = 0, ufom = 0, ufom_noise = 0;
  };
  std::string label;
  std::vector<Train> train;  // by increasing step
  std::vector<Eval> evals;   // by increasing step
  std::vector<Bias> biases;  // by increasing step
};

// Reads a metrics JSONL file: one flat JSON object per line (numbers, strings, booleans, null)
// with at most nested objects such as "eval". Training lines carry step and loss; evaluation
// lines step and eval.acc_mean (eval.acc_ci95 optional); bias-probe lines step and bias.fo
// (bias.fo_noise, bias.ufom, bias.ufom_noise optional). elapsed is train_elapsed (training
// seconds without evaluation, probes and checkpoints) where logged. grad_evals_total, when absent,
// is the running sum of grad_evals (each line's count times the steps since the previous line).
// elapsed restarts at 0 in a resumed run; it is made cumulative. A resume from an earlier
// checkpoint (a step at or below one already read) drops the lines it superseded. Evaluation
// points take grad_evals_total and elapsed interpolated from the training lines by step.
// A malformed line throws UsageError "<path>:<line>: ...".
MetricsRun read_metrics_jsonl(const std::string& path, const std::string& label);

// One curve of a figure; band_lo/band_hi are empty or as long as x. color indexes the palette
// (-1: the curve's position in the figure), so one run keeps its colour across figures.
struct Curve {
  std::string label;
  std::vector<double> x, y, band_lo, band_hi;
  int color = -1;
  bool dashed = false;
  bool markers = false;  // a dot at every point (so a one-point curve shows)
};

struct Figure {
  std::string title, x_label, y_label;
  std::vector<Curve> curves;
  bool log_y = false;  // logarithmic y axis, ticks at powers of ten; y <= 0 is not drawn
};

// The figure as a standalone SVG document. Curves with no points keep their legend entry.
std::string render_svg(const Figure& fig);

// The standard figures of a comparison, as (file name, figure): evaluation accuracy (titled by
// the evaluated split), training loss and training accuracy against outer step, gradient
// evaluations and wall-clock seconds; for runs that log q (UFOM), q and the first-order bias
// (log scale) against step; for runs with bias probes, each estimator's measured bias against
// step with its zero-mean noise level shaded (FOMAML's error solid, UFOM's dashed). Run k has
// colour k in every figure.
std::vector<std::pair<std::string, Figure>> standard_figures(const std::vector<MetricsRun>& runs);

}  // namespace mt
