// Small text helpers shared by the readers of word lists, metrics and evaluation files.
#pragma once
#include <cctype>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace dsforge {

// v with `digits` digits after the point ("%.*f").
inline std::string fixed_digits(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}
inline bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }
inline bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The words of `s` separated by runs of ASCII whitespace; no empty words.
inline std::vector<std::string> split_whitespace(const std::string& s) {
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

// The words of `s` as [begin, end) byte ranges of ASCII letter runs, an apostrophe between letters kept
// inside ("isn't"): what substitution (synonym attacks, counterfactual terms) works on.
inline std::vector<std::pair<size_t, size_t>> word_spans(const std::string& s) {
  std::vector<std::pair<size_t, size_t>> out;
  auto letter = [&](size_t i) { return i < s.size() && std::isalpha(static_cast<unsigned char>(s[i])); };
  for (size_t i = 0; i < s.size();) {
    if (!letter(i)) {
      ++i;
      continue;
    }
    size_t j = i;
    while (letter(j) || (s[j] == '\'' && letter(j + 1))) ++j;
    out.emplace_back(i, j);
    i = j;
  }
  return out;
}

inline std::string lower_ascii(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Calls fn(line, number) for each line of `text` (numbers from 1, a trailing "\r" removed): what the
// readers of small list files (word pairs, WEAT tests, probes) iterate with, naming file:line in errors.
template <typename F>
void for_each_line(const std::string& text, F&& fn) {
  size_t pos = 0, number = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    fn(line, ++number);
    pos = end + 1;
  }
}

}  // namespace dsforge
