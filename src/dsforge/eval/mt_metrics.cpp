#include "dsforge/eval/mt_metrics.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <unicode/locid.h>
#include <unicode/unistr.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <tuple>
#include <random>
#include <regex>
#include <unordered_map>

#include "dsforge/core/error.h"

namespace dsforge::eval {
namespace {

// ---------------------------------------------------------------- UTF-8 and Python string semantics
std::u32string decode(const std::string& s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    if (len == 1 || i + len > s.size()) {
      out.push_back(c);
      ++i;
      continue;
    }
    char32_t cp = len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    out.push_back(cp);
    i += len;
  }
  return out;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Python's str.isspace() code points (what str.split() splits on).
bool py_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& w : v) out += (out.empty() ? "" : " ") + w;
  return out;
}

std::string normalize_spaces(const std::string& s) { return join(unicode_split(s)); }

// mteval's rules shared by 13a and zh (sacreBLEU's TokenizerRegexp), on bytes: the classes are ASCII,
// and [^0-9] matching one byte of a multi-byte character keeps that character intact.
std::string regexp_rules(std::string line) {
  static const std::regex punct(R"(([{-~\[-` -&(-+:-@/]))"), period_before(R"(([^0-9])([.,]))"),
      period_after(R"(([.,])([^0-9]))"), dash(R"(([0-9])(-))");
  line = std::regex_replace(line, punct, " $1 ");
  line = std::regex_replace(line, period_before, "$1 $2 ");
  line = std::regex_replace(line, period_after, " $1 $2");
  line = std::regex_replace(line, dash, "$1 $2 ");
  return normalize_spaces(line);
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size())) s.replace(p, from.size(), to);
  return s;
}

std::string tok_13a(const std::string& in) {
  std::string line = replace_all(in, "<skipped>", "");
  line = replace_all(line, "-\n", "");
  line = replace_all(line, "\n", " ");
  if (line.find('&') != std::string::npos) {
    line = replace_all(line, "&quot;", "\"");
    line = replace_all(line, "&amp;", "&");
    line = replace_all(line, "&lt;", "<");
    line = replace_all(line, "&gt;", ">");
  }
  return regexp_rules(" " + line + " ");
}

// A compiled PCRE2 pattern (UTF + Unicode properties) and global substitution.
class Pcre {
 public:
  Pcre(const char* pattern) {
    int err = 0;
    PCRE2_SIZE off = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern), PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err, &off, nullptr);
    if (!code_) throw Error(fmt("intl tokenizer: cannot compile pattern ", pattern));
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);
  }
  ~Pcre() { pcre2_code_free(code_); }
  std::string sub(const std::string& s, const char* repl) const {
    std::string out(s.size() * 3 + 64, '\0');
    for (int attempt = 0; attempt < 4; ++attempt) {
      PCRE2_SIZE n = out.size();
      const int rc = pcre2_substitute(code_, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), 0,
                                      PCRE2_SUBSTITUTE_GLOBAL | PCRE2_SUBSTITUTE_OVERFLOW_LENGTH | PCRE2_NO_UTF_CHECK, nullptr,
                                      nullptr, reinterpret_cast<PCRE2_SPTR>(repl), PCRE2_ZERO_TERMINATED,
                                      reinterpret_cast<PCRE2_UCHAR*>(out.data()), &n);
      if (rc >= 0) {
        out.resize(n);
        return out;
      }
      if (rc != PCRE2_ERROR_NOMEMORY) return s;  // invalid UTF-8: leave the line as it is
      out.assign(n + 1, '\0');
    }
    return s;
  }

 private:
  pcre2_code* code_ = nullptr;
};

bool valid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    i += len;
  }
  return true;
}

std::string tok_intl(const std::string& line) {
  // mteval-v14's international rules (sacreBLEU TokenizerV14International)
  static const Pcre before(R"((\P{N})(\p{P}))"), after(R"((\p{P})(\P{N}))"), symbol(R"((\p{S}))");
  if (!valid_utf8(line)) return normalize_spaces(line);
  std::string s = before.sub(line, "$1 $2 ");
  s = after.sub(s, " $1 $2");
  s = symbol.sub(s, " $1 ");
  return normalize_spaces(s);
}

// sacreBLEU's TokenizerZh character ranges, compared as Python compares its (partly mistyped) bounds:
// '\u20000' is the two characters U+2000 '0', so the fifth range covers U+2001..U+2A6D, and
// '\u2f800'..'\u2fa1d' covers U+2F81..U+2FA1 — kept, so that scores match sacreBLEU's.
bool zh_char(char32_t c) {
  static const std::pair<char32_t, char32_t> ranges[] = {
      {0x3400, 0x4DB5}, {0x4E00, 0x9FA5}, {0x9FA6, 0x9FBB}, {0xF900, 0xFA2D}, {0xFA30, 0xFA6A}, {0xFA70, 0xFAD9},
      {0x2001, 0x2A6D}, {0x2F81, 0x2FA1}, {0xFF00, 0xFFEF}, {0x2E80, 0x2EFF}, {0x3000, 0x303F}, {0x31C0, 0x31EF},
      {0x2F00, 0x2FDF}, {0x2FF0, 0x2FFF}, {0x3100, 0x312F}, {0x31A0, 0x31BF}, {0xFE10, 0xFE1F}, {0xFE30, 0xFE4F},
      {0x2600, 0x26FF}, {0x2700, 0x27BF}, {0x3200, 0x32FF}, {0x3300, 0x33FF}};
  for (const auto& [a, b] : ranges)
    if (c >= a && c <= b) return true;
  return false;
}

std::string tok_zh(const std::string& line) {
  std::u32string u = decode(line);
  size_t a = 0, b = u.size();
  while (a < b && py_space(u[a])) ++a;  // str.strip()
  while (b > a && py_space(u[b - 1])) --b;
  std::string s;
  for (size_t i = a; i < b; ++i) {
    if (zh_char(u[i])) {
      s.push_back(' ');
      append_utf8(s, u[i]);
      s.push_back(' ');
    } else {
      append_utf8(s, u[i]);
    }
  }
  return regexp_rules(s);
}

std::string tok_char(const std::string& line) {
  std::string s;
  bool first = true;
  for (char32_t c : decode(line)) {
    if (!first) s.push_back(' ');
    append_utf8(s, c);
    first = false;
  }
  return s;
}

// ---------------------------------------------------------------- n-gram counting
template <typename Seq>
std::unordered_map<Seq, int64_t> count_ngrams(const std::vector<Seq>& units, size_t n, const Seq& sep) {
  std::unordered_map<Seq, int64_t> c;
  for (size_t i = 0; i + n <= units.size(); ++i) {
    Seq key = units[i];
    for (size_t k = 1; k < n; ++k) key += sep + units[i + k];
    ++c[key];
  }
  return c;
}

// ---------------------------------------------------------------- BLEU
class Bleu : public MtMetric {
 public:
  explicit Bleu(const MetricOptions& o) : o_(o) { mt_tokenize("", o.tokenize); }
  std::string name() const override { return "BLEU"; }
  std::string signature(size_t nrefs, int bs, uint64_t seed) const override {
    return fmt("nrefs:", nrefs, bs > 0 ? fmt("|bs:", bs, "|seed:", seed) : "", "|case:", o_.lowercase ? "lc" : "mixed",
               "|eff:", o_.effective_order ? "yes" : "no", "|tok:", o_.tokenize, "|smooth:exp|version:dsforge-", DSFORGE_VERSION);
  }
  std::vector<std::string> words(const std::string& s) const {
    return unicode_split(mt_tokenize(o_.lowercase ? unicode_lower(s) : s, o_.tokenize));
  }
  // [sys_len, ref_len, correct 1..4, total 1..4]
  std::vector<double> segment_stats(const std::string& hyp, const std::vector<std::string>& refs) const override {
    const auto h = words(hyp);
    const auto hl = static_cast<int64_t>(h.size());
    int64_t closest_diff = -1, closest_len = -1;
    std::vector<std::unordered_map<std::string, int64_t>> ref_max(4);
    for (const auto& r : refs) {
      const auto rt = words(r);
      const auto rl = static_cast<int64_t>(rt.size()), diff = std::abs(hl - rl);
      if (closest_diff == -1 || diff < closest_diff) {
        closest_diff = diff;
        closest_len = rl;
      } else if (diff == closest_diff && rl < closest_len) {
        closest_len = rl;
      }
      for (size_t n = 1; n <= 4; ++n)
        for (const auto& [g, c] : count_ngrams(rt, n, std::string("\x01"))) ref_max[n - 1][g] = std::max(ref_max[n - 1][g], c);
    }
    std::vector<double> st(10, 0.0);
    st[0] = static_cast<double>(hl);
    st[1] = static_cast<double>(closest_len);
    for (size_t n = 1; n <= 4; ++n) {
      int64_t correct = 0;
      for (const auto& [g, c] : count_ngrams(h, n, std::string("\x01"))) {
        auto it = ref_max[n - 1].find(g);
        if (it != ref_max[n - 1].end()) correct += std::min(c, it->second);
      }
      st[1 + n] = static_cast<double>(correct);
      st[5 + n] = static_cast<double>(std::max<int64_t>(hl - static_cast<int64_t>(n) + 1, 0));
    }
    return st;
  }
  double score(const std::vector<double>& st) const override { return score_with(st, o_.effective_order); }
  double sentence_score(const std::string& hyp, const std::vector<std::string>& refs) const override {
    return score_with(segment_stats(hyp, refs), true);
  }
  static double score_with(const std::vector<double>& st, bool effective_order) { return bleu_from_stats(st, effective_order).score; }

 private:
  MetricOptions o_;
};

// ---------------------------------------------------------------- chrF / chrF++
class Chrf : public MtMetric {
 public:
  explicit Chrf(const MetricOptions& o) : o_(o) {
    if (o.char_order < 1 || o.word_order < 0 || o.beta < 1)
      throw ConfigError(fmt("chrF: needs char order >= 1, word order >= 0, beta >= 1 (got ", o.char_order, ", ", o.word_order, ", ", o.beta, ")"));
  }
  std::string name() const override { return fmt("chrF", o_.beta, std::string(static_cast<size_t>(o_.word_order), '+')); }
  std::string signature(size_t nrefs, int bs, uint64_t seed) const override {
    return fmt("nrefs:", nrefs, bs > 0 ? fmt("|bs:", bs, "|seed:", seed) : "", "|case:", o_.lowercase ? "lc" : "mixed",
               "|eff:", o_.eps_smoothing ? "no" : "yes", "|nc:", o_.char_order, "|nw:", o_.word_order, "|space:", o_.whitespace ? "yes" : "no",
               "|version:dsforge-", DSFORGE_VERSION);
  }
  using Grams = std::vector<std::unordered_map<std::u32string, int64_t>>;
  Grams grams(const std::string& s_in) const {
    const std::string s = o_.lowercase ? unicode_lower(s_in) : s_in;
    Grams g;
    std::u32string chars = decode(o_.whitespace ? s : join(unicode_split(s)));
    if (!o_.whitespace) chars.erase(std::remove(chars.begin(), chars.end(), U' '), chars.end());
    std::vector<std::u32string> units;
    for (char32_t c : chars) units.emplace_back(1, c);
    for (int n = 1; n <= o_.char_order; ++n) g.push_back(count_ngrams(units, static_cast<size_t>(n), std::u32string()));
    if (o_.word_order > 0) {
      // words with one leading or trailing ASCII punctuation mark split off (chrF++.py)
      static const std::u32string punct = U"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
      std::vector<std::u32string> w;
      for (const auto& word : unicode_split(s)) {
        const std::u32string u = decode(word);
        if (u.size() == 1) {
          w.push_back(u);
        } else if (punct.find(u.back()) != std::u32string::npos) {
          w.push_back(u.substr(0, u.size() - 1));
          w.push_back(u.substr(u.size() - 1));
        } else if (punct.find(u.front()) != std::u32string::npos) {
          w.push_back(u.substr(0, 1));
          w.push_back(u.substr(1));
        } else {
          w.push_back(u);
        }
      }
      for (int n = 1; n <= o_.word_order; ++n) g.push_back(count_ngrams(w, static_cast<size_t>(n), std::u32string(1, U' ')));
    }
    return g;
  }
  // [hyp, ref, match] per order: character orders, then word orders
  std::vector<double> segment_stats(const std::string& hyp, const std::vector<std::string>& refs) const override {
    const Grams h = grams(hyp);
    std::vector<double> best;
    double best_f = -1;
    for (const auto& r : refs) {
      const Grams rg = grams(r);
      std::vector<double> st;
      for (size_t k = 0; k < h.size(); ++k) {
        int64_t nh = 0, nr = 0, m = 0;
        for (const auto& [g, c] : h[k]) {
          nh += c;
          auto it = rg[k].find(g);
          if (it != rg[k].end()) m += std::min(c, it->second);
        }
        for (const auto& [g, c] : rg[k]) nr += c;
        st.push_back(rg[k].empty() ? 0.0 : static_cast<double>(nh));  // no reference n-grams: hits do not count
        st.push_back(static_cast<double>(nr));
        st.push_back(static_cast<double>(m));
      }
      const double f = score(st);
      if (f > best_f) {
        best_f = f;
        best = st;
      }
    }
    return best;
  }
  double score(const std::vector<double>& st) const override {
    const double factor = static_cast<double>(o_.beta) * o_.beta;
    if (o_.eps_smoothing) {  // chrF++.py's: every order counts, an empty one as 1e-16
      const double eps = 1e-16;
      double sum = 0;
      for (size_t i = 0; i + 2 < st.size(); i += 3) {
        const double nh = st[i], nr = st[i + 1], m = st[i + 2];
        const double pr = nh > 0 ? m / nh : eps, rc = nr > 0 ? m / nr : eps, den = factor * pr + rc;
        sum += den > 0 ? (1 + factor) * pr * rc / den : eps;
      }
      return 100.0 * sum / static_cast<double>(st.size() / 3);
    }
    double p = 0, r = 0;
    int eff = 0;
    for (size_t i = 0; i + 2 < st.size(); i += 3) {
      const double nh = st[i], nr = st[i + 1], m = st[i + 2];
      if (nh > 0 && nr > 0) {
        p += m / nh;
        r += m / nr;
        ++eff;
      }
    }
    if (eff == 0) return 0.0;
    p /= eff;
    r /= eff;
    return p + r > 0 ? 100.0 * (1 + factor) * p * r / (factor * p + r) : 0.0;
  }

 private:
  MetricOptions o_;
};

// ---------------------------------------------------------------- TER
constexpr int64_t kInf = 10'000'000'000'000'000LL;
constexpr int kBeam = 25, kMaxShiftSize = 10, kMaxShiftDist = 50, kMaxCandidates = 1000;

struct Edit {
  int64_t cost;
  std::string trace;  // ' ' match, 's' substitute, 'd' drop a hypothesis word, 'i' insert a reference word
};

// Levenshtein distance of hyp -> ref inside a band around the length-scaled diagonal (tercom's beam),
// preferring match/substitution, then deletion, then insertion on ties.
Edit beam_edit(const std::vector<int>& h, const std::vector<int>& r) {
  const size_t nh = h.size(), nr = r.size();
  std::vector<int64_t> cost((nh + 1) * (nr + 1), kInf);
  std::vector<char> op((nh + 1) * (nr + 1), 'x');
  auto at = [&](size_t i, size_t j) { return i * (nr + 1) + j; };
  for (size_t j = 0; j <= nr; ++j) cost[at(0, j)] = static_cast<int64_t>(j), op[at(0, j)] = 'i';
  const double ratio = nh ? static_cast<double>(nr) / static_cast<double>(nh) : 1.0;
  const int64_t beam = kBeam < ratio / 2 ? static_cast<int64_t>(std::ceil(ratio / 2 + kBeam)) : kBeam;
  for (size_t i = 1; i <= nh; ++i) {
    const auto diag = static_cast<int64_t>(std::floor(static_cast<double>(i) * ratio));
    const auto lo = static_cast<size_t>(std::max<int64_t>(0, diag - beam));
    size_t hi = static_cast<size_t>(std::min<int64_t>(static_cast<int64_t>(nr) + 1, diag + beam));
    if (i == nh) hi = nr + 1;
    for (size_t j = lo; j < hi; ++j) {
      if (j == 0) {
        cost[at(i, 0)] = cost[at(i - 1, 0)] + 1, op[at(i, 0)] = 'd';
        continue;
      }
      const bool same = h[i - 1] == r[j - 1];
      const int64_t cands[3] = {cost[at(i - 1, j - 1)] + (same ? 0 : 1), cost[at(i - 1, j)] + 1, cost[at(i, j - 1)] + 1};
      const char ops[3] = {same ? ' ' : 's', 'd', 'i'};
      for (int k = 0; k < 3; ++k)
        if (cost[at(i, j)] > cands[k]) cost[at(i, j)] = cands[k], op[at(i, j)] = ops[k];
    }
  }
  Edit e{cost[at(nh, nr)], ""};
  size_t i = nh, j = nr;
  while (i > 0 || j > 0) {
    const char o = op[at(i, j)];
    e.trace.push_back(o);
    if (o == ' ' || o == 's') --i, --j;
    else if (o == 'i') --j;
    else if (o == 'd') --i;
    else throw Error("TER: edit trace left the beam");
  }
  std::reverse(e.trace.begin(), e.trace.end());
  return e;
}

std::vector<int> perform_shift(const std::vector<int>& w, size_t start, size_t len, size_t target) {
  std::vector<int> out;
  out.reserve(w.size());
  // Slices as tercom's (Python) ones: bounds clamped to the sentence, an empty slice when a >= b (the
  // last case below can reach past the end: unclamped it threw vector::_M_range_insert on real output).
  auto add = [&](size_t a, size_t b) {
    a = std::min(a, w.size()), b = std::min(b, w.size());
    if (a < b) out.insert(out.end(), w.begin() + static_cast<long>(a), w.begin() + static_cast<long>(b));
  };
  if (target < start) {
    add(0, target), add(start, start + len), add(target, start), add(start + len, w.size());
  } else if (target > start + len) {
    add(0, start), add(start + len, target), add(start, start + len), add(target, w.size());
  } else {
    add(0, start), add(start + len, len + target), add(start, start + len), add(len + target, w.size());
  }
  return out;
}

// The best shift of a block of hypothesis words onto a matching reference block (tercom's ranking:
// largest gain, then longest block, then earliest start, then earliest target). Returns the gain.
int64_t best_shift(const std::vector<int>& h, const std::vector<int>& r, std::vector<int>& shifted, int& checked) {
  const Edit e = beam_edit(h, r);
  // Alignment of reference positions to hypothesis positions, from the trace read the other way round.
  const size_t nh = h.size(), nr = r.size();
  std::vector<int64_t> align(nr, 0);
  std::vector<int> hyp_err, ref_err;
  int64_t ph = -1, pr = -1;
  for (char o : e.trace) {
    if (o == ' ' || o == 's') {
      ++ph, ++pr;
      align[static_cast<size_t>(pr)] = ph;
      hyp_err.push_back(o == 's');
      ref_err.push_back(o == 's');
    } else if (o == 'd') {  // a hypothesis word with no reference word
      ++ph;
      hyp_err.push_back(1);
    } else {  // 'i': a reference word with no hypothesis word
      ++pr;
      align[static_cast<size_t>(pr)] = ph;
      ref_err.push_back(1);
    }
  }
  bool found = false;
  int64_t best_gain = 0, best_len = 0, best_start = 0, best_idx = 0;
  for (size_t sh = 0; sh < nh && checked < kMaxCandidates; ++sh) {
    for (size_t sr = 0; sr < nr; ++sr) {
      if (std::abs(static_cast<int64_t>(sr) - static_cast<int64_t>(sh)) > kMaxShiftDist) continue;
      size_t len = 0;
      while (sh + len < nh && sr + len < nr && h[sh + len] == r[sr + len] && len < static_cast<size_t>(kMaxShiftSize)) {
        ++len;
        // candidate block h[sh, sh+len) = r[sr, sr+len)
        bool herr = false, rerr = false;
        for (size_t k = sh; k < sh + len; ++k) herr |= hyp_err[k] != 0;
        for (size_t k = sr; k < sr + len; ++k) rerr |= ref_err[k] != 0;
        const int64_t a = align[sr];
        if (herr && rerr && !(static_cast<int64_t>(sh) <= a && a < static_cast<int64_t>(sh + len))) {
          int64_t prev = -1;
          for (int64_t off = -1; off < static_cast<int64_t>(len); ++off) {
            const int64_t pos = static_cast<int64_t>(sr) + off;
            int64_t idx = 0;
            if (pos == -1) idx = 0;
            else if (pos < static_cast<int64_t>(nr)) idx = align[static_cast<size_t>(pos)] + 1;
            else break;
            if (idx == prev) continue;
            prev = idx;
            std::vector<int> cand = perform_shift(h, sh, len, static_cast<size_t>(idx));
            const int64_t gain = e.cost - beam_edit(cand, r).cost;
            ++checked;
            const auto key = std::make_tuple(gain, static_cast<int64_t>(len), -static_cast<int64_t>(sh), -idx);
            if (!found || key > std::make_tuple(best_gain, best_len, -best_start, -best_idx)) {
              found = true;
              best_gain = gain, best_len = static_cast<int64_t>(len), best_start = static_cast<int64_t>(sh), best_idx = idx;
              shifted = std::move(cand);
            }
          }
        }
        if (nh == sh + len || nr == sr + len) break;
      }
      if (checked >= kMaxCandidates) break;
    }
  }
  return found ? best_gain : 0;
}

class Ter : public MtMetric {
 public:
  explicit Ter(const MetricOptions& o) : o_(o) {}
  std::string name() const override { return "TER"; }
  std::string signature(size_t nrefs, int bs, uint64_t seed) const override {
    return fmt("nrefs:", nrefs, bs > 0 ? fmt("|bs:", bs, "|seed:", seed) : "", "|case:", o_.case_sensitive ? "mixed" : "lc",
               "|tok:tercom|norm:no|punct:yes|asian:no|version:dsforge-", DSFORGE_VERSION);
  }
  bool lower_is_better() const override { return true; }
  std::vector<std::string> words(const std::string& s) const { return unicode_split(o_.case_sensitive ? s : unicode_lower(s)); }
  // [edits of the best reference, average reference length]
  std::vector<double> segment_stats(const std::string& hyp, const std::vector<std::string>& refs) const override {
    const auto h = words(hyp);
    int64_t best = kInf;
    double ref_len = 0;
    for (const auto& r : refs) {
      const auto rw = words(r);
      ref_len += static_cast<double>(rw.size());
      best = std::min(best, ter_edits(h, rw));
    }
    return {static_cast<double>(best), ref_len / static_cast<double>(refs.size())};
  }
  double score(const std::vector<double>& st) const override {
    if (st[1] > 0) return 100.0 * st[0] / st[1];
    return st[0] > 0 ? 100.0 : 0.0;
  }

 private:
  MetricOptions o_;
};

}  // namespace

BleuScore bleu_from_stats(const std::vector<double>& st, bool effective_order) {
  BleuScore b;
  b.sys_len = static_cast<int64_t>(st[0]);
  b.ref_len = static_cast<int64_t>(st[1]);
  for (int n = 1; n <= 4; ++n) {
    b.counts.push_back(static_cast<int64_t>(st[static_cast<size_t>(1 + n)]));
    b.totals.push_back(static_cast<int64_t>(st[static_cast<size_t>(5 + n)]));
  }
  const double sys_len = st[0], ref_len = st[1];
  b.bp = sys_len < ref_len ? (sys_len > 0 ? std::exp(1 - ref_len / sys_len) : 0.0) : 1.0;
  b.precisions.assign(4, 0.0);
  if (st[2] == 0 && st[3] == 0 && st[4] == 0 && st[5] == 0) return b;  // no n-gram matches at all: 0
  double smooth = 1.0;
  int eff = 4;
  for (int n = 1; n <= 4; ++n) {
    const double correct = st[static_cast<size_t>(1 + n)], total = st[static_cast<size_t>(5 + n)];
    if (total == 0) break;
    if (effective_order) eff = n;
    if (correct == 0) {  // "exp" smoothing (mteval-v13a)
      smooth *= 2;
      b.precisions[static_cast<size_t>(n - 1)] = 100.0 / (smooth * total);
    } else {
      b.precisions[static_cast<size_t>(n - 1)] = 100.0 * correct / total;
    }
  }
  double log_sum = 0;
  for (int n = 0; n < eff; ++n) log_sum += b.precisions[static_cast<size_t>(n)] > 0 ? std::log(b.precisions[static_cast<size_t>(n)]) : -9999999999.0;
  b.score = b.bp * std::exp(log_sum / eff);
  return b;
}

std::vector<std::string> unicode_split(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    if (i + len > s.size()) len = 1;
    char32_t cp = c;
    if (len > 1) {
      cp = len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
      for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    }
    if (py_space(cp)) {
      if (!cur.empty()) out.push_back(std::move(cur)), cur.clear();
    } else {
      cur.append(s, i, len);
    }
    i += len;
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

std::string unicode_lower(const std::string& s) {
  bool ascii = true;
  for (char c : s) ascii &= static_cast<unsigned char>(c) < 0x80;
  if (ascii) {
    std::string out = s;
    for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
  }
  icu::UnicodeString u = icu::UnicodeString::fromUTF8(s);
  u.toLower(icu::Locale::getRoot());
  std::string out;
  u.toUTF8String(out);
  return out;
}

std::string mt_tokenize(const std::string& line, const std::string& tokenizer) {
  if (tokenizer == "13a") return tok_13a(line);
  if (tokenizer == "intl") return tok_intl(line);
  if (tokenizer == "zh") return tok_zh(line);
  if (tokenizer == "char") return tok_char(line);
  if (tokenizer == "none") return line;
  throw ConfigError(fmt("metrics: unknown tokenizer '", tokenizer, "' (13a, intl, zh, char, none)"));
}

double MtMetric::sentence_score(const std::string& hyp, const std::vector<std::string>& refs) const {
  return score(segment_stats(hyp, refs));
}

std::unique_ptr<MtMetric> make_metric(const MetricOptions& opt) {
  if (opt.name == "bleu") return std::make_unique<Bleu>(opt);
  if (opt.name == "chrf") return std::make_unique<Chrf>(opt);
  if (opt.name == "ter") return std::make_unique<Ter>(opt);
  throw ConfigError(fmt("metrics: unknown metric '", opt.name, "' (bleu, chrf, ter)"));
}

int64_t ter_edits(const std::vector<std::string>& hyp, const std::vector<std::string>& ref) {
  if (ref.empty()) return static_cast<int64_t>(hyp.size());
  std::map<std::string, int> ids;  // words as integers
  auto encode = [&](const std::vector<std::string>& ws) {
    std::vector<int> out;
    for (const auto& w : ws) out.push_back(ids.emplace(w, static_cast<int>(ids.size())).first->second);
    return out;
  };
  std::vector<int> h = encode(hyp);
  const std::vector<int> r = encode(ref);
  int64_t shifts = 0;
  int checked = 0;
  for (;;) {  // shift while it lowers the edit distance
    std::vector<int> next;
    const int64_t gain = best_shift(h, r, next, checked);
    if (checked >= kMaxCandidates || gain <= 0) break;
    ++shifts;
    h = std::move(next);
  }
  return shifts + beam_edit(h, r).cost;
}

CorpusResult corpus_score(const MtMetric& m, const std::vector<std::string>& hyps, const std::vector<std::vector<std::string>>& refs) {
  check_reference_streams(hyps, refs);
  CorpusResult res;
  res.name = m.name();
  res.signature = m.signature(refs.size());
  for (size_t i = 0; i < hyps.size(); ++i) {
    std::vector<std::string> r;
    for (const auto& s : refs) r.push_back(s[i]);
    res.segment_stats.push_back(m.segment_stats(hyps[i], r));
    if (res.stats.empty()) res.stats.assign(res.segment_stats.back().size(), 0.0);
    for (size_t k = 0; k < res.stats.size(); ++k) res.stats[k] += res.segment_stats.back()[k];
  }
  if (res.stats.empty()) res.stats = m.segment_stats("", std::vector<std::string>(refs.size(), ""));
  res.score = m.score(res.stats);
  return res;
}

std::vector<double> sentence_scores(const MtMetric& m, const std::vector<std::string>& hyps, const std::vector<std::vector<std::string>>& refs) {
  check_reference_streams(hyps, refs);
  std::vector<double> out;
  for (size_t i = 0; i < hyps.size(); ++i) {
    std::vector<std::string> r;
    for (const auto& s : refs) r.push_back(s[i]);
    out.push_back(m.sentence_score(hyps[i], r));
  }
  return out;
}

PairedBootstrapResult paired_bootstrap(const MtMetric& m, const std::vector<std::string>& baseline,
                                       const std::vector<std::vector<std::string>>& systems,
                                       const std::vector<std::vector<std::string>>& refs, int n_samples, uint64_t seed) {
  if (n_samples < 1) throw ConfigError(fmt("paired bootstrap: needs at least one resample (got ", n_samples, ")"));
  if (baseline.empty()) throw DataError("paired bootstrap: no segments");
  for (size_t s = 0; s < systems.size(); ++s)
    if (systems[s].size() != baseline.size())
      throw DataError(fmt("paired bootstrap: system ", s + 1, " has ", systems[s].size(), " lines but the baseline has ", baseline.size()));
  const size_t n = baseline.size();
  // One matrix of resampled segment indices shared by the baseline and every system.
  std::mt19937_64 rng(seed);
  std::vector<uint32_t> idx(static_cast<size_t>(n_samples) * n);
  for (auto& x : idx) x = static_cast<uint32_t>(std::uniform_int_distribution<uint64_t>(0, n - 1)(rng));
  auto resampled = [&](const CorpusResult& c) {
    std::vector<double> scores(static_cast<size_t>(n_samples));
    std::vector<float> sum(c.stats.size());  // float32 sums, as sacreBLEU's numpy arrays
    for (int s = 0; s < n_samples; ++s) {
      std::fill(sum.begin(), sum.end(), 0.0f);
      for (size_t k = 0; k < n; ++k) {
        const auto& st = c.segment_stats[idx[static_cast<size_t>(s) * n + k]];
        for (size_t d = 0; d < sum.size(); ++d) sum[d] += static_cast<float>(st[d]);
      }
      scores[static_cast<size_t>(s)] = m.score(std::vector<double>(sum.begin(), sum.end()));
    }
    return scores;
  };
  auto estimate = [](std::vector<double> scores, double actual) {
    BootstrapEstimate e;
    e.score = actual;
    double mean = 0;
    for (double x : scores) mean += x;
    e.mean = mean / static_cast<double>(scores.size());
    std::sort(scores.begin(), scores.end());
    const size_t lo = scores.size() / 40, hi = scores.size() - lo - 1;
    e.ci = 0.5 * (scores[hi] - scores[lo]);
    return e;
  };
  PairedBootstrapResult res;
  res.name = m.name();
  res.signature = m.signature(refs.size(), n_samples, seed);
  const CorpusResult base = corpus_score(m, baseline, refs);
  const std::vector<double> base_scores = resampled(base);
  res.baseline = estimate(base_scores, base.score);
  for (const auto& sys : systems) {
    const CorpusResult c = corpus_score(m, sys, refs);
    const std::vector<double> sys_scores = resampled(c);
    BootstrapEstimate e = estimate(sys_scores, c.score);
    const double actual = std::abs(c.score - base.score);
    std::vector<double> diffs(sys_scores.size());
    double mean = 0;
    for (size_t s = 0; s < diffs.size(); ++s) mean += diffs[s] = std::abs(sys_scores[s] - base_scores[s]);
    mean /= static_cast<double>(diffs.size());
    int64_t c_count = 0;
    for (double d : diffs) c_count += (d - mean) > actual;
    e.p_value = static_cast<double>(c_count + 1) / static_cast<double>(diffs.size() + 1);
    res.systems.push_back(e);
  }
  return res;
}

}  // namespace dsforge::eval
