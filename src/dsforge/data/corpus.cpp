#include "dsforge/data/corpus.h"

#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <unicode/utf8.h>

#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unordered_map>
#include <unordered_set>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/log.h"
#include "dsforge/core/text.h"
#include "dsforge/data/dedup.h"
#include "dsforge/data/ingest.h"

namespace dsforge::data {

const std::string& wordnet_lexname(int lex_filenum) {
  static const std::vector<std::string> names = {
      "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute",
      "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group",
      "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant", "noun.possession",
      "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
      "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition", "verb.consumption",
      "verb.contact", "verb.creation", "verb.emotion", "verb.motion", "verb.perception", "verb.possession",
      "verb.social", "verb.stative", "verb.weather", "adj.ppl"};
  if (lex_filenum < 0 || lex_filenum >= static_cast<int>(names.size()))
    throw DataError(fmt("WordNet: lexicographer file number ", lex_filenum, " outside 0..44"));
  return names[static_cast<size_t>(lex_filenum)];
}

void for_each_wordnet_synset(const std::string& dir, const std::function<void(const WordNetSynset&)>& fn) {
  WordNetSynset syn;
  for (const char* pos : {"noun", "verb", "adj", "adv"}) {
    const std::string path = path_join(dir, std::string("data.") + pos);
    std::ifstream in(path);
    if (!in)
      throw DataError(fmt(path, ": cannot open WordNet data file (install Debian's wordnet-base, or set data.wordnet_dir)"));
    std::string line;
    int64_t lineno = 0;
    while (std::getline(in, line)) {
      ++lineno;
      if (line.empty() || line[0] == ' ') continue;  // the license header is indented
      // offset lex_filenum ss_type w_cnt(hex) [word lex_id]... ptrs... | gloss
      size_t bar = line.find(" | ");
      if (bar == std::string::npos) throw DataError(fmt(path, ":", lineno, ": expected ' | ' before the gloss"));
      std::istringstream fields(line.substr(0, bar));
      std::string offset, lexfile, sstype, wcnt_hex;
      if (!(fields >> offset >> lexfile >> sstype >> wcnt_hex))
        throw DataError(fmt(path, ":", lineno, ": expected 'offset lex_filenum ss_type w_cnt word ...'"));
      const auto wcnt = std::stoul(wcnt_hex, nullptr, 16);
      syn.words.clear();
      for (unsigned long i = 0; i < wcnt; ++i) {
        std::string word, lex_id;
        if (!(fields >> word >> lex_id))
          throw DataError(fmt(path, ":", lineno, ": synset lists fewer than ", wcnt, " words"));
        size_t paren = word.find('(');  // adjective markers: "beautiful(a)"
        if (paren != std::string::npos) word.resize(paren);
        syn.words.push_back(std::move(word));
      }
      syn.gloss = line.substr(bar + 3);
      syn.lex_filenum = std::atoi(lexfile.c_str());
      fn(syn);
    }
  }
}

std::map<std::string, std::string> wordnet_first_definitions(const std::string& dir, const std::vector<std::string>& words) {
  const std::string index = path_join(dir, "index.noun"), data = path_join(dir, "data.noun");
  std::map<std::string, uint64_t> first;  // lemma -> byte offset of its first synset in data.noun
  std::map<std::string, bool> wanted;
  for (const auto& w : words) {
    std::string lemma = w;
    for (char& c : lemma) c = c == ' ' ? '_' : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    wanted[lemma] = true;
  }
  std::ifstream in(index);
  if (!in) throw IoError(fmt(index, ": cannot open (Debian: wordnet-base)"));
  // lemma pos synset_cnt p_cnt [ptr_symbol...] sense_cnt tagsense_cnt synset_offset...
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == ' ') continue;  // the licence header
    const std::string lemma = line.substr(0, line.find(' '));
    if (!wanted.count(lemma)) continue;
    std::istringstream f(line);
    std::string tok, pos;
    int64_t synsets = 0, pointers = 0;
    f >> tok >> pos >> synsets >> pointers;
    for (int64_t k = 0; k < pointers; ++k) f >> tok;
    f >> tok >> tok >> tok;  // sense_cnt, tagsense_cnt, the first offset
    if (!f || tok.empty() || !std::isdigit(static_cast<unsigned char>(tok[0]))) throw DataError(fmt(index, ": malformed entry for '", lemma, "'"));
    first[lemma] = std::stoull(tok);
  }
  std::ifstream d(data, std::ios::binary);
  if (!d) throw IoError(fmt(data, ": cannot open (Debian: wordnet-base)"));
  std::map<std::string, std::string> out;
  for (const auto& w : words) {
    std::string lemma = w;
    for (char& c : lemma) c = c == ' ' ? '_' : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    auto it = first.find(lemma);
    if (it == first.end()) throw DataError(fmt(index, ": no noun '", w, "'"));
    d.clear();
    d.seekg(static_cast<std::streamoff>(it->second));
    std::string line;
    std::getline(d, line);
    const size_t bar = line.find(" | ");
    if (bar == std::string::npos) throw DataError(fmt(data, ": no gloss at byte ", it->second, " (the first sense of '", w, "')"));
    std::string def = line.substr(bar + 3, line.find(';', bar + 3) == std::string::npos ? std::string::npos : line.find(';', bar + 3) - bar - 3);
    while (!def.empty() && (def.back() == ' ' || def.back() == '\r')) def.pop_back();
    out[w] = def;
  }
  return out;
}

std::vector<std::string> read_wordnet_glosses(const std::string& dir) {
  std::vector<std::string> docs;
  for_each_wordnet_synset(dir, [&](const WordNetSynset& syn) {
    std::string word = syn.words.at(0);
    std::replace(word.begin(), word.end(), '_', ' ');
    std::string gloss = syn.gloss;
    size_t example = gloss.find("; \"");
    if (example != std::string::npos) gloss.resize(example);
    while (!gloss.empty() && (gloss.back() == ' ' || gloss.back() == ';')) gloss.pop_back();
    if (!gloss.empty()) docs.push_back(word + ": " + gloss);
  });
  return docs;
}

namespace {
// Unicode line breaks beside "\n": vertical tab, form feed, NEL, line and paragraph separators.
bool is_line_break(UChar32 c) { return c == 0x0B || c == 0x0C || c == 0x85 || c == 0x2028 || c == 0x2029; }

// The whitespace pass that keeps lines (see clean_text): `utf8` is NFKC-normalised, valid UTF-8.
std::string clean_lines(const std::string& utf8, int max_blank_lines) {
  std::string out, line;
  out.reserve(utf8.size());
  int64_t blank_run = 0;
  auto end_line = [&]() {
    while (!line.empty() && (line.back() == ' ' || line.back() == '\t')) line.pop_back();
    if (line.empty()) {
      ++blank_run;
      return;
    }
    if (!out.empty()) out.append(1 + static_cast<size_t>(std::min<int64_t>(blank_run, max_blank_lines)), '\n');
    out += line;  // blank lines before the first text line (out empty) are dropped
    line.clear();
    blank_run = 0;
  };
  const auto* s = reinterpret_cast<const uint8_t*>(utf8.data());
  int32_t i = 0, n = static_cast<int32_t>(utf8.size());
  while (i < n) {
    const int32_t start = i;
    UChar32 c;
    U8_NEXT(s, i, n, c);
    if (c < 0) continue;
    if (c == '\r') {
      if (i < n && s[i] == '\n') ++i;  // "\r\n" is one break
      end_line();
    } else if (c == '\n' || is_line_break(c)) {
      end_line();
    } else if (c == '\t') {
      line.push_back('\t');
    } else if (u_isspace(c) || u_iscntrl(c) || c == 0xFEFF) {
      line.push_back(' ');
    } else {
      line.append(utf8, static_cast<size_t>(start), static_cast<size_t>(i - start));
    }
  }
  end_line();  // trailing blank lines are never written: they only count before a text line
  return out;
}

// Control characters and every Unicode space become one ASCII space; runs collapse; trimmed.
std::string collapse_whitespace(const std::string& utf8) {
  std::string out;
  out.reserve(utf8.size());
  const auto* s = reinterpret_cast<const uint8_t*>(utf8.data());
  int32_t i = 0, n = static_cast<int32_t>(utf8.size());
  bool pending_space = false;
  while (i < n) {
    int32_t start = i;
    UChar32 c;
    U8_NEXT(s, i, n, c);
    if (c < 0) continue;
    if (u_isspace(c) || u_iscntrl(c) || c == 0xFEFF) {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) out.push_back(' ');
    pending_space = false;
    out.append(utf8, start, i - start);
  }
  return out;
}
}  // namespace

std::string clean_text(const std::string& text, const CleanOptions& opts, bool* had_invalid) {
  // Validate first: ICU's fromUTF8 repairs silently, and we want the count.
  const bool invalid = !is_valid_utf8(text);
  if (had_invalid) *had_invalid = invalid;
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* nfkc = icu::Normalizer2::getNFKCInstance(status);
  if (U_FAILURE(status)) throw Error(fmt("ICU: cannot load the NFKC normaliser (", u_errorName(status), ")"));
  icu::UnicodeString u = icu::UnicodeString::fromUTF8(text);  // invalid bytes become U+FFFD
  icu::UnicodeString norm = nfkc->normalize(u, status);
  if (U_FAILURE(status)) throw Error(fmt("ICU: NFKC normalisation failed (", u_errorName(status), ")"));
  std::string utf8;
  norm.toUTF8String(utf8);
  return opts.collapse_whitespace ? collapse_whitespace(utf8) : clean_lines(utf8, opts.max_blank_lines);
}

bool is_validation(const std::string& doc, double val_fraction, uint64_t seed) {
  uint64_t h = fnv1a64(doc) ^ (seed * 0x9E3779B97F4A7C15ull);
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return static_cast<double>(h % 1000000) < val_fraction * 1e6;
}

std::vector<std::string> split_words(const std::string& doc) {
  std::vector<std::string> words;
  std::string w;
  for (unsigned char c : doc) {
    if (std::isalnum(c) || c == '\'' || c >= 0x80) {
      w.push_back(static_cast<char>(std::tolower(c)));
    } else if (!w.empty()) {
      words.push_back(std::move(w));
      w.clear();
    }
  }
  if (!w.empty()) words.push_back(std::move(w));
  return words;
}

int64_t count_code_points(std::string_view s) {
  int64_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

namespace {

// (repeated, total) word n-grams of one document.
std::pair<int64_t, int64_t> ngram_counts(const std::vector<std::string>& words, int n) {
  if (static_cast<int>(words.size()) < n) return {0, 0};
  std::unordered_set<std::string> seen;
  int64_t repeated = 0, total = 0;
  for (size_t i = 0; i + n <= words.size(); ++i) {
    std::string g = words[i];
    for (int k = 1; k < n; ++k) g += ' ' + words[i + k];
    ++total;
    repeated += !seen.insert(std::move(g)).second;
  }
  return {repeated, total};
}
}  // namespace

double ngram_repetition(const std::string& doc, int n) {
  auto [rep, total] = ngram_counts(split_words(doc), n);
  return total ? static_cast<double>(rep) / static_cast<double>(total) : 0.0;
}

double repeated_line_fraction(const std::string& text) {
  std::unordered_set<std::string> seen;
  int64_t lines = 0, repeated = 0;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    // Blank lines separate paragraphs in multi-line documents: they are not repeats.
    if (line.find_first_not_of(" \t\r") != std::string::npos) {
      ++lines;
      repeated += !seen.insert(line).second;
    }
    start = end + 1;
  }
  return lines ? static_cast<double>(repeated) / static_cast<double>(lines) : 0.0;
}

void StatsAccumulator::add(const std::string& doc) {
  if (doc.find_first_not_of(" \t\r\n\v\f") == std::string::npos) return;  // blank text is not a document
  ++st_.documents;
  if (!seen_.insert(fnv1a64(doc)).second) ++dup_docs_;
  st_.bytes += static_cast<int64_t>(doc.size());
  st_.chars += count_code_points(doc);
  auto words = split_words(doc);
  auto [rep, total] = ngram_counts(words, 3);
  repeated_trigrams_ += rep;
  trigrams_ += total;
  for (auto& w : words) {
    ++st_.words;
    ++freq_[w];
  }
}

CorpusStats StatsAccumulator::finish(size_t top_k) const {
  CorpusStats st = st_;
  st.vocabulary = static_cast<int64_t>(freq_.size());
  st.type_token_ratio = st.words ? static_cast<double>(st.vocabulary) / static_cast<double>(st.words) : 0.0;
  st.duplicate_fraction = st.documents ? static_cast<double>(dup_docs_) / static_cast<double>(st.documents) : 0.0;
  st.ngram_repetition = trigrams_ ? static_cast<double>(repeated_trigrams_) / static_cast<double>(trigrams_) : 0.0;
  double h = 0;
  for (const auto& [w, c] : freq_) {
    double p = static_cast<double>(c) / static_cast<double>(st.words);
    h -= p * std::log2(p);
  }
  st.unigram_entropy_bits_per_word = h;
  st.unigram_entropy_bits_per_char = st.chars ? h * static_cast<double>(st.words) / static_cast<double>(st.chars) : 0.0;
  std::vector<std::pair<std::string, int64_t>> all(freq_.begin(), freq_.end());
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) {
    return a.second != b.second ? a.second > b.second : a.first < b.first;
  });
  // Zipf: least squares of log f on log r over the top 1000 ranks.
  const size_t n = std::min<size_t>(all.size(), 1000);
  if (n >= 2) {
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (size_t r = 0; r < n; ++r) {
      const double x = std::log(static_cast<double>(r + 1)), y = std::log(static_cast<double>(all[r].second));
      sx += x, sy += y, sxx += x * x, sxy += x * y;
    }
    st.zipf_slope = (n * sxy - sx * sy) / (n * sxx - sx * sx);
  }
  if (all.size() > top_k) all.resize(top_k);
  st.top_words = std::move(all);
  return st;
}

CorpusStats corpus_stats(const std::vector<std::string>& docs, size_t top_k) {
  StatsAccumulator acc;
  for (const auto& d : docs) acc.add(d);
  return acc.finish(top_k);
}

std::string stats_table(const CorpusStats& s) {
  char buf[160];
  std::string out;
  auto row = [&](const char* k, const std::string& v) {
    std::snprintf(buf, sizeof buf, "  %-34s %s\n", k, v.c_str());
    out += buf;
  };
  row("documents", std::to_string(s.documents));
  row("bytes", std::to_string(s.bytes));
  row("characters", std::to_string(s.chars));
  row("words", std::to_string(s.words));
  row("vocabulary (distinct words)", std::to_string(s.vocabulary));
  row("type-token ratio", fixed_digits(s.type_token_ratio, 4));
  row("unigram entropy, bits/word", fixed_digits(s.unigram_entropy_bits_per_word, 3));
  row("unigram entropy, bits/char", fixed_digits(s.unigram_entropy_bits_per_char, 3));
  row("Zipf slope (top 1000 ranks)", fixed_digits(s.zipf_slope, 3));
  row("repeated word 3-grams", fixed_digits(s.ngram_repetition, 4));
  row("exact duplicate documents", fixed_digits(s.duplicate_fraction, 4));
  std::string top;
  for (size_t i = 0; i < s.top_words.size() && i < 10; ++i)
    top += (i ? ", " : "") + s.top_words[i].first + " " + std::to_string(s.top_words[i].second);
  row("top words", top);
  return out;
}

CorpusStats stats_from_json(const nlohmann::json& j) {
  CorpusStats s;
  try {
    s.documents = j.at("documents").get<int64_t>();
    s.bytes = j.at("bytes").get<int64_t>();
    s.chars = j.at("chars").get<int64_t>();
    s.words = j.at("words").get<int64_t>();
    s.vocabulary = j.at("vocabulary").get<int64_t>();
    s.type_token_ratio = j.at("type_token_ratio").get<double>();
    s.unigram_entropy_bits_per_word = j.at("unigram_entropy_bits_per_word").get<double>();
    s.unigram_entropy_bits_per_char = j.at("unigram_entropy_bits_per_char").get<double>();
    s.zipf_slope = j.at("zipf_slope").get<double>();
    s.ngram_repetition = j.at("ngram_repetition").get<double>();
    s.duplicate_fraction = j.at("duplicate_fraction").get<double>();
    for (const auto& w : j.at("top_words")) s.top_words.emplace_back(w.at(0).get<std::string>(), w.at(1).get<int64_t>());
  } catch (const nlohmann::json::exception& e) {
    throw DataError(fmt("corpus statistics: missing or mistyped field (", e.what(), ")"));
  }
  return s;
}

nlohmann::ordered_json stats_json(const CorpusStats& s) {
  nlohmann::ordered_json top = nlohmann::ordered_json::array();
  for (const auto& [w, c] : s.top_words) top.push_back({w, c});
  return {{"documents", s.documents},
          {"bytes", s.bytes},
          {"chars", s.chars},
          {"words", s.words},
          {"vocabulary", s.vocabulary},
          {"type_token_ratio", s.type_token_ratio},
          {"unigram_entropy_bits_per_word", s.unigram_entropy_bits_per_word},
          {"unigram_entropy_bits_per_char", s.unigram_entropy_bits_per_char},
          {"zipf_slope", s.zipf_slope},
          {"ngram_repetition", s.ngram_repetition},
          {"duplicate_fraction", s.duplicate_fraction},
          {"top_words", top}};
}

}  // namespace dsforge::data
