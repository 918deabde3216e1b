#include "dsforge/pipeline/prune_curve.h"

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/log.h"
#include "dsforge/pipeline/stages.h"
#include "dsforge/report/html_report.h"

namespace dsforge::pipeline {
namespace {

double bits_per_byte(const std::string& model_dir, const std::string& text) {
  return nlohmann::json::parse(eval_text(model_dir, text, 0, 0, 16, true)).at("bits_per_byte").get<double>();
}

// The parameter count dsforge_pruning.json records for a pruned folder.
int64_t parameters_of(const std::string& dir) {
  return nlohmann::json::parse(read_file(path_join(dir, "dsforge_pruning.json"))).at("params_after").get<int64_t>();
}

// Prunes `model` into `out` unless a finished folder is there.
void prune_once(const std::string& model, const std::string& out, compress::PruneOptions o) {
  if (file_exists(path_join(out, "dsforge_pruning.json"))) {
    log_info("prune curve: reusing ", out);
    return;
  }
  remove_all(out);  // a folder without its report is not finished
  compress::prune_model(model, out, o);
}

std::string amount_name(double a) { return fmt(std::lround(a * 1000) / 1000.0); }
std::string num4(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.4f", v);
  return b;
}
std::string pct(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%+.2f%%", v);
  return b;
}

}  // namespace

std::string prune_curve(const PruneCurveOptions& opts) {
  if (opts.methods.empty() || opts.amounts.empty()) throw ConfigError("prune --curve: give --methods and --amounts");
  for (double a : opts.amounts)
    if (!(a > 0 && a < 1)) throw ConfigError(fmt("prune --curve: amount ", a, " must be in (0, 1)"));
  if (!file_exists(opts.text)) throw ConfigError(fmt("prune --curve --text ", opts.text, ": file does not exist"));
  const bool recover = opts.prune.recover_steps > 0;
  make_dirs(opts.out);

  const double base = bits_per_byte(opts.model, opts.text);
  nlohmann::json j = {{"model", opts.model},     {"text", opts.text},       {"recover_steps", opts.prune.recover_steps},
                      {"bits_per_byte", base},   {"points", nlohmann::json::array()}};
  double control = NAN;
  if (recover) {  // the unpruned model through the same recovery steps
    compress::PruneOptions o = opts.prune;
    o.method = "magnitude";
    o.amount = 0;
    const std::string dir = path_join(opts.out, "control-rec");
    prune_once(opts.model, dir, o);
    control = bits_per_byte(dir, opts.text);
    j["control_recovered_bits_per_byte"] = control;
  }
  std::string md = fmt("| method | amount | parameters | bits/byte one-shot | change |",
                       recover ? fmt(" bits/byte after ", opts.prune.recover_steps, " recovery steps | vs control |") : "",
                       "\n|---|---|---:|---:|---:|", recover ? "---:|---:|" : "", "\n");
  md += fmt("| none | 0 | | ", num4(base), " | |", recover ? fmt(" ", num4(control), " (control) | |") : "", "\n");
  std::string charts;
  for (const auto& method : opts.methods) {
    report::Series one{"one-shot", {0}, {base}}, rec{fmt("after ", opts.prune.recover_steps, " recovery steps"), {}, {}};
    if (recover) rec.x.push_back(0), rec.y.push_back(control);
    for (double amount : opts.amounts) {
      compress::PruneOptions o = opts.prune;
      o.method = method;
      o.amount = amount;
      o.recover_steps = 0;
      const std::string dir = path_join(opts.out, method + "-" + amount_name(amount));
      prune_once(opts.model, dir, o);
      nlohmann::json p = {{"method", method}, {"amount", amount}, {"parameters", parameters_of(dir)},
                          {"bits_per_byte", bits_per_byte(dir, opts.text)}};
      one.x.push_back(amount), one.y.push_back(p["bits_per_byte"].get<double>());
      const double b = p["bits_per_byte"].get<double>();
      md += fmt("| ", method, " | ", amount, " | ", p["parameters"].get<int64_t>(), " | ", num4(b), " | ", pct(100 * (b / base - 1)), " |");
      if (recover) {
        const std::string rdir = dir + "-rec";
        o.recover_steps = opts.prune.recover_steps;
        prune_once(opts.model, rdir, o);
        const double r = bits_per_byte(rdir, opts.text);
        p["bits_per_byte_recovered"] = r;
        rec.x.push_back(amount), rec.y.push_back(r);
        md += fmt(" ", num4(r), " | ", pct(100 * (r / control - 1)), " |");
      }
      md += "\n";
      j["points"].push_back(p);
      log_info("prune curve: ", method, " ", amount, " done");
    }
    std::vector<report::Series> series{one};
    if (recover) series.push_back(rec);
    charts += report::svg_line_chart(fmt(method, ": held-out bits per byte against the fraction removed"), series,
                                     "bits per byte", false, "fraction removed");
  }
  write_file_atomic(path_join(opts.out, "curve.json"), j.dump(2) + "\n");
  write_file_atomic(path_join(opts.out, "curve.md"), md);
  const std::string body = fmt("<h1>Pruning curves</h1><p class=\"sub\">", report::html_escape(opts.model), " scored on ",
                               report::html_escape(opts.text),
                               recover ? fmt("; recovery: ", opts.prune.recover_steps, " steps, the control is the unpruned "
                                             "model through the same steps (the curve's point at 0)")
                                       : std::string(),
                               "</p><div class=\"grid2\">", charts, "</div><h2>Table</h2><pre>", report::html_escape(md), "</pre>");
  write_file_atomic(path_join(opts.out, "curve.html"), report::html_page("dsforge pruning curves", body));
  log_info("prune curve: wrote ", path_join(opts.out, "curve.json"), ", curve.md, curve.html");
  return md;
}

}  // namespace dsforge::pipeline
