// `dsforge report RUN_DIR`: one self-contained HTML file (inline SVG and CSS, no scripts fetched, no
// server, no network) from what a run folder holds: loss curves (train, validation, MTP), learning
// rate, throughput and MFU, an expert-load heatmap, rollbacks, the resolved config, final metrics,
// data statistics and generated samples; a fine-tuned classifier's metrics, per-class F1 bars and
// confusion heatmap (finetune.json); a generation fine-tune's scores and first outputs (seq2seq.json);
// and `dsforge analyze`'s findings (analysis.json). Every figure is plain SVG, so the page renders the
// same in any browser and in a headless one.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace dsforge::report {

struct Series {
  std::string name;
  std::vector<double> x, y;
};

// A line chart (x: steps unless x_label says otherwise) with axes, "nice" ticks, a legend and per-point tooltips.
std::string svg_line_chart(const std::string& title, const std::vector<Series>& series, const std::string& y_label,
                           bool log_y = false, const std::string& x_label = "step");
// rows x cols of values, coloured on a diverging scale centred at `center` (1 = perfectly balanced load).
std::string svg_heatmap(const std::string& title, const std::vector<std::vector<double>>& rows,
                        const std::vector<std::string>& row_labels, const std::string& col_label, double center);
// Horizontal bars, one per label (with an optional baseline mark per bar).
std::string svg_bar_chart(const std::string& title, const std::vector<std::string>& labels, const std::vector<double>& values,
                          const std::vector<double>& baseline, const std::string& x_label);
// A confusion matrix [gold][pred] as a heatmap shaded by each gold row's share, counts in the cells.
std::string svg_confusion(const std::string& title, const std::vector<std::string>& labels,
                          const std::vector<std::vector<int64_t>>& matrix);
// Parallel coordinates: one vertical axis per entry of `axes`, one polyline per entry of `lines` through
// its value on each axis (NaN: the line skips that axis, e.g. a conditional parameter it lacks). A
// numerical axis spans its values' range (log10 when `log`); a categorical one (non-empty `labels`)
// takes the index of the label and places them evenly. Lines are shaded by `shade` (lowest = darkest,
// drawn last so the best lie on top); `faint` lines (pruned trials) are drawn grey beneath them.
struct ParallelAxis {
  std::string name;
  bool log = false;
  std::vector<std::string> labels;  // categorical: the value is the index into these
};
std::string svg_parallel_coordinates(const std::string& title, const std::vector<ParallelAxis>& axes,
                                     const std::vector<std::vector<double>>& lines, const std::vector<double>& shade,
                                     const std::vector<bool>& faint, const std::vector<std::string>& line_titles);
// Text for HTML: & < > " escaped.
std::string html_escape(const std::string& s);
// A whole self-contained page (the reports' style, and the script that marks how many charts laid out).
std::string html_page(const std::string& title, const std::string& body_html);
// Ticks covering [lo, hi]: 1, 2 or 5 times a power of ten apart, about `count` of them.
std::vector<double> nice_ticks(double lo, double hi, int count = 5);

// The report of `run_dir` as one HTML document (a `dsforge finetune --out` folder works too); throws
// IoError when the folder has neither metrics.jsonl nor finetune.json.
std::string render_run_report(const std::string& run_dir);
// Writes it (atomically) to `out` (default <run_dir>/report.html); returns the path.
std::string write_run_report(const std::string& run_dir, const std::string& out = "");

}  // namespace dsforge::report
