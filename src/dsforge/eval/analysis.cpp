#include "dsforge/eval/analysis.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "dsforge/core/error.h"
#include "dsforge/data/shards.h"
#include "dsforge/core/io.h"
#include "dsforge/core/run_config.h"
#include "dsforge/eval/metrics_files.h"
#include "dsforge/model/io.h"
#include "dsforge/tokenizer/bpe.h"

namespace dsforge::eval {
namespace {

// A multi-line document or token on one table row: line breaks and tabs shown as \n and \t.
std::string one_line(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\r') out += "\\r";
    else out += c;
  }
  return out;
}

std::string num(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.4g", v);
  return b;
}

struct Point {
  int64_t step;
  double value;
};

// When the learning rate fell below half its peak while the training loss was still falling fast (more
// than 5% over the `w` logging intervals before), the evidence for "the schedule ended, not the model".
std::optional<std::string> schedule_cut(const std::vector<Point>& train, const std::vector<Point>& lrs, size_t w) {
  if (lrs.size() < 3) return std::nullopt;
  const auto peak = std::max_element(lrs.begin(), lrs.end(), [](const Point& a, const Point& b) { return a.value < b.value; });
  if (lrs.back().value > 0.5 * peak->value) return std::nullopt;  // no decay to speak of
  const auto half = std::find_if(peak, lrs.end(), [&](const Point& p) { return p.value <= 0.5 * peak->value; });
  size_t i = 0;  // the training point at the cut
  while (i + 1 < train.size() && train[i + 1].step <= half->step) ++i;
  if (i < w) return std::nullopt;
  const Point a = train[i - w], b = train[i];
  const double drop = (a.value - b.value) / std::max(a.value, 1e-12);
  if (drop <= 0.05) return std::nullopt;
  return fmt("training loss fell ", num(100 * drop), "% over the ", b.step - a.step, " steps before the learning rate dropped below "
             "half its peak at step ", half->step, " (", num(a.value), " -> ", num(b.value), "), then flattened as it decayed to ",
             num(lrs.back().value), " at step ", lrs.back().step);
}

}  // namespace

std::vector<Finding> diagnose_fit(const std::string& metrics_jsonl, const std::string& eval_json) {
  std::ifstream in(metrics_jsonl);
  if (!in) throw IoError(fmt(metrics_jsonl, ": cannot open"));
  std::vector<Point> train, val, gnorm, lrs;
  std::vector<int64_t> rollbacks;
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty()) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw DataError(fmt(metrics_jsonl, ":", line_no, ": not a JSON object (", e.what(), ")"));
    }
    const std::string kind = j.value("kind", "train");
    const int64_t step = j.value("step", int64_t{0});
    auto get = [&](const char* k, std::vector<Point>& to) {
      if (j.contains(k) && j[k].is_number()) to.push_back({step, j[k].get<double>()});
    };
    if (kind == "train") {
      get("loss", train);
      get("grad_norm", gnorm);
      get("lr", lrs);
    } else if (kind == "eval") {
      get("val_loss", val);
    } else if (kind == "rollback") {
      rollbacks.push_back(step);
    }
  }
  if (train.empty()) throw DataError(fmt(metrics_jsonl, ": no training records to diagnose"));
  std::vector<Finding> out;

  // Over-fitting: validation loss rose from its minimum while training loss kept falling.
  if (val.size() >= 3) {
    auto best = std::min_element(val.begin(), val.end(), [](const Point& a, const Point& b) { return a.value < b.value; });
    const Point last = val.back();
    auto train_at = [&](int64_t step) {
      const Point* p = &train.front();
      for (const auto& t : train)
        if (t.step <= step) p = &t;
      return *p;
    };
    const Point tb = train_at(best->step), tl = train.back();
    if (best->step < last.step && last.value > best->value * 1.02 && last.value - best->value > 0.01 && tl.value < tb.value)
      out.push_back({"over-fitting",
                     fmt("validation loss rose from ", num(best->value), " at step ", best->step, " to ", num(last.value),
                         " at step ", last.step, " while training loss fell from ", num(tb.value), " to ", num(tl.value)),
                     fmt("stop near step ", best->step, " (train.early_stopping_patience restores the best weights), or add "
                         "regularisation (train.dropout, train.weight_decay) or data")});
  }
  // Instability: losses far above the best so far (after the first tenth of training), rollbacks,
  // gradient norms far above their median.
  {
    std::vector<std::string> spikes;
    double best = INFINITY;
    const size_t skip = train.size() / 10;
    for (size_t i = 0; i < train.size(); ++i) {
      if (i > skip && train[i].value > 1.3 * best) spikes.push_back(fmt("step ", train[i].step, " loss ", num(train[i].value)));
      best = std::min(best, train[i].value);
    }
    if (!gnorm.empty()) {
      std::vector<double> g;
      for (const auto& p : gnorm) g.push_back(p.value);
      std::nth_element(g.begin(), g.begin() + static_cast<long>(g.size() / 2), g.end());
      const double median = g[g.size() / 2];
      for (const auto& p : gnorm)
        if (p.value > 10 * median) spikes.push_back(fmt("step ", p.step, " grad norm ", num(p.value), " (median ", num(median), ")"));
    }
    for (int64_t s : rollbacks) spikes.push_back(fmt("rollback at step ", s));
    if (!spikes.empty()) {
      std::string ev;
      for (size_t i = 0; i < std::min<size_t>(spikes.size(), 5); ++i) ev += (i ? "; " : "") + spikes[i];
      if (spikes.size() > 5) ev += fmt("; and ", spikes.size() - 5, " more");
      out.push_back({"instability", ev,
                     "lower train.lr or lengthen train.warmup_steps; keep train.grad_clip at 1; train.spike_factor rolls "
                     "back automatically"});
    }
  }
  // Worse than the unigram baseline of eval.json: the model has not learned even word frequencies.
  if (!eval_json.empty() && file_exists(eval_json)) {
    const auto j = nlohmann::json::parse(read_file(eval_json), nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.contains("val_perplexity") && j.contains("unigram_perplexity")) {
      const double ppl = j["val_perplexity"].get<double>(), uni = j["unigram_perplexity"].get<double>();
      if (ppl > uni)
        out.push_back({"under-fitting",
                       fmt("validation perplexity ", num(ppl), " is ", num(ppl / uni), "x higher than the unigram baseline's ",
                           num(uni), " (", eval_json, ")"),
                       "train longer (train.max_steps): the model predicts worse than word frequencies alone"});
    }
  }
  // Under-fitting: the training loss still falls fast over the last fifth of the run.
  bool judged_trend = false;
  if (train.size() >= 5) {
    judged_trend = true;
    const size_t w = std::max<size_t>(1, train.size() / 5);  // logging intervals in the last fifth
    const Point a = train[train.size() - 1 - w], b = train.back();
    const double drop = (a.value - b.value) / std::max(a.value, 1e-12);
    if (drop > 0.05) {
      out.push_back({"under-fitting",
                     fmt("training loss still fell ", num(100 * drop), "% over the last ", b.step - a.step, " steps (",
                         num(a.value), " at step ", a.step, " -> ", num(b.value), " at step ", b.step, ")"),
                     "train longer (train.max_steps) or with a larger model; the curve has not flattened"});
    } else if (const auto cut = schedule_cut(train, lrs, w)) {
      // Flat at the end, but only because the learning rate decayed while the loss was still falling.
      out.push_back({"under-fitting", *cut,
                     "the learning-rate schedule ended while the loss was still falling: train longer (train.max_steps)"});
    }
  }
  if (out.empty() && !judged_trend) {
    out.push_back({"too few points to judge",
                   fmt("only ", train.size(), " logged training point", train.size() == 1 ? "" : "s", " (loss ",
                       num(train.front().value), " -> ", num(train.back().value), ")"),
                   "log more often (train.log_every) or train longer before judging the fit"});
    return out;
  }
  if (out.empty())
    out.push_back({"healthy",
                   fmt("training loss ", num(train.front().value), " -> ", num(train.back().value),
                       val.empty() ? std::string() : fmt(", validation loss ", num(val.back().value), " at the end"),
                       "; no rise in validation loss, no spikes, the curve has flattened"),
                   "nothing to change; more data or a larger model is the way to a lower loss"});
  return out;
}

LmHardCases lm_hard_cases(model::CausalLm m, const std::string& shard_path, int64_t seq_len, int64_t top_k,
                          int64_t min_count, int64_t eot_id,
                          const std::function<std::string(const std::vector<int32_t>&)>& decode) {
  at::NoGradGuard ng;
  m->eval();
  data::TokenShard shard(shard_path);
  const int64_t n = static_cast<int64_t>(shard.size());
  std::vector<int64_t> toks(static_cast<size_t>(n));
  shard.copy(0, static_cast<uint64_t>(n), toks.data());
  std::vector<double> loss_at(static_cast<size_t>(n), NAN);  // loss of predicting token i (i >= 1)
  // The windows evaluate_lm scores: seq_len + 1 tokens, stride seq_len, in file order.
  data::TokenLoader loader(shard_path, seq_len + 1, seq_len, 0, /*shuffle=*/false);
  const auto device = m->parameters().front().device();
  constexpr int64_t kBatch = 8;
  for (int64_t w0 = 0; w0 < loader.windows_per_epoch(); w0 += kBatch) {
    const int64_t rows = std::min(kBatch, loader.windows_per_epoch() - w0);
    at::Tensor x = loader.next_batch(rows);
    at::Tensor logits = m->forward(x.narrow(1, 0, seq_len).to(device)).to(at::kFloat).cpu();
    at::Tensor ce = at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}), x.narrow(1, 1, seq_len).reshape({-1}), {},
                                           at::Reduction::None)
                        .view({rows, seq_len})
                        .contiguous();
    auto acc = ce.accessor<float, 2>();
    for (int64_t b = 0; b < rows; ++b)
      for (int64_t j = 0; j < seq_len; ++j) loss_at[static_cast<size_t>((w0 + b) * seq_len + 1 + j)] = acc[b][j];
  }
  LmHardCases out;
  std::map<int64_t, std::pair<double, int64_t>> per_token;
  struct Doc {
    int64_t start, end;
    double sum = 0;
    int64_t count = 0;
  };
  std::vector<Doc> docs{{0, 0}};
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isnan(loss_at[static_cast<size_t>(i)])) {
      auto& t = per_token[toks[static_cast<size_t>(i)]];
      t.first += loss_at[static_cast<size_t>(i)];
      ++t.second;
      docs.back().sum += loss_at[static_cast<size_t>(i)];
      ++docs.back().count;
    }
    docs.back().end = i + 1;
    if (toks[static_cast<size_t>(i)] == eot_id) docs.push_back({i + 1, i + 1});
  }
  for (const auto& [id, s] : per_token)
    if (s.second >= min_count) out.tokens.push_back({decode({static_cast<int32_t>(id)}), s.first / static_cast<double>(s.second), s.second});
  std::sort(out.tokens.begin(), out.tokens.end(), [](const HardItem& a, const HardItem& b) { return a.mean_loss > b.mean_loss; });
  if (static_cast<int64_t>(out.tokens.size()) > top_k) out.tokens.resize(static_cast<size_t>(top_k));
  std::vector<Doc*> ranked;
  for (auto& d : docs)
    if (d.count >= 4) ranked.push_back(&d);
  std::sort(ranked.begin(), ranked.end(), [](const Doc* a, const Doc* b) {
    return a->sum / static_cast<double>(a->count) > b->sum / static_cast<double>(b->count);
  });
  for (size_t i = 0; i < std::min<size_t>(ranked.size(), static_cast<size_t>(top_k)); ++i) {
    std::vector<int32_t> ids;
    for (int64_t p = ranked[i]->start; p < ranked[i]->end; ++p)
      if (toks[static_cast<size_t>(p)] != eot_id) ids.push_back(static_cast<int32_t>(toks[static_cast<size_t>(p)]));
    std::string text = decode(ids);
    if (text.size() > 160) text = text.substr(0, 157) + "...";
    out.documents.push_back({text, ranked[i]->sum / static_cast<double>(ranked[i]->count), ranked[i]->count});
  }
  return out;
}

namespace {

struct PredRow {
  std::string text, gold, pred;
  double loss;
};

// predictions.tsv as finetune writes it: a header, then text, gold, pred, loss (the last three
// fields split from the right, so a text may hold anything but a newline).
std::vector<PredRow> read_predictions(const std::string& path) {
  const auto lines = read_lines(path);
  if (lines.empty() || lines[0] != "text\tgold\tpred\tloss")
    throw DataError(fmt(path, ":1: expected the header 'text<TAB>gold<TAB>pred<TAB>loss' (a predictions file from dsforge finetune)"));
  std::vector<PredRow> rows;
  for (size_t i = 1; i < lines.size(); ++i) {
    const std::string& l = lines[i];
    if (l.empty()) continue;
    const size_t c = l.rfind('\t'), b = c == std::string::npos || c == 0 ? std::string::npos : l.rfind('\t', c - 1),
                 a = b == std::string::npos || b == 0 ? std::string::npos : l.rfind('\t', b - 1);
    if (a == std::string::npos) throw DataError(fmt(path, ":", i + 1, ": expected text, gold, pred, loss separated by tabs"));
    char* end = nullptr;
    const std::string loss_text = l.substr(c + 1);
    const double loss = std::strtod(loss_text.c_str(), &end);
    if (end == loss_text.c_str() || *end != '\0') throw DataError(fmt(path, ":", i + 1, ": loss '", loss_text, "' is not a number"));
    rows.push_back({l.substr(0, a), l.substr(a + 1, b - a - 1), l.substr(b + 1, c - b - 1), loss});
  }
  if (rows.empty()) throw DataError(fmt(path, ": no predictions"));
  return rows;
}

}  // namespace

ClassificationErrors classification_errors(const std::string& predictions_tsv, int64_t top_k) {
  using Row = PredRow;
  const std::vector<Row> rows = read_predictions(predictions_tsv);
  ClassificationErrors out;
  std::vector<const Row*> by_loss;
  std::map<std::string, int64_t> confused, errors, totals;
  for (const auto& r : rows) {
    by_loss.push_back(&r);
    ++totals[r.gold];
    if (r.gold != r.pred) {
      ++confused[r.gold + " -> " + r.pred];
      ++errors[r.gold];
    }
  }
  std::sort(by_loss.begin(), by_loss.end(), [](const Row* a, const Row* b) { return a->loss > b->loss; });
  for (size_t i = 0; i < std::min<size_t>(by_loss.size(), static_cast<size_t>(top_k)); ++i)
    out.hardest.push_back({by_loss[i]->text, by_loss[i]->gold, by_loss[i]->pred, num(by_loss[i]->loss)});
  out.confused.assign(confused.begin(), confused.end());
  std::sort(out.confused.begin(), out.confused.end(), [](auto& a, auto& b) { return a.second > b.second; });
  if (static_cast<int64_t>(out.confused.size()) > top_k) out.confused.resize(static_cast<size_t>(top_k));
  for (const auto& [label, n] : totals)
    out.per_class_error.emplace_back(label, static_cast<double>(errors[label]) / static_cast<double>(n));
  std::sort(out.per_class_error.begin(), out.per_class_error.end(), [](auto& a, auto& b) { return a.second > b.second; });
  return out;
}

MiningResult mine_hard_examples(const std::string& train_predictions_tsv, const std::string& out_tsv, double fraction,
                                int64_t factor) {
  if (!(fraction > 0 && fraction <= 1)) throw ConfigError(fmt("hard-example fraction ", fraction, " must be in (0, 1]"));
  if (factor < 2) throw ConfigError(fmt("hard-example factor ", factor, " must be >= 2 (1 would change nothing)"));
  const std::vector<PredRow> rows = read_predictions(train_predictions_tsv);
  std::vector<size_t> order(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return rows[a].loss > rows[b].loss; });
  MiningResult m;
  m.examples = static_cast<int64_t>(rows.size());
  m.hard = std::max<int64_t>(1, static_cast<int64_t>(std::llround(fraction * static_cast<double>(rows.size()))));
  std::string out;
  for (const auto& r : rows) out += r.text + "\t" + r.gold + "\n";
  std::map<std::string, int64_t> per_class;
  for (int64_t k = 0; k < m.hard; ++k) {
    const PredRow& r = rows[order[static_cast<size_t>(k)]];
    ++per_class[r.gold];
    m.loss_threshold = r.loss;
    for (int64_t rep = 1; rep < factor; ++rep) out += r.text + "\t" + r.gold + "\n";
  }
  m.written = m.examples + m.hard * (factor - 1);
  m.hard_per_class.assign(per_class.begin(), per_class.end());
  std::sort(m.hard_per_class.begin(), m.hard_per_class.end(), [](auto& a, auto& b) { return a.second > b.second; });
  write_file_atomic(out_tsv, out);
  return m;
}

std::string analysis_json(const std::vector<Finding>& fit, const LmHardCases* lm, const ClassificationErrors* cls,
                          const MiningResult* mining) {
  nlohmann::ordered_json j;
  j["fit"] = nlohmann::ordered_json::array();
  for (const auto& f : fit) j["fit"].push_back({{"kind", f.kind}, {"evidence", f.evidence}, {"suggestion", f.suggestion}});
  auto items = [](const std::vector<HardItem>& v) {
    nlohmann::ordered_json a = nlohmann::ordered_json::array();
    for (const auto& h : v) a.push_back({{"text", h.text}, {"mean_loss", h.mean_loss}, {"count", h.count}});
    return a;
  };
  if (lm) j["lm"] = {{"tokens", items(lm->tokens)}, {"documents", items(lm->documents)}};
  if (cls) {
    nlohmann::ordered_json c;
    c["hardest"] = nlohmann::ordered_json::array();
    for (const auto& h : cls->hardest) c["hardest"].push_back({{"text", h[0]}, {"gold", h[1]}, {"pred", h[2]}, {"loss", h[3]}});
    c["confused"] = nlohmann::ordered_json::array();
    for (const auto& [pair, n] : cls->confused) c["confused"].push_back({{"pair", pair}, {"count", n}});
    c["per_class_error"] = nlohmann::ordered_json::array();
    for (const auto& [label, e] : cls->per_class_error) c["per_class_error"].push_back({{"label", label}, {"error", e}});
    j["classification"] = c;
  }
  if (mining) {
    nlohmann::ordered_json per = nlohmann::ordered_json::object();
    for (const auto& [label, n] : mining->hard_per_class) per[label] = n;
    j["mining"] = {{"examples", mining->examples}, {"hard", mining->hard}, {"written", mining->written},
                   {"loss_threshold", mining->loss_threshold}, {"hard_per_class", per}};
  }
  return j.dump(2);
}

std::string analysis_text(const std::vector<Finding>& fit, const LmHardCases* lm, const ClassificationErrors* cls,
                          const MiningResult* mining) {
  std::string s = fit.empty() ? "" : "Fit diagnosis\n";
  for (const auto& f : fit) s += "  " + f.kind + ": " + f.evidence + "\n    suggestion: " + f.suggestion + "\n";
  if (lm) {
    s += "\nTokens with the highest mean loss (nats)\n";
    for (const auto& t : lm->tokens) s += fmt("  ", num(t.mean_loss), "  x", t.count, "  '", one_line(t.text), "'\n");
    s += "\nDocuments with the highest mean loss (nats per token)\n";
    for (const auto& d : lm->documents) s += fmt("  ", num(d.mean_loss), "  (", d.count, " tokens)  ", one_line(d.text), "\n");
  }
  if (cls) {
    s += "\nHardest examples (highest loss)\n";
    for (const auto& h : cls->hardest) s += "  " + h[3] + "  gold " + h[1] + ", predicted " + h[2] + ": " + h[0].substr(0, 100) + "\n";
    s += "\nMost confused pairs (gold -> predicted)\n";
    for (const auto& [pair, n] : cls->confused) s += fmt("  ", n, "  ", pair, "\n");
    s += "\nError rate per class\n";
    for (const auto& [label, e] : cls->per_class_error) s += "  " + num(e) + "  " + label + "\n";
  }
  if (mining) {
    s += fmt("\nHard-example mining: ", mining->hard, " of ", mining->examples, " training examples (loss >= ",
             num(mining->loss_threshold), ") repeated; ", mining->written, " lines written. Hard examples per class:");
    for (const auto& [label, n] : mining->hard_per_class) s += fmt(" ", label, " ", n, ";");
    s += "\n";
  }
  return s;
}

std::string analyze_run(const std::string& run_dir, int64_t top_k) {
  const std::string metrics = path_join(run_dir, "metrics.jsonl");
  if (!file_exists(metrics)) throw DataError(fmt(run_dir, ": no metrics.jsonl (not a training run folder)"));
  const std::vector<Finding> fit = diagnose_fit(metrics, path_join(run_dir, "eval.json"));
  std::optional<LmHardCases> lm;
  const std::string model_dir = path_join(run_dir, "model"), manifest_path = path_join(run_dir, "shards/manifest.json");
  if (file_exists(path_join(model_dir, "config.json")) && file_exists(manifest_path)) {
    const RunConfig cfg = file_exists(path_join(run_dir, "config.toml"))
                              ? load_saved_run_config(path_join(run_dir, "config.toml"))
                              : RunConfig{};
    const model::TrainingInfo info = model::load_training_info(model_dir);
    const data::Manifest manifest = data::read_manifest(manifest_path);
    const auto tok = tok::BpeTokenizer::load(path_join(model_dir, "tokenizer.json"));
    lm = lm_hard_cases(model::load_pretrained(model_dir), path_join(run_dir, "shards/" + manifest.val.files.at(0)),
                       info.seq_len > 0 ? info.seq_len : cfg.train.seq_len, top_k, /*min_count=*/5, manifest.eot_id,
                       [&](const std::vector<int32_t>& ids) { return tok.decode(ids); });
  }
  write_file_atomic(path_join(run_dir, "analysis.json"), analysis_json(fit, lm ? &*lm : nullptr, nullptr) + "\n");
  return analysis_text(fit, lm ? &*lm : nullptr, nullptr);
}

std::string analyze_finetune(const std::string& dir, int64_t top_k, const std::string& mine_out, double fraction,
                             int64_t factor) {
  const ClassificationErrors cls = classification_errors(path_join(dir, "predictions.tsv"), top_k);
  std::optional<MiningResult> mining;
  if (!mine_out.empty()) mining = mine_hard_examples(path_join(dir, "train_predictions.tsv"), mine_out, fraction, factor);
  write_file_atomic(path_join(dir, "analysis.json"), analysis_json({}, nullptr, &cls, mining ? &*mining : nullptr) + "\n");
  return analysis_text({}, nullptr, &cls, mining ? &*mining : nullptr);
}

}  // namespace dsforge::eval
