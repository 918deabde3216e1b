// NLTK's PorterStemmer in its default NLTK_EXTENSIONS mode (the one Google's rouge-score uses),
// written from the algorithm's description (Porter 1980) and NLTK's documented departures from it:
// a table of irregular forms, words of one or two letters left alone, 'ies'/'ied' of four-letter
// words to 'ie', step 1c only after a consonant, 'alli' handled before the other step-2 rules,
// 'bli' -> 'ble' (not 'abli' -> 'able'), and the extra 'fulli' and 'logi' rules.
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "dsforge/eval/text_metrics.h"

namespace dsforge::eval {
namespace {

bool is_consonant(const std::string& w, size_t i) {
  const char c = w[i];
  if (c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u') return false;
  if (c == 'y') return i == 0 ? true : !is_consonant(w, i - 1);
  return true;
}

// m in [C](VC)^m[V]: the number of vowel-consonant transitions.
int measure(const std::string& s) {
  int m = 0;
  bool prev_vowel = false;
  for (size_t i = 0; i < s.size(); ++i) {
    const bool cons = is_consonant(s, i);
    if (cons && prev_vowel) ++m;
    prev_vowel = !cons;
  }
  return m;
}

bool contains_vowel(const std::string& s) {
  for (size_t i = 0; i < s.size(); ++i)
    if (!is_consonant(s, i)) return true;
  return false;
}

bool ends_double_consonant(const std::string& w) {
  return w.size() >= 2 && w[w.size() - 1] == w[w.size() - 2] && is_consonant(w, w.size() - 1);
}

bool ends_cvc(const std::string& w) {
  const size_t n = w.size();
  if (n >= 3 && is_consonant(w, n - 3) && !is_consonant(w, n - 2) && is_consonant(w, n - 1) && w[n - 1] != 'w' &&
      w[n - 1] != 'x' && w[n - 1] != 'y')
    return true;
  return n == 2 && !is_consonant(w, 0) && is_consonant(w, 1);  // NLTK extension
}

bool ends_with(const std::string& w, const std::string& suf) {
  return w.size() >= suf.size() && w.compare(w.size() - suf.size(), suf.size(), suf) == 0;
}

struct Rule {
  std::string suffix, replacement;
  std::function<bool(const std::string&)> condition;  // on the stem; empty = always
};

// The first rule whose suffix matches decides: replaced if its condition holds, else the word stays.
// Suffix "*d" means "ends with a double consonant" (the stem then drops both letters).
std::string apply_rules(const std::string& w, const std::vector<Rule>& rules) {
  for (const auto& r : rules) {
    if (r.suffix == "*d" && ends_double_consonant(w)) {
      const std::string stem = w.substr(0, w.size() - 2);
      return !r.condition || r.condition(stem) ? stem + r.replacement : w;
    }
    if (ends_with(w, r.suffix)) {
      const std::string stem = w.substr(0, w.size() - r.suffix.size());
      return !r.condition || r.condition(stem) ? stem + r.replacement : w;
    }
  }
  return w;
}

const auto m_gt0 = [](const std::string& s) { return measure(s) > 0; };
const auto m_gt1 = [](const std::string& s) { return measure(s) > 1; };

std::string step1a(const std::string& w) {
  if (ends_with(w, "ies") && w.size() == 4) return w.substr(0, 1) + "ie";
  return apply_rules(w, {{"sses", "ss", {}}, {"ies", "i", {}}, {"ss", "ss", {}}, {"s", "", {}}});
}

std::string step1b(const std::string& w) {
  if (ends_with(w, "ied")) return w.substr(0, w.size() - 3) + (w.size() == 4 ? "ie" : "i");
  if (ends_with(w, "eed")) {
    const std::string stem = w.substr(0, w.size() - 3);
    return measure(stem) > 0 ? stem + "ee" : w;
  }
  std::string inter;
  bool ok = false;
  for (const std::string suf : {"ed", "ing"})
    if (ends_with(w, suf)) {
      inter = w.substr(0, w.size() - suf.size());
      if (contains_vowel(inter)) {
        ok = true;
        break;
      }
    }
  if (!ok) return w;
  const char last = inter.empty() ? '\0' : inter.back();
  return apply_rules(inter, {{"at", "ate", {}},
                             {"bl", "ble", {}},
                             {"iz", "ize", {}},
                             {"*d", std::string(1, last), [last](const std::string&) { return last != 'l' && last != 's' && last != 'z'; }},
                             {"", "e", [](const std::string& s) { return measure(s) == 1 && ends_cvc(s); }}});
}

std::string step1c(const std::string& w) {
  return apply_rules(w, {{"y", "i", [](const std::string& s) { return s.size() > 1 && is_consonant(s, s.size() - 1); }}});
}

std::string step2(const std::string& w) {
  if (ends_with(w, "alli") && measure(w.substr(0, w.size() - 4)) > 0) return step2(w.substr(0, w.size() - 4) + "al");
  const std::string word = w;
  return apply_rules(w, {{"ational", "ate", m_gt0}, {"tional", "tion", m_gt0}, {"enci", "ence", m_gt0},
                         {"anci", "ance", m_gt0},   {"izer", "ize", m_gt0},    {"bli", "ble", m_gt0},
                         {"alli", "al", m_gt0},     {"entli", "ent", m_gt0},   {"eli", "e", m_gt0},
                         {"ousli", "ous", m_gt0},   {"ization", "ize", m_gt0}, {"ation", "ate", m_gt0},
                         {"ator", "ate", m_gt0},    {"alism", "al", m_gt0},    {"iveness", "ive", m_gt0},
                         {"fulness", "ful", m_gt0}, {"ousness", "ous", m_gt0}, {"aliti", "al", m_gt0},
                         {"iviti", "ive", m_gt0},   {"biliti", "ble", m_gt0},  {"fulli", "ful", m_gt0},
                         // the 'l' stays with the stem, so 'geo'/'theo' behave like 'archaeo'/'philo'
                         {"logi", "log", [word](const std::string&) { return measure(word.substr(0, word.size() - 3)) > 0; }}});
}

std::string step3(const std::string& w) {
  return apply_rules(w, {{"icate", "ic", m_gt0}, {"ative", "", m_gt0}, {"alize", "al", m_gt0}, {"iciti", "ic", m_gt0},
                         {"ical", "ic", m_gt0}, {"ful", "", m_gt0}, {"ness", "", m_gt0}});
}

std::string step4(const std::string& w) {
  return apply_rules(w, {{"al", "", m_gt1},   {"ance", "", m_gt1}, {"ence", "", m_gt1}, {"er", "", m_gt1},
                         {"ic", "", m_gt1},   {"able", "", m_gt1}, {"ible", "", m_gt1}, {"ant", "", m_gt1},
                         {"ement", "", m_gt1}, {"ment", "", m_gt1}, {"ent", "", m_gt1},
                         {"ion", "", [](const std::string& s) { return measure(s) > 1 && !s.empty() && (s.back() == 's' || s.back() == 't'); }},
                         {"ou", "", m_gt1},   {"ism", "", m_gt1},  {"ate", "", m_gt1},  {"iti", "", m_gt1},
                         {"ous", "", m_gt1},  {"ive", "", m_gt1},  {"ize", "", m_gt1}});
}

std::string step5a(const std::string& w) {
  if (ends_with(w, "e")) {
    const std::string stem = w.substr(0, w.size() - 1);
    const int m = measure(stem);
    if (m > 1 || (m == 1 && !ends_cvc(stem))) return stem;
  }
  return w;
}

std::string step5b(const std::string& w) {
  return apply_rules(w, {{"ll", "l", [w](const std::string&) { return measure(w.substr(0, w.size() - 1)) > 1; }}});
}

}  // namespace

std::string porter_stem(const std::string& word) {
  static const std::map<std::string, std::string> irregular = {
      {"sky", "sky"},         {"skies", "sky"},       {"dying", "die"},     {"lying", "lie"},       {"tying", "tie"},
      {"news", "news"},       {"innings", "inning"},  {"inning", "inning"}, {"outings", "outing"},  {"outing", "outing"},
      {"cannings", "canning"}, {"canning", "canning"}, {"howe", "howe"},    {"proceed", "proceed"}, {"exceed", "exceed"},
      {"succeed", "succeed"}};
  if (auto it = irregular.find(word); it != irregular.end()) return it->second;
  if (word.size() <= 2) return word;
  std::string s = step1a(word);
  s = step1b(s);
  s = step1c(s);
  s = step2(s);
  s = step3(s);
  s = step4(s);
  s = step5a(s);
  return step5b(s);
}

}  // namespace dsforge::eval
