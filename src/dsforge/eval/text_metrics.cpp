#include "dsforge/eval/text_metrics.h"

#include <algorithm>
#include <cmath>
#include <regex>
#include <set>
#include <unordered_map>

#include "dsforge/core/error.h"

namespace dsforge::eval {
namespace {

std::vector<std::string> split_ws(const std::string& s) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
    size_t j = i;
    while (j < s.size() && !std::isspace(static_cast<unsigned char>(s[j]))) ++j;
    if (j > i) out.emplace_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size())) s.replace(p, from.size(), to);
  return s;
}

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

void check_streams(const std::vector<std::string>& hyps, const std::vector<std::vector<std::string>>& refs) {
  if (refs.empty()) throw DataError("metrics: no reference stream");
  for (size_t r = 0; r < refs.size(); ++r)
    if (refs[r].size() != hyps.size())
      throw DataError(fmt("metrics: reference stream ", r + 1, " has ", refs[r].size(), " lines but there are ",
                          hyps.size(), " hypotheses"));
}

}  // namespace

// ---------------------------------------------------------------- BLEU
std::string tokenize_13a(const std::string& line_in) {
  std::string line = replace_all(line_in, "<skipped>", "");
  line = replace_all(line, "-\n", "");
  line = replace_all(line, "\n", " ");
  if (line.find('&') != std::string::npos) {
    line = replace_all(line, "&quot;", "\"");
    line = replace_all(line, "&amp;", "&");
    line = replace_all(line, "&lt;", "<");
    line = replace_all(line, "&gt;", ">");
  }
  line = " " + line + " ";
  // mteval-v13a's rules, applied left to right with non-overlapping matches, on bytes: the classes
  // are ASCII, and [^0-9] matching one byte of a multi-byte character keeps that character intact.
  static const std::regex punct(R"(([{-~\[-` -&(-+:-@/]))"), period_before(R"(([^0-9])([.,]))"),
      period_after(R"(([.,])([^0-9]))"), dash(R"(([0-9])(-))");
  line = std::regex_replace(line, punct, " $1 ");
  line = std::regex_replace(line, period_before, "$1 $2 ");
  line = std::regex_replace(line, period_after, " $1 $2");
  line = std::regex_replace(line, dash, "$1 $2 ");
  std::string out;
  for (const auto& t : split_ws(line)) out += (out.empty() ? "" : " ") + t;
  return out;
}

namespace {
struct BleuStats {
  std::vector<int64_t> correct = std::vector<int64_t>(4, 0), total = std::vector<int64_t>(4, 0);
  int64_t sys_len = 0, ref_len = 0;
};

void add_segment(BleuStats& st, const std::string& hyp, const std::vector<std::string>& refs) {
  const auto h = split_ws(tokenize_13a(hyp));
  const int64_t hl = static_cast<int64_t>(h.size());
  int64_t closest_diff = -1, closest_len = -1;
  std::vector<Counts> ref_max(4);
  for (const auto& r : refs) {
    const auto rt = split_ws(tokenize_13a(r));
    const int64_t rl = static_cast<int64_t>(rt.size()), diff = std::abs(hl - rl);
    if (closest_diff == -1 || diff < closest_diff) {
      closest_diff = diff;
      closest_len = rl;
    } else if (diff == closest_diff && rl < closest_len) {
      closest_len = rl;
    }
    for (size_t n = 1; n <= 4; ++n)
      for (const auto& [g, c] : ngrams(rt, n)) ref_max[n - 1][g] = std::max(ref_max[n - 1][g], c);
  }
  st.sys_len += hl;
  st.ref_len += closest_len;
  for (size_t n = 1; n <= 4; ++n) {
    for (const auto& [g, c] : ngrams(h, n)) {
      auto it = ref_max[n - 1].find(g);
      if (it != ref_max[n - 1].end()) st.correct[n - 1] += std::min(c, it->second);
    }
    st.total[n - 1] += std::max<int64_t>(hl - static_cast<int64_t>(n) + 1, 0);
  }
}

BleuScore bleu_from_stats(const BleuStats& st, bool effective_order, size_t nrefs) {
  BleuScore s;
  s.counts = st.correct;
  s.totals = st.total;
  s.sys_len = st.sys_len;
  s.ref_len = st.ref_len;
  s.precisions.assign(4, 0.0);
  double smooth = 1.0;
  int eff_order = 4;
  for (int n = 1; n <= 4; ++n) {
    if (st.total[n - 1] == 0) break;
    if (effective_order) eff_order = n;
    if (st.correct[n - 1] == 0) {
      smooth *= 2;  // "exp" smoothing
      s.precisions[n - 1] = 100.0 / (smooth * static_cast<double>(st.total[n - 1]));
    } else {
      s.precisions[n - 1] = 100.0 * static_cast<double>(st.correct[n - 1]) / static_cast<double>(st.total[n - 1]);
    }
  }
  s.bp = st.sys_len < st.ref_len ? (st.sys_len > 0 ? std::exp(1.0 - static_cast<double>(st.ref_len) / static_cast<double>(st.sys_len)) : 0.0)
                                 : 1.0;
  double log_sum = 0;
  for (int n = 0; n < eff_order; ++n) log_sum += s.precisions[n] > 0 ? std::log(s.precisions[n]) : -9999999999.0;
  s.score = s.bp * std::exp(log_sum / eff_order);
  s.signature = fmt("nrefs:", nrefs, "|case:mixed|eff:", effective_order ? "yes" : "no", "|tok:13a|smooth:exp|version:dsforge-",
                    DSFORGE_VERSION);
  return s;
}
}  // namespace

BleuScore corpus_bleu(const std::vector<std::string>& hyps, const std::vector<std::vector<std::string>>& refs) {
  check_streams(hyps, refs);
  BleuStats st;
  for (size_t i = 0; i < hyps.size(); ++i) {
    std::vector<std::string> r;
    for (const auto& stream : refs) r.push_back(stream[i]);
    add_segment(st, hyps[i], r);
  }
  return bleu_from_stats(st, false, refs.size());
}

BleuScore sentence_bleu(const std::string& hyp, const std::vector<std::string>& refs) {
  BleuStats st;
  add_segment(st, hyp, refs);
  return bleu_from_stats(st, true, refs.size());
}

// ---------------------------------------------------------------- chrF
namespace {
constexpr int kChrOrder = 6;
constexpr double kBeta = 2.0;

std::vector<std::string> code_points_no_space(const std::string& s) {
  std::vector<std::string> out;
  for (const auto& word : split_ws(s))
    for (size_t i = 0; i < word.size();) {
      const auto c = static_cast<unsigned char>(word[i]);
      const size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
      out.emplace_back(word.substr(i, len));
      i += len;
    }
  return out;
}

std::vector<int64_t> chrf_stats(const std::string& hyp, const std::string& ref) {
  const auto h = code_points_no_space(hyp), r = code_points_no_space(ref);
  std::vector<int64_t> st(3 * kChrOrder, 0);
  for (int n = 1; n <= kChrOrder; ++n) {
    const Overlap o = overlap(ngrams(h, static_cast<size_t>(n)), ngrams(r, static_cast<size_t>(n)));
    st[3 * (n - 1)] = o.hyp;
    st[3 * (n - 1) + 1] = o.ref;
    st[3 * (n - 1) + 2] = o.match;
  }
  return st;
}

double chrf_from_stats(const std::vector<int64_t>& st) {
  double avg_p = 0, avg_r = 0;
  int eff = 0;
  for (int n = 0; n < kChrOrder; ++n) {
    const int64_t nh = st[3 * n], nr = st[3 * n + 1], m = st[3 * n + 2];
    if (nh > 0 && nr > 0) {
      avg_p += static_cast<double>(m) / static_cast<double>(nh);
      avg_r += static_cast<double>(m) / static_cast<double>(nr);
      ++eff;
    }
  }
  if (eff == 0) return 0.0;
  avg_p /= eff;
  avg_r /= eff;
  const double f = kBeta * kBeta;
  return avg_p + avg_r > 0 ? 100.0 * (1 + f) * avg_p * avg_r / (f * avg_p + avg_r) : 0.0;
}
}  // namespace

ChrfScore corpus_chrf(const std::vector<std::string>& hyps, const std::vector<std::vector<std::string>>& refs) {
  check_streams(hyps, refs);
  std::vector<int64_t> total(3 * kChrOrder, 0);
  for (size_t i = 0; i < hyps.size(); ++i) {
    std::vector<int64_t> best;
    double best_f = -1;
    for (const auto& stream : refs) {  // several references: the best-scoring one for this segment
      auto st = chrf_stats(hyps[i], stream[i]);
      const double f = chrf_from_stats(st);
      if (f > best_f) {
        best_f = f;
        best = st;
      }
    }
    for (size_t k = 0; k < total.size(); ++k) total[k] += best[k];
  }
  return {chrf_from_stats(total), fmt("nrefs:", refs.size(), "|case:mixed|eff:yes|nc:6|nw:0|space:no|version:dsforge-", DSFORGE_VERSION)};
}

// ---------------------------------------------------------------- ROUGE
std::vector<std::string> rouge_tokenize(const std::string& text, bool stem) {
  std::string t;
  t.reserve(text.size());
  for (char ch : text) {
    const char c = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    t.push_back((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ? c : ' ');
  }
  std::vector<std::string> out = split_ws(t);
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
  check_streams(hyps, refs);
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
