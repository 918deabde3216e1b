#include "dsforge/embed/evaluate.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <numeric>
#include <unordered_map>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/text.h"

namespace dsforge::embed {

std::vector<double> average_ranks(const std::vector<double>& x) {
  std::vector<size_t> order(x.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return x[a] < x[b]; });
  std::vector<double> r(x.size());
  for (size_t i = 0; i < order.size();) {
    size_t j = i;
    while (j + 1 < order.size() && x[order[j + 1]] == x[order[i]]) ++j;
    const double mean = (static_cast<double>(i) + static_cast<double>(j)) / 2.0 + 1.0;  // ranks i+1..j+1
    for (size_t k = i; k <= j; ++k) r[order[k]] = mean;
    i = j + 1;
  }
  return r;
}

double pearson(const std::vector<double>& x, const std::vector<double>& y) {
  const size_t n = x.size();
  if (n < 2 || y.size() != n) return 0;
  double mx = 0, my = 0;
  for (size_t i = 0; i < n; ++i) mx += x[i], my += y[i];
  mx /= static_cast<double>(n);
  my /= static_cast<double>(n);
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < n; ++i) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
  }
  return sxx > 0 && syy > 0 ? sxy / std::sqrt(sxx * syy) : 0;
}

double spearman(const std::vector<double>& x, const std::vector<double>& y) { return pearson(average_ranks(x), average_ranks(y)); }

namespace {

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Lower-cased word -> row among the first `restrict_vocab` rows; the most frequent casing wins.
std::unordered_map<std::string, int64_t> ok_vocab(const WordVectors& v, int64_t restrict_vocab) {
  std::unordered_map<std::string, int64_t> m;
  const auto n = static_cast<int64_t>(std::min<size_t>(v.size(), static_cast<size_t>(std::max<int64_t>(restrict_vocab, 0))));
  for (int64_t i = n - 1; i >= 0; --i) m[lower(v.words[static_cast<size_t>(i)])] = i;
  return m;
}

std::vector<std::string> lines_of(const std::string& path) {
  if (!file_exists(path)) throw DataError(fmt(path, ": no such file"));
  const std::string text = read_file(path);
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string l = text.substr(pos, end - pos);
    if (!l.empty() && l.back() == '\r') l.pop_back();
    out.push_back(std::move(l));
    pos = end + 1;
  }
  return out;
}

std::vector<std::string> split_on(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t pos = 0;
  for (;;) {
    const size_t e = s.find(sep, pos);
    out.push_back(s.substr(pos, e == std::string::npos ? std::string::npos : e - pos));
    if (e == std::string::npos) return out;
    pos = e + 1;
  }
}

float cosine_unit(const float* a, const float* b, int D) {
  float s = 0;
  for (int k = 0; k < D; ++k) s += a[k] * b[k];
  return s;
}

}  // namespace

SimilarityResult evaluate_similarity(const WordVectors& v, const std::string& path, int64_t restrict_vocab) {
  SimilarityResult res;
  res.file = path;
  const auto vocab = ok_vocab(v, restrict_vocab);
  const std::vector<float> u = unit_rows(v);
  std::vector<double> gold, model;
  const auto lines = lines_of(path);
  for (size_t n = 0; n < lines.size(); ++n) {
    const std::string& l = lines[n];
    if (l.empty() || l[0] == '#') continue;
    auto f = split_on(l, '\t');
    if (f.size() != 3) f = split_whitespace(l);
    char* end = nullptr;
    const double score = f.size() == 3 ? std::strtod(f[2].c_str(), &end) : 0;
    if (f.size() != 3 || end == f[2].c_str() || *end != '\0' || !std::isfinite(score))
      throw DataError(fmt(path, ":", n + 1, ": expected 'word1<TAB>word2<TAB>score', got '", l.substr(0, 80), "'"));
    ++res.pairs;
    const auto a = vocab.find(lower(f[0])), b = vocab.find(lower(f[1]));
    if (a == vocab.end() || b == vocab.end()) {
      ++res.oov;
      continue;
    }
    gold.push_back(score);
    model.push_back(cosine_unit(u.data() + a->second * v.dim, u.data() + b->second * v.dim, v.dim));
  }
  if (res.pairs == 0) throw DataError(fmt(path, ": no word pairs (expected 'word1<TAB>word2<TAB>score' lines)"));
  res.spearman = spearman(gold, model);
  res.pearson = pearson(gold, model);
  return res;
}

AnalogyResult evaluate_analogies(const WordVectors& v, const std::string& path, int64_t restrict_vocab) {
  AnalogyResult res;
  res.file = path;
  const auto vocab = ok_vocab(v, restrict_vocab);
  const std::vector<float> u = unit_rows(v);
  const int D = v.dim;
  const auto R = static_cast<size_t>(std::min<int64_t>(static_cast<int64_t>(v.size()), restrict_vocab));
  // Cosines of a query word with every candidate row, cached for a few hundred words at a time.
  std::unordered_map<int64_t, std::vector<float>> cache;
  auto sims = [&](int64_t w) -> const std::vector<float>& {
    auto it = cache.find(w);
    if (it != cache.end()) return it->second;
    std::vector<float> s(R);
    const float* q = u.data() + w * D;
    for (size_t i = 0; i < R; ++i) s[i] = cosine_unit(q, u.data() + i * static_cast<size_t>(D), D);
    return cache.emplace(w, std::move(s)).first->second;
  };
  const auto lines = lines_of(path);
  for (size_t n = 0; n < lines.size(); ++n) {
    const std::string& l = lines[n];
    if (l.empty()) continue;
    if (l[0] == ':') {
      AnalogySection s;
      const auto words = split_whitespace(l.substr(1));
      s.name = words.empty() ? "" : words[0];
      res.sections.push_back(s);
      continue;
    }
    const auto w = split_whitespace(l);
    if (w.size() != 4) throw DataError(fmt(path, ":", n + 1, ": expected four words 'a b c d' (a : b :: c : d), got '", l.substr(0, 80), "'"));
    if (res.sections.empty()) throw DataError(fmt(path, ":", n + 1, ": question before any ': section' header"));
    AnalogySection& sec = res.sections.back();
    ++res.questions;
    ++sec.questions;
    int64_t id[4];
    bool oov = false;
    for (int k = 0; k < 4; ++k) {
      const auto it = vocab.find(lower(w[static_cast<size_t>(k)]));
      if (it == vocab.end()) {
        oov = true;
        break;
      }
      id[k] = it->second;
    }
    if (oov) {
      ++res.oov;
      ++sec.oov;
      continue;
    }
    if (cache.size() + 3 > 256) cache.clear();  // before taking references into it
    const std::vector<float>&sa = sims(id[0]), &sb = sims(id[1]), &sc = sims(id[2]);
    int64_t best_add = -1, best_mul = -1;
    float add_score = -1e30f, mul_score = -1e30f;
    for (size_t i = 0; i < R; ++i) {
      const auto x = static_cast<int64_t>(i);
      if (x == id[0] || x == id[1] || x == id[2]) continue;
      const float add = sb[i] - sa[i] + sc[i];
      if (add > add_score) add_score = add, best_add = x;
      const float mul = ((1 + sb[i]) / 2) * ((1 + sc[i]) / 2) / ((1 + sa[i]) / 2 + 1e-6f);
      if (mul > mul_score) mul_score = mul, best_mul = x;
    }
    // The answer is compared lower-cased (gensim compares upper-cased).
    auto same_word = [&](int64_t x) { return lower(v.words[static_cast<size_t>(x)]) == lower(w[3]); };
    if (best_add >= 0 && same_word(best_add)) ++res.correct_add, ++sec.correct_add;
    if (best_mul >= 0 && same_word(best_mul)) ++res.correct_mul, ++sec.correct_mul;
  }
  if (res.questions == 0) throw DataError(fmt(path, ": no analogy questions (expected ': section' headers and 'a b c d' lines)"));
  return res;
}

}  // namespace dsforge::embed
