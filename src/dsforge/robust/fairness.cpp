#include "dsforge/robust/fairness.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <map>
#include <numeric>
#include <set>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/splitmix.h"
#include "dsforge/core/text.h"
#include "dsforge/data/counterfactual.h"
#include "dsforge/embed/vectors.h"
#include "dsforge/model/io.h"
#include "dsforge/report/html_report.h"
#include "dsforge/tasks/text_classifier.h"
#include "dsforge/tokenizer/bpe.h"

namespace dsforge::robust {

// ---------------------------------------------------------------- WEAT

std::vector<WeatTest> read_weat_tests(const std::string& path) {
  const std::string text = read_file(path);
  std::vector<WeatTest> tests;
  for_each_line(text, [&](const std::string& line, size_t line_no) {
    if (line.empty() || line[0] == '#') return;
    if (line[0] == '[') {
      const size_t close = line.find(']');
      if (close == std::string::npos) throw DataError(fmt(path, ":", line_no, ": expected '[name] description'"));
      WeatTest t;
      t.name = line.substr(1, close - 1);
      t.description = line.substr(std::min(line.size(), close + 2));
      tests.push_back(std::move(t));
      return;
    }
    const size_t colon = line.find(':');
    if (tests.empty() || colon == std::string::npos || line.size() < 3 || line[1] != ' ' || std::string("XYAB").find(line[0]) == std::string::npos)
      throw DataError(fmt(path, ":", line_no, ": expected 'X|Y|A|B label: words' inside a [test] block"));
    WordSet s{line.substr(2, colon - 2), split_whitespace(line.substr(colon + 1))};
    if (s.words.empty()) throw DataError(fmt(path, ":", line_no, ": set '", s.label, "' has no words"));
    WeatTest& t = tests.back();
    (line[0] == 'X' ? t.x : line[0] == 'Y' ? t.y : line[0] == 'A' ? t.a : t.b) = std::move(s);
  });
  for (const auto& t : tests)
    if (t.x.words.empty() || t.y.words.empty() || t.a.words.empty() || t.b.words.empty())
      throw DataError(fmt(path, ": test [", t.name, "] needs all four sets X, Y, A and B"));
  if (tests.empty()) throw DataError(fmt(path, ": no [test] blocks"));
  return tests;
}

namespace {

double cosine(const std::vector<float>& u, const std::vector<float>& v) {
  double uv = 0, uu = 0, vv = 0;
  for (size_t i = 0; i < u.size(); ++i) uv += double(u[i]) * v[i], uu += double(u[i]) * u[i], vv += double(v[i]) * v[i];
  return uu > 0 && vv > 0 ? uv / std::sqrt(uu * vv) : 0.0;
}

std::vector<std::vector<float>> lookup_all(const WordSet& s, const WordVectorLookup& vectors, const std::string& test,
                                           std::vector<std::string>& missing) {
  std::vector<std::vector<float>> out;
  for (const auto& w : s.words) {
    auto v = vectors(w);
    if (v) out.push_back(std::move(*v));
    else missing.push_back(w);
  }
  if (out.empty()) throw DataError(fmt("WEAT [", test, "]: no word of set '", s.label, "' is in the vocabulary (", s.words.size(), " tried)"));
  return out;
}

// Calls fn(mask) for every way of choosing k of n (mask[i] = in the first set), or stops when fn returns false.
void for_each_split(int64_t n, int64_t k, const std::function<void(const std::vector<char>&)>& fn) {
  std::vector<int64_t> idx(static_cast<size_t>(k));
  std::iota(idx.begin(), idx.end(), 0);
  std::vector<char> mask(static_cast<size_t>(n));
  while (true) {
    std::fill(mask.begin(), mask.end(), 0);
    for (int64_t i : idx) mask[static_cast<size_t>(i)] = 1;
    fn(mask);
    int64_t i = k - 1;
    while (i >= 0 && idx[static_cast<size_t>(i)] == n - k + i) --i;
    if (i < 0) return;
    ++idx[static_cast<size_t>(i)];
    for (int64_t j = i + 1; j < k; ++j) idx[static_cast<size_t>(j)] = idx[static_cast<size_t>(j - 1)] + 1;
  }
}

double binomial(int64_t n, int64_t k) {
  double r = 1;
  for (int64_t i = 1; i <= k; ++i) r = r * static_cast<double>(n - k + i) / static_cast<double>(i);
  return r;
}

}  // namespace

double weat_association(const std::vector<float>& w, const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b) {
  double sa = 0, sb = 0;
  for (const auto& v : a) sa += cosine(w, v);
  for (const auto& v : b) sb += cosine(w, v);
  return sa / static_cast<double>(a.size()) - sb / static_cast<double>(b.size());
}

WeatResult run_weat(const WeatTest& t, const WordVectorLookup& vectors, int64_t permutations, uint64_t seed, int64_t exact_limit) {
  WeatResult r;
  r.name = t.name;
  r.description = t.description;
  const auto X = lookup_all(t.x, vectors, t.name, r.missing), Y = lookup_all(t.y, vectors, t.name, r.missing);
  const auto A = lookup_all(t.a, vectors, t.name, r.missing), B = lookup_all(t.b, vectors, t.name, r.missing);
  r.x = static_cast<int64_t>(X.size()), r.y = static_cast<int64_t>(Y.size()), r.a = static_cast<int64_t>(A.size()), r.b = static_cast<int64_t>(B.size());
  if (r.x + r.y < 3) throw DataError(fmt("WEAT [", t.name, "]: only ", r.x + r.y, " target words in the vocabulary"));
  std::vector<double> s;  // s(w, A, B) for X then Y
  for (const auto& w : X) s.push_back(weat_association(w, A, B));
  for (const auto& w : Y) s.push_back(weat_association(w, A, B));
  const auto n = static_cast<int64_t>(s.size());
  const double total = std::accumulate(s.begin(), s.end(), 0.0);
  const double sum_x = std::accumulate(s.begin(), s.begin() + r.x, 0.0);
  const double mean_x = sum_x / static_cast<double>(r.x), mean_y = (total - sum_x) / static_cast<double>(r.y);
  const double mean = total / static_cast<double>(n);
  double var = 0;
  for (double v : s) var += (v - mean) * (v - mean);
  const double sd = std::sqrt(var / static_cast<double>(n - 1));
  r.effect_size = sd > 0 ? (mean_x - mean_y) / sd : 0.0;
  // S(X_i, Y_i) = sum over X_i - sum over Y_i = 2 sum over X_i - total.
  r.statistic = 2 * sum_x - total;
  int64_t above = 0;
  if (binomial(n, r.x) <= static_cast<double>(exact_limit)) {
    r.exact = true;
    for_each_split(n, r.x, [&](const std::vector<char>& in_x) {
      double sx = 0;
      for (size_t i = 0; i < in_x.size(); ++i) sx += in_x[i] ? s[i] : 0.0;
      above += 2 * sx - total > r.statistic;
      ++r.permutations;
    });
  } else {
    SplitMix64 rng(seed);
    std::vector<int64_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    for (int64_t p = 0; p < permutations; ++p) {
      for (int64_t i = 0; i < r.x; ++i)  // a partial Fisher-Yates: the first |X| of a random order
        std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(i + static_cast<int64_t>(rng.below(static_cast<uint64_t>(n - i))))]);
      double sx = 0;
      for (int64_t i = 0; i < r.x; ++i) sx += s[static_cast<size_t>(order[static_cast<size_t>(i)])];
      above += 2 * sx - total > r.statistic;
    }
    r.permutations = permutations;
  }
  r.p_value = static_cast<double>(above) / static_cast<double>(std::max<int64_t>(r.permutations, 1));
  return r;
}

WordVectorLookup lm_embedding_lookup(const std::string& model_dir, bool single_token) {
  model::CausalLm m = model::load_pretrained(model_dir);
  auto tok = std::make_shared<tok::BpeTokenizer>(tok::BpeTokenizer::load(path_join(model_dir, "tokenizer.json")));
  at::NoGradGuard ng;
  const at::Tensor table = m->embed(at::arange(m->config().vocab_size, at::kLong).unsqueeze(0)).squeeze(0).to(at::kFloat).contiguous();
  return [table, tok, single_token](const std::string& word) -> std::optional<std::vector<float>> {
    const auto ids = tok->encode(" " + word, false);
    if (ids.empty() || (single_token && ids.size() != 1)) return std::nullopt;
    std::vector<int64_t> rows(ids.begin(), ids.end());
    const at::Tensor v = table.index_select(0, at::tensor(rows, at::kLong)).mean(0).contiguous();
    return std::vector<float>(v.data_ptr<float>(), v.data_ptr<float>() + v.numel());
  };
}

WordVectorLookup vector_file_lookup(const std::string& path) {
  auto v = std::make_shared<embed::WordVectors>(embed::load_vectors(path));
  return [v](const std::string& word) -> std::optional<std::vector<float>> {
    int64_t i = v->find(word);
    if (i < 0) i = v->find(lower_ascii(word));
    if (i < 0 && !word.empty()) {  // "einstein" in the lists, "Einstein" in a cased vocabulary
      std::string cap = lower_ascii(word);
      cap[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(cap[0])));
      i = v->find(cap);
    }
    if (i < 0) return std::nullopt;
    return std::vector<float>(v->row(static_cast<size_t>(i)), v->row(static_cast<size_t>(i)) + v->dim);
  };
}

// ---------------------------------------------------------------- classifiers

CounterfactualResult counterfactual_fairness(const tasks::TextClassifier& c, const std::vector<std::string>& texts,
                                             const data::TermSwapper& swapper) {
  CounterfactualResult r;
  r.examples = static_cast<int64_t>(texts.size());
  std::vector<std::string> orig, swapped;
  for (const auto& t : texts)
    if (swapper.mentions(t) > 0) orig.push_back(t), swapped.push_back(swapper.swap(t));
  r.mentioning = static_cast<int64_t>(orig.size());
  if (orig.empty()) return r;
  const at::Tensor pa = c.probabilities(orig), pb = c.probabilities(swapped);
  const at::Tensor tv = ((pa - pb).abs().sum(-1) * 0.5).to(at::kDouble).contiguous();
  const at::Tensor flip = (pa.argmax(-1) != pb.argmax(-1)).to(at::kLong).contiguous();
  int64_t flips = 0;
  std::vector<CounterfactualResult::Pair> all;
  for (size_t i = 0; i < orig.size(); ++i) {
    const double gap = tv.data_ptr<double>()[i];
    r.mean_gap += gap;
    r.max_gap = std::max(r.max_gap, gap);
    flips += flip.data_ptr<int64_t>()[i];
    all.push_back({orig[i], swapped[i], gap});
  }
  r.mean_gap /= static_cast<double>(orig.size());
  r.flip_rate = static_cast<double>(flips) / static_cast<double>(orig.size());
  std::stable_sort(all.begin(), all.end(), [](const auto& x, const auto& y) { return x.gap > y.gap; });
  all.resize(std::min<size_t>(all.size(), 10));
  r.largest = std::move(all);
  return r;
}

std::vector<GroupExample> read_group_examples(const std::string& path) {
  const std::string text = read_file(path);
  std::vector<GroupExample> out;
  for_each_line(text, [&](const std::string& line, size_t line_no) {
    if (line.empty()) return;
    const size_t t2 = line.rfind('\t');
    const size_t t1 = t2 == std::string::npos || t2 == 0 ? std::string::npos : line.rfind('\t', t2 - 1);
    if (t1 == std::string::npos) throw DataError(fmt(path, ":", line_no, ": expected 'text<TAB>label<TAB>group'"));
    GroupExample e{line.substr(0, t1), line.substr(t1 + 1, t2 - t1 - 1), line.substr(t2 + 1)};
    if (line_no == 1 && e.label == "label") return;
    if (e.label.empty() || e.group.empty()) throw DataError(fmt(path, ":", line_no, ": empty label or group"));
    out.push_back(std::move(e));
  });
  if (out.empty()) throw DataError(fmt(path, ": no examples"));
  return out;
}

GroupFairness group_fairness(const std::vector<std::string>& predicted, const std::vector<GroupExample>& data, const std::string& positive) {
  if (predicted.size() != data.size()) throw DataError("group fairness: predictions and examples differ in number");
  GroupFairness g;
  g.positive = positive;
  struct Count {
    int64_t n = 0, pred_pos = 0, pos = 0, tp = 0, neg = 0, fp = 0, correct = 0;
  };
  std::map<std::string, Count> counts;
  for (size_t i = 0; i < data.size(); ++i) {
    Count& c = counts[data[i].group];
    const bool p = predicted[i] == positive, y = data[i].label == positive;
    ++c.n;
    c.pred_pos += p;
    c.pos += y, c.tp += y && p;
    c.neg += !y, c.fp += !y && p;
    c.correct += predicted[i] == data[i].label;
  }
  auto ratio = [](int64_t a, int64_t b) { return b > 0 ? static_cast<double>(a) / static_cast<double>(b) : 0.0; };
  double lo_pr = 1, hi_pr = 0, lo_tpr = 1, hi_tpr = 0, lo_fpr = 1, hi_fpr = 0;
  for (const auto& [name, c] : counts) {
    GroupFairness::Group gr{name, c.n, ratio(c.pred_pos, c.n), ratio(c.tp, c.pos), ratio(c.fp, c.neg), ratio(c.correct, c.n)};
    lo_pr = std::min(lo_pr, gr.positive_rate), hi_pr = std::max(hi_pr, gr.positive_rate);
    if (c.pos > 0) lo_tpr = std::min(lo_tpr, gr.tpr), hi_tpr = std::max(hi_tpr, gr.tpr);
    if (c.neg > 0) lo_fpr = std::min(lo_fpr, gr.fpr), hi_fpr = std::max(hi_fpr, gr.fpr);
    g.groups.push_back(gr);
  }
  g.demographic_parity_difference = hi_pr - lo_pr;
  g.equalized_odds_difference = std::max(std::max(0.0, hi_tpr - lo_tpr), std::max(0.0, hi_fpr - lo_fpr));
  return g;
}

// ---------------------------------------------------------------- language model

LmProbe read_lm_probe(const std::string& path) {
  const std::string text = read_file(path);
  LmProbe p;
  for_each_line(text, [&](const std::string& line, size_t line_no) {
    if (line.empty() || line[0] == '#') return;
    if (line[0] != '=') {
      if (line.find("{}") == std::string::npos) throw DataError(fmt(path, ":", line_no, ": template without a {} slot"));
      p.templates.push_back(line);
      return;
    }
    const size_t colon = line.find(':');
    const auto name = split_whitespace(line.substr(1, colon == std::string::npos ? std::string::npos : colon - 1));
    if (colon == std::string::npos || name.size() != 1) throw DataError(fmt(path, ":", line_no, ": expected '= group: term term ...'"));
    LmProbe::Group g{name[0], split_whitespace(line.substr(colon + 1)), 0};
    if (g.terms.empty()) throw DataError(fmt(path, ":", line_no, ": group '", g.name, "' has no terms"));
    p.groups.push_back(std::move(g));
  });
  if (p.groups.size() < 2) throw DataError(fmt(path, ": the probe needs two or more '= group: terms' lines"));
  if (p.templates.empty()) throw DataError(fmt(path, ": no templates"));
  return p;
}

void run_lm_probe(const std::string& model_dir, LmProbe& probe) {
  model::CausalLm m = model::load_pretrained(model_dir);
  m->eval();
  const auto tok = tok::BpeTokenizer::load(path_join(model_dir, "tokenizer.json"));
  const int64_t bos = std::max<int64_t>(tok.eot_id(), 0);
  at::NoGradGuard ng;
  // Mean negative log-likelihood per token of a sentence, the first token predicted from the
  // end-of-text token (how documents start in training).
  auto log_ppl = [&](const std::string& sentence) {
    std::vector<int64_t> ids = {bos};
    for (int32_t t : tok.encode(sentence, false)) ids.push_back(t);
    const at::Tensor x = at::tensor(ids, at::kLong).unsqueeze(0);
    const at::Tensor logp = at::log_softmax(m->forward(x.slice(1, 0, -1)).to(at::kFloat), -1);
    return -logp.gather(-1, x.slice(1, 1).unsqueeze(-1)).mean().item<double>();
  };
  probe.template_group_log_ppl.assign(probe.templates.size(), std::vector<double>(probe.groups.size(), 0.0));
  for (size_t t = 0; t < probe.templates.size(); ++t) {
    const std::string& tpl = probe.templates[t];
    const size_t slot = tpl.find("{}");
    for (size_t g = 0; g < probe.groups.size(); ++g) {
      double sum = 0;
      for (const auto& term : probe.groups[g].terms) sum += log_ppl(tpl.substr(0, slot) + term + tpl.substr(slot + 2));
      probe.template_group_log_ppl[t][g] = sum / static_cast<double>(probe.groups[g].terms.size());
    }
  }
  double lo = INFINITY, hi = -INFINITY;
  for (size_t g = 0; g < probe.groups.size(); ++g) {
    double sum = 0;
    for (const auto& row : probe.template_group_log_ppl) sum += row[g];
    probe.groups[g].mean_log_perplexity = sum / static_cast<double>(probe.templates.size());
    if (probe.groups[g].mean_log_perplexity < lo) lo = probe.groups[g].mean_log_perplexity, probe.least = probe.groups[g].name;
    if (probe.groups[g].mean_log_perplexity > hi) hi = probe.groups[g].mean_log_perplexity, probe.most = probe.groups[g].name;
  }
  probe.gap = hi - lo;
  probe.ratio = std::exp(probe.gap);
}

// ---------------------------------------------------------------- outputs

nlohmann::ordered_json weat_json(const std::vector<WeatResult>& rs) {
  nlohmann::ordered_json j = nlohmann::ordered_json::array();
  for (const auto& r : rs)
    j.push_back({{"test", r.name},
                 {"description", r.description},
                 {"effect_size", r.effect_size},
                 {"p_value", r.p_value},
                 {"statistic", r.statistic},
                 {"exact", r.exact},
                 {"permutations", r.permutations},
                 {"words", {{"X", r.x}, {"Y", r.y}, {"A", r.a}, {"B", r.b}}},
                 {"missing", r.missing}});
  return j;
}

nlohmann::ordered_json counterfactual_json(const CounterfactualResult& r) {
  nlohmann::ordered_json largest = nlohmann::ordered_json::array();
  for (const auto& p : r.largest) largest.push_back({{"text", p.text}, {"counterfactual", p.counterfactual}, {"gap", p.gap}});
  return {{"examples", r.examples}, {"mentioning_identity_terms", r.mentioning}, {"mean_gap", r.mean_gap},
          {"max_gap", r.max_gap},   {"flip_rate", r.flip_rate},                  {"largest_gaps", largest}};
}

nlohmann::ordered_json group_json(const GroupFairness& g) {
  nlohmann::ordered_json groups = nlohmann::ordered_json::array();
  for (const auto& gr : g.groups)
    groups.push_back({{"group", gr.name}, {"examples", gr.n}, {"positive_rate", gr.positive_rate}, {"tpr", gr.tpr}, {"fpr", gr.fpr},
                      {"accuracy", gr.accuracy}});
  return {{"positive", g.positive},
          {"demographic_parity_difference", g.demographic_parity_difference},
          {"equalized_odds_difference", g.equalized_odds_difference},
          {"groups", groups}};
}

nlohmann::ordered_json lm_probe_json(const LmProbe& p) {
  nlohmann::ordered_json groups = nlohmann::ordered_json::array();
  for (const auto& g : p.groups) groups.push_back({{"group", g.name}, {"terms", g.terms}, {"mean_log_perplexity", g.mean_log_perplexity}});
  nlohmann::ordered_json per_template = nlohmann::ordered_json::array();
  for (size_t t = 0; t < p.templates.size(); ++t) per_template.push_back({{"template", p.templates[t]}, {"log_perplexity", p.template_group_log_ppl[t]}});
  return {{"groups", groups}, {"log_perplexity_gap", p.gap}, {"perplexity_ratio", p.ratio}, {"most_surprising", p.most},
          {"least_surprising", p.least}, {"templates", per_template}};
}

namespace {
std::string num(double v, const char* f = "%.4f") {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}
}  // namespace

std::string weat_html(const std::vector<WeatResult>& rs) {
  std::string h = "<h2>WEAT (Caliskan et al. 2017)</h2>\n<table><tr><th>test</th><th>targets / attributes</th><th>effect size d</th>"
                  "<th>p-value</th><th>words used</th><th>missing</th></tr>\n";
  for (const auto& r : rs)
    h += fmt("<tr><td>", report::html_escape(r.name), "</td><td>", report::html_escape(r.description), "</td><td>", num(r.effect_size, "%.3f"),
             "</td><td>", num(r.p_value, "%.4g"), r.exact ? " (exact)" : "", "</td><td>", r.x, "/", r.y, "/", r.a, "/", r.b, "</td><td>",
             report::html_escape(fmt(r.missing.size(), r.missing.empty() ? "" : ": ")), report::html_escape([&] {
               std::string s;
               for (size_t i = 0; i < r.missing.size() && i < 12; ++i) s += (i ? " " : "") + r.missing[i];
               return s;
             }()),
             "</td></tr>\n");
  h += "<p>d &gt; 0: X is closer to A than Y is (e.g. flowers to pleasant). |d| of 0.2, 0.5, 0.8: small, medium, large. "
       "p: one-sided permutation test over splits of X &cup; Y.</p>\n";
  return h;
}

std::string counterfactual_html(const std::vector<std::pair<std::string, CounterfactualResult>>& rows) {
  std::string h = "<h2>Counterfactual token fairness (Garg et al. 2019)</h2>\n<table><tr><th>model</th><th>texts with identity terms</th>"
                  "<th>mean gap</th><th>max gap</th><th>flipped predictions</th></tr>\n";
  for (const auto& [name, r] : rows)
    h += fmt("<tr><td>", report::html_escape(name), "</td><td>", r.mentioning, " of ", r.examples, "</td><td>", num(r.mean_gap), "</td><td>",
             num(r.max_gap), "</td><td>", num(100 * r.flip_rate, "%.2f%%"), "</td></tr>\n");
  h += "</table>\n<p>Gap: the total-variation distance between the class probabilities of a text and of its counterfactual.</p>\n";
  for (const auto& [name, r] : rows) {
    if (r.largest.empty()) continue;
    h += fmt("<h3>", report::html_escape(name), ": largest gaps</h3>\n<table><tr><th>text</th><th>counterfactual</th><th>gap</th></tr>\n");
    for (const auto& p : r.largest)
      h += fmt("<tr><td>", report::html_escape(p.text), "</td><td>", report::html_escape(p.counterfactual), "</td><td>", num(p.gap), "</td></tr>\n");
    h += "</table>\n";
  }
  return h;
}

std::string group_html(const GroupFairness& g) {
  std::string h = fmt("<h2>Group fairness (positive class '", report::html_escape(g.positive), "')</h2>\n<p>Demographic parity difference ",
                      num(g.demographic_parity_difference), ", equalised-odds difference ", num(g.equalized_odds_difference),
                      ".</p>\n<table><tr><th>group</th><th>examples</th><th>positive rate</th><th>TPR</th><th>FPR</th><th>accuracy</th></tr>\n");
  for (const auto& gr : g.groups)
    h += fmt("<tr><td>", report::html_escape(gr.name), "</td><td>", gr.n, "</td><td>", num(gr.positive_rate), "</td><td>", num(gr.tpr), "</td><td>",
             num(gr.fpr), "</td><td>", num(gr.accuracy), "</td></tr>\n");
  return h + "</table>\n";
}

std::string lm_probe_html(const LmProbe& p) {
  std::string h = fmt("<h2>Language-model probe</h2>\n<p>Mean log-perplexity gap ", num(p.gap), " (perplexity ratio ", num(p.ratio),
                      "): '", report::html_escape(p.most), "' sentences are the most surprising, '", report::html_escape(p.least),
                      "' the least.</p>\n<table><tr><th>template</th>");
  for (const auto& g : p.groups) h += "<th>" + report::html_escape(g.name) + "</th>";
  h += "</tr>\n";
  for (size_t t = 0; t < p.templates.size(); ++t) {
    h += "<tr><td>" + report::html_escape(p.templates[t]) + "</td>";
    for (double v : p.template_group_log_ppl[t]) h += "<td>" + num(v) + "</td>";
    h += "</tr>\n";
  }
  h += "<tr><th>mean</th>";
  for (const auto& g : p.groups) h += "<th>" + num(g.mean_log_perplexity) + "</th>";
  return h + "</tr>\n</table>\n";
}

}  // namespace dsforge::robust
