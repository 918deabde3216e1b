#include "dsforge/eval/text_metrics.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>
#include <unordered_map>

#include "dsforge/core/error.h"
#include "dsforge/core/text.h"
#include "dsforge/eval/mt_metrics.h"

namespace dsforge::eval {
namespace {

using Counts = std::unordered_map<std::string, int64_t>;

Counts ngrams(const std::vector<std::string>& toks, size_t n) {
  Counts c;
  for (size_t i = 0; i + n <= toks.size(); ++i) {
    std::string key = toks[i];
    for (size_t k = 1; k < n; ++k) key += '\x01' + toks[i + k];
    ++c[key];
  }
  return c;
}

// Totals of two n-gram multisets and their clipped overlap (sum of min counts).
struct Overlap {
  int64_t hyp = 0, ref = 0, match = 0;
};
Overlap overlap(const Counts& hyp, const Counts& ref) {
  Overlap o;
  for (const auto& [g, c] : hyp) {
    o.hyp += c;
    auto it = ref.find(g);
    if (it != ref.end()) o.match += std::min(c, it->second);
  }
  for (const auto& [g, c] : ref) o.ref += c;
  return o;
}

double fmeasure(double p, double r) { return p + r > 0 ? 2 * p * r / (p + r) : 0.0; }

}  // namespace

void check_reference_streams(const std::vector<std::string>& hyps, const std::vector<std::vector<std::string>>& refs) {
  if (refs.empty()) throw DataError("metrics: no reference stream");
  for (size_t r = 0; r < refs.size(); ++r)
    if (refs[r].size() != hyps.size())
      throw DataError(fmt("metrics: reference stream ", r + 1, " has ", refs[r].size(), " lines but there are ",
                          hyps.size(), " hypotheses"));
}

// ---------------------------------------------------------------- BLEU, chrF (mt_metrics.cpp holds the definitions)
std::string tokenize_13a(const std::string& line) { return mt_tokenize(line, "13a"); }

namespace {
BleuScore bleu_with(const std::vector<std::string>& hyps, const std::vector<std::vector<std::string>>& refs, bool sentence) {
  MetricOptions o;
  o.effective_order = sentence;
  const auto m = make_metric(o);
  const CorpusResult c = corpus_score(*m, hyps, refs);
  BleuScore s = bleu_from_stats(c.stats, sentence);
  s.signature = c.signature;
  return s;
}
}  // namespace

BleuScore corpus_bleu(const std::vector<std::string>& hyps, const std::vector<std::vector<std::string>>& refs) {
  check_reference_streams(hyps, refs);
  return bleu_with(hyps, refs, false);
}

BleuScore sentence_bleu(const std::string& hyp, const std::vector<std::string>& refs) {
  std::vector<std::vector<std::string>> streams;
  for (const auto& r : refs) streams.push_back({r});
  return bleu_with({hyp}, streams, true);
}

ChrfScore corpus_chrf(const std::vector<std::string>& hyps, const std::vector<std::vector<std::string>>& refs) {
  check_reference_streams(hyps, refs);
  MetricOptions o;
  o.name = "chrf";
  const CorpusResult c = corpus_score(*make_metric(o), hyps, refs);
  return {c.score, c.signature};
}

// ---------------------------------------------------------------- ROUGE
std::vector<std::string> rouge_tokenize(const std::string& text, bool stem) {
  std::string t;
  t.reserve(text.size());
  for (char ch : text) {
    const char c = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    t.push_back((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ? c : ' ');
  }
  std::vector<std::string> out = split_whitespace(t);
  if (stem)
    for (auto& w : out)
      if (w.size() > 3) w = porter_stem(w);
  out.erase(std::remove_if(out.begin(), out.end(), [](const std::string& w) { return w.empty(); }), out.end());
  return out;
}

namespace {
std::vector<std::vector<int>> lcs_table(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  std::vector<std::vector<int>> t(a.size() + 1, std::vector<int>(b.size() + 1, 0));
  for (size_t i = 1; i <= a.size(); ++i)
    for (size_t j = 1; j <= b.size(); ++j)
      t[i][j] = a[i - 1] == b[j - 1] ? t[i - 1][j - 1] + 1 : std::max(t[i - 1][j], t[i][j - 1]);
  return t;
}

// Indices into `ref` of one LCS with `can`, backtracking as rouge-score does.
std::vector<size_t> lcs_indices(const std::vector<std::string>& ref, const std::vector<std::string>& can) {
  const auto t = lcs_table(ref, can);
  std::vector<size_t> out;
  size_t i = ref.size(), j = can.size();
  while (i > 0 && j > 0) {
    if (ref[i - 1] == can[j - 1]) {
      out.push_back(i - 1);
      --i;
      --j;
    } else if (t[i][j - 1] > t[i - 1][j]) {
      --j;
    } else {
      --i;
    }
  }
  std::reverse(out.begin(), out.end());
  return out;
}

std::vector<std::string> split_sentences(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    if (end > start) out.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

PRF prf(double hits, double n_pred, double n_target) {
  PRF s;
  s.precision = n_pred > 0 ? hits / n_pred : 0.0;
  s.recall = n_target > 0 ? hits / n_target : 0.0;
  s.fmeasure = fmeasure(s.precision, s.recall);
  return s;
}
}  // namespace

PRF rouge(const std::string& kind, const std::string& target, const std::string& prediction, bool stem) {
  if (kind == "rougeLsum") {
    std::vector<std::vector<std::string>> ts, ps;
    for (const auto& s : split_sentences(target)) ts.push_back(rouge_tokenize(s, stem));
    for (const auto& s : split_sentences(prediction)) ps.push_back(rouge_tokenize(s, stem));
    int64_t m = 0, n = 0;
    Counts tc, pc;
    for (const auto& s : ts) {
      m += static_cast<int64_t>(s.size());
      for (const auto& w : s) ++tc[w];
    }
    for (const auto& s : ps) {
      n += static_cast<int64_t>(s.size());
      for (const auto& w : s) ++pc[w];
    }
    if (m == 0 || n == 0) return {};
    int64_t hits = 0;
    for (const auto& r : ts) {
      std::set<size_t> uni;  // union of the LCS positions of this reference sentence with every candidate sentence
      for (const auto& c : ps)
        for (size_t i : lcs_indices(r, c)) uni.insert(i);
      for (size_t i : uni) {
        const std::string& w = r[i];
        if (pc[w] > 0 && tc[w] > 0) {
          ++hits;
          --pc[w];
          --tc[w];
        }
      }
    }
    return prf(static_cast<double>(hits), static_cast<double>(n), static_cast<double>(m));
  }
  const auto t = rouge_tokenize(target, stem), p = rouge_tokenize(prediction, stem);
  if (kind == "rougeL") {
    if (t.empty() || p.empty()) return {};
    const double lcs = lcs_table(t, p)[t.size()][p.size()];
    return prf(lcs, static_cast<double>(p.size()), static_cast<double>(t.size()));
  }
  if (kind.size() == 6 && kind.rfind("rouge", 0) == 0 && kind[5] >= '1' && kind[5] <= '9') {
    const size_t n = static_cast<size_t>(kind[5] - '0');
    const Overlap o = overlap(ngrams(p, n), ngrams(t, n));
    PRF s;
    s.precision = static_cast<double>(o.match) / static_cast<double>(std::max<int64_t>(o.hyp, 1));
    s.recall = static_cast<double>(o.match) / static_cast<double>(std::max<int64_t>(o.ref, 1));
    s.fmeasure = fmeasure(s.precision, s.recall);
    return s;
  }
  throw ConfigError(fmt("rouge: unknown kind '", kind, "' (expected rouge1..rouge9, rougeL, rougeLsum)"));
}

std::map<std::string, PRF> corpus_rouge(const std::vector<std::string>& hyps, const std::vector<std::vector<std::string>>& refs,
                                        const std::vector<std::string>& kinds, bool stem) {
  check_reference_streams(hyps, refs);
  std::map<std::string, PRF> out;
  for (const auto& kind : kinds) {
    PRF sum;
    for (size_t i = 0; i < hyps.size(); ++i) {
      PRF best;
      bool first = true;
      for (const auto& stream : refs) {
        PRF s = rouge(kind, stream[i], hyps[i], stem);
        if (first || s.fmeasure > best.fmeasure) best = s;
        first = false;
      }
      sum.precision += best.precision;
      sum.recall += best.recall;
      sum.fmeasure += best.fmeasure;
    }
    const double n = static_cast<double>(std::max<size_t>(hyps.size(), 1));
    out[kind] = {sum.precision / n, sum.recall / n, sum.fmeasure / n};
  }
  return out;
}

// ---------------------------------------------------------------- classification, regression
std::vector<int64_t> highest_first(const std::vector<double>& values, int64_t k) {
  std::vector<int64_t> order(values.size());
  std::iota(order.begin(), order.end(), int64_t{0});
  const auto top = std::clamp<int64_t>(k, 0, static_cast<int64_t>(values.size()));
  std::partial_sort(order.begin(), order.begin() + top, order.end(), [&](int64_t a, int64_t b) {
    const double va = values[static_cast<size_t>(a)], vb = values[static_cast<size_t>(b)];
    return va != vb ? va > vb : a < b;
  });
  order.resize(static_cast<size_t>(top));
  return order;
}

ClassificationReport classification_report(const std::vector<std::string>& pred, const std::vector<std::string>& gold) {
  if (pred.size() != gold.size())
    throw DataError(fmt("classification: ", pred.size(), " predictions but ", gold.size(), " gold labels"));
  if (gold.empty()) throw DataError("classification: no examples");
  ClassificationReport r;
  std::set<std::string> labels(gold.begin(), gold.end());
  labels.insert(pred.begin(), pred.end());
  r.labels.assign(labels.begin(), labels.end());
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < r.labels.size(); ++i) index[r.labels[i]] = i;
  const size_t L = r.labels.size();
  r.confusion.assign(L, std::vector<int64_t>(L, 0));
  int64_t correct = 0;
  for (size_t i = 0; i < gold.size(); ++i) {
    ++r.confusion[index[gold[i]]][index[pred[i]]];
    correct += gold[i] == pred[i];
  }
  const double N = static_cast<double>(gold.size());
  r.accuracy = static_cast<double>(correct) / N;
  r.micro = {r.accuracy, r.accuracy, r.accuracy};  // single-label: every error is one FP and one FN
  r.support.assign(L, 0);
  for (size_t c = 0; c < L; ++c) {
    int64_t tp = r.confusion[c][c], pred_c = 0;
    for (size_t g = 0; g < L; ++g) pred_c += r.confusion[g][c];
    for (size_t p = 0; p < L; ++p) r.support[c] += r.confusion[c][p];
    PRF s;
    s.precision = pred_c > 0 ? static_cast<double>(tp) / static_cast<double>(pred_c) : 0.0;  // zero_division = 0
    s.recall = r.support[c] > 0 ? static_cast<double>(tp) / static_cast<double>(r.support[c]) : 0.0;
    s.fmeasure = fmeasure(s.precision, s.recall);
    r.per_class.push_back(s);
    r.macro.precision += s.precision / static_cast<double>(L);
    r.macro.recall += s.recall / static_cast<double>(L);
    r.macro.fmeasure += s.fmeasure / static_cast<double>(L);
    const double w = static_cast<double>(r.support[c]) / N;
    r.weighted.precision += w * s.precision;
    r.weighted.recall += w * s.recall;
    r.weighted.fmeasure += w * s.fmeasure;
  }
  return r;
}

RegressionReport regression_report(const std::vector<double>& pred, const std::vector<double>& gold) {
  if (pred.size() != gold.size()) throw DataError(fmt("regression: ", pred.size(), " predictions but ", gold.size(), " gold values"));
  if (gold.empty()) throw DataError("regression: no examples");
  RegressionReport r;
  r.n = static_cast<int64_t>(gold.size());
  double mean = 0;
  for (double g : gold) mean += g / static_cast<double>(r.n);
  double ss_res = 0, ss_tot = 0;
  for (size_t i = 0; i < gold.size(); ++i) {
    const double e = pred[i] - gold[i];
    ss_res += e * e;
    r.mae += std::abs(e) / static_cast<double>(r.n);
    ss_tot += (gold[i] - mean) * (gold[i] - mean);
  }
  r.mse = ss_res / static_cast<double>(r.n);
  r.rmse = std::sqrt(r.mse);
  r.r2 = ss_tot > 0 ? 1.0 - ss_res / ss_tot : (ss_res == 0 ? 1.0 : 0.0);
  return r;
}

}  // namespace dsforge::eval
