#include "dsforge/eval/metrics_files.h"

#include <cmath>
#include <nlohmann/json.hpp>
#include <set>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/eval/mt_metrics.h"
#include "dsforge/eval/text_metrics.h"

namespace dsforge::eval {
namespace {

using nlohmann::ordered_json;

void same_length(const std::vector<std::string>& a, const std::string& pa, const std::vector<std::string>& b,
                 const std::string& pb) {
  if (a.size() != b.size())
    throw DataError(fmt(pb, ": ", b.size(), " lines but ", pa, " has ", a.size(), "; the files must be line-aligned"));
}

MetricOptions options_of(const MetricsRequest& req, const std::string& name) {
  MetricOptions o;
  o.name = name;
  o.tokenize = req.tokenize;
  o.lowercase = req.lowercase;
  o.char_order = req.char_order;
  o.word_order = req.word_order;
  o.beta = req.beta;
  o.case_sensitive = req.case_sensitive;
  return o;
}

ordered_json prf_json(const PRF& s) { return {{"precision", s.precision}, {"recall", s.recall}, {"f1", s.fmeasure}}; }

}  // namespace

std::vector<std::string> read_lines(const std::string& path) {
  if (!file_exists(path)) throw DataError(fmt(path, ": no such file"));
  const std::string text = read_file(path);
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(std::move(line));
    start = end + 1;
  }
  if (lines.empty()) throw DataError(fmt(path, ": empty file (expected one item per line)"));
  return lines;
}

std::string run_metrics(const MetricsRequest& req) {
  ordered_json j;
  if (req.kind == "ter") {
    if (req.hyp.empty() || req.refs.empty()) throw ConfigError("metrics ter: needs --hyp FILE and at least one --ref FILE");
    const auto hyps = read_lines(req.hyp);
    std::vector<std::vector<std::string>> refs;
    for (const auto& r : req.refs) {
      refs.push_back(read_lines(r));
      same_length(hyps, req.hyp, refs.back(), r);
    }
    const auto m = make_metric(options_of(req, "ter"));
    const CorpusResult c = corpus_score(*m, hyps, refs);
    j = {{"name", c.name}, {"score", c.score}, {"signature", c.signature}, {"num_edits", c.stats[0]}, {"ref_length", c.stats[1]}};
    if (req.sentence) j["sentences"] = sentence_scores(*m, hyps, refs);
    return j.dump(2);
  }
  if (req.kind == "paired-bs") {
    if (req.baseline.empty() || req.systems.empty() || req.refs.empty())
      throw ConfigError("metrics paired-bs: needs --baseline FILE, at least one --hyp FILE and at least one --ref FILE");
    const auto base = read_lines(req.baseline);
    std::vector<std::vector<std::string>> refs, systems;
    for (const auto& r : req.refs) {
      refs.push_back(read_lines(r));
      same_length(base, req.baseline, refs.back(), r);
    }
    for (const auto& f : req.systems) {
      systems.push_back(read_lines(f));
      same_length(base, req.baseline, systems.back(), f);
    }
    j["n_bootstrap"] = req.n_bootstrap;
    j["seed"] = req.seed;
    j["baseline"] = req.baseline;
    ordered_json per = ordered_json::object();
    for (const auto& name : req.metrics) {
      const auto m = make_metric(options_of(req, name));
      const PairedBootstrapResult r = paired_bootstrap(*m, base, systems, refs, req.n_bootstrap, req.seed);
      ordered_json sys = ordered_json::array();
      for (size_t s = 0; s < r.systems.size(); ++s)
        sys.push_back({{"system", req.systems[s]}, {"score", r.systems[s].score}, {"mean", r.systems[s].mean},
                       {"ci95", r.systems[s].ci}, {"p_value", r.systems[s].p_value}, {"significant", r.systems[s].p_value < 0.05}});
      per[r.name] = {{"signature", r.signature},
                     {"baseline", {{"score", r.baseline.score}, {"mean", r.baseline.mean}, {"ci95", r.baseline.ci}}},
                     {"systems", sys}};
    }
    j["metrics"] = per;
    return j.dump(2);
  }
  if (req.kind == "bleu" || req.kind == "chrf" || req.kind == "rouge") {
    if (req.hyp.empty() || req.refs.empty()) throw ConfigError(fmt("metrics ", req.kind, ": needs --hyp FILE and at least one --ref FILE"));
    std::vector<std::string> hyps = read_lines(req.hyp);
    std::vector<std::vector<std::string>> refs;
    for (const auto& r : req.refs) {
      refs.push_back(read_lines(r));
      same_length(hyps, req.hyp, refs.back(), r);
    }
    if (req.kind == "bleu" || req.kind == "chrf") {
      const auto m = make_metric(options_of(req, req.kind));
      const CorpusResult c = corpus_score(*m, hyps, refs);
      j = {{"name", c.name}, {"score", c.score}, {"signature", c.signature}};
      if (req.kind == "bleu") {
        const BleuScore s = bleu_from_stats(c.stats, false);
        char verbose[256];
        std::snprintf(verbose, sizeof verbose, "%.1f/%.1f/%.1f/%.1f (BP = %.3f ratio = %.3f hyp_len = %lld ref_len = %lld)",
                      s.precisions[0], s.precisions[1], s.precisions[2], s.precisions[3], s.bp,
                      s.ref_len > 0 ? static_cast<double>(s.sys_len) / static_cast<double>(s.ref_len) : 0.0,
                      static_cast<long long>(s.sys_len), static_cast<long long>(s.ref_len));
        j["verbose_score"] = verbose;
        j["counts"] = s.counts;
        j["totals"] = s.totals;
        j["precisions"] = s.precisions;
        j["bp"] = s.bp;
        j["sys_len"] = s.sys_len;
        j["ref_len"] = s.ref_len;
      }
      if (req.sentence) j["sentences"] = sentence_scores(*m, hyps, refs);
    } else {
      // A sentence break inside an item (for rougeLsum) is written as the two characters \n.
      auto unescape = [](std::vector<std::string>& v) {
        for (auto& s : v)
          for (size_t p = s.find("\\n"); p != std::string::npos; p = s.find("\\n", p + 1)) s.replace(p, 2, "\n");
      };
      unescape(hyps);
      for (auto& r : refs) unescape(r);
      j["stemmer"] = req.stem;
      j["examples"] = hyps.size();
      for (const auto& [k, s] : corpus_rouge(hyps, refs, req.rouge_types, req.stem)) j[k] = prf_json(s);
    }
    return j.dump(2);
  }
  if (req.kind == "classification" || req.kind == "regression") {
    if (req.pred.empty() || req.gold.empty()) throw ConfigError(fmt("metrics ", req.kind, ": needs --pred FILE and --gold FILE"));
    const auto pred = read_lines(req.pred), gold = read_lines(req.gold);
    same_length(gold, req.gold, pred, req.pred);
    if (req.kind == "classification") {
      if (!req.labels.empty()) {
        const std::set<std::string> allowed(req.labels.begin(), req.labels.end());
        for (const auto* v : {&pred, &gold})
          for (size_t i = 0; i < v->size(); ++i)
            if (!allowed.count((*v)[i]))
              throw DataError(fmt(v == &pred ? req.pred : req.gold, ":", i + 1, ": unknown label '", (*v)[i],
                                  "' (--labels allows ", req.labels.size(), " labels)"));
      }
      const ClassificationReport r = classification_report(pred, gold);
      ordered_json per = ordered_json::object();
      for (size_t c = 0; c < r.labels.size(); ++c) {
        per[r.labels[c]] = prf_json(r.per_class[c]);
        per[r.labels[c]]["support"] = r.support[c];
      }
      j = {{"accuracy", r.accuracy}, {"micro", prf_json(r.micro)}, {"macro", prf_json(r.macro)},
           {"weighted", prf_json(r.weighted)}, {"per_class", per}, {"labels", r.labels}, {"confusion_matrix", r.confusion},
           {"examples", gold.size()}};
      return j.dump(2);
    }
    auto numbers = [](const std::vector<std::string>& lines, const std::string& path) {
      std::vector<double> out;
      for (size_t i = 0; i < lines.size(); ++i) {
        size_t used = 0;
        double v = 0;
        try {
          v = std::stod(lines[i], &used);
        } catch (const std::exception&) {
          used = 0;
        }
        while (used < lines[i].size() && std::isspace(static_cast<unsigned char>(lines[i][used]))) ++used;
        if (used == 0 || used != lines[i].size() || !std::isfinite(v))
          throw DataError(fmt(path, ":", i + 1, ": expected a number, got '", lines[i], "'"));
        out.push_back(v);
      }
      return out;
    };
    const RegressionReport r = regression_report(numbers(pred, req.pred), numbers(gold, req.gold));
    j = {{"mse", r.mse}, {"mae", r.mae}, {"rmse", r.rmse}, {"r2", r.r2}, {"examples", r.n}};
    return j.dump(2);
  }
  throw ConfigError(fmt("metrics: unknown metric '", req.kind, "' (bleu, chrf, ter, rouge, paired-bs, classification, regression)"));
}

}  // namespace dsforge::eval
