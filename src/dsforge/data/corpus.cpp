#include "dsforge/data/corpus.h"

#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <unicode/utf8.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unordered_map>
#include <unordered_set>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/log.h"

namespace dsforge::data {

std::vector<std::string> read_wordnet_glosses(const std::string& dir) {
  std::vector<std::string> docs;
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
      // offset lex_filenum ss_type w_cnt(hex) word lex_id ... | gloss
      size_t bar = line.find(" | ");
      if (bar == std::string::npos) throw DataError(fmt(path, ":", lineno, ": expected ' | ' before the gloss"));
      std::istringstream fields(line.substr(0, bar));
      std::string offset, lexfile, sstype, wcnt, word;
      if (!(fields >> offset >> lexfile >> sstype >> wcnt >> word))
        throw DataError(fmt(path, ":", lineno, ": expected 'offset lex_filenum ss_type w_cnt word ...'"));
      size_t paren = word.find('(');  // adjective markers: "beautiful(a)"
      if (paren != std::string::npos) word.resize(paren);
      std::replace(word.begin(), word.end(), '_', ' ');
      std::string gloss = line.substr(bar + 3);
      size_t example = gloss.find("; \"");
      if (example != std::string::npos) gloss.resize(example);
      while (!gloss.empty() && (gloss.back() == ' ' || gloss.back() == ';')) gloss.pop_back();
      if (gloss.empty()) continue;
      docs.push_back(word + ": " + gloss);
    }
  }
  return docs;
}

std::vector<std::string> read_text_lines(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError(fmt(path, ": cannot open input text file"));
  std::vector<std::string> docs;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) docs.push_back(line);
  }
  return docs;
}

std::string clean_text(const std::string& text, bool* had_invalid) {
  // Validate UTF-8 ourselves: ICU's fromUTF8 repairs silently, and we want the count.
  bool invalid = false;
  {
    const auto* s = reinterpret_cast<const uint8_t*>(text.data());
    int32_t i = 0, n = static_cast<int32_t>(text.size());
    while (i < n) {
      UChar32 c;
      U8_NEXT(s, i, n, c);
      if (c < 0) { invalid = true; break; }
    }
  }
  if (had_invalid) *had_invalid = invalid;
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* nfkc = icu::Normalizer2::getNFKCInstance(status);
  if (U_FAILURE(status)) throw Error(fmt("ICU: cannot load the NFKC normaliser (", u_errorName(status), ")"));
  icu::UnicodeString u = icu::UnicodeString::fromUTF8(text);  // invalid bytes become U+FFFD
  icu::UnicodeString norm = nfkc->normalize(u, status);
  if (U_FAILURE(status)) throw Error(fmt("ICU: NFKC normalisation failed (", u_errorName(status), ")"));
  std::string utf8;
  norm.toUTF8String(utf8);
  // Control characters and every Unicode space become one ASCII space; runs collapse; trimmed.
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

bool is_validation(const std::string& doc, double val_fraction, uint64_t seed) {
  uint64_t h = fnv1a64(doc) ^ (seed * 0x9E3779B97F4A7C15ull);
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return static_cast<double>(h % 1000000) < val_fraction * 1e6;
}

namespace {
std::vector<std::string> split_words(const std::string& doc) {
  // Words are maximal runs of letters, digits and apostrophes; lower-cased (ASCII fold is enough
  // for statistics; non-ASCII bytes stay part of words).
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

int64_t count_code_points(const std::string& s) {
  int64_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}
}  // namespace

CorpusStats corpus_stats(const std::vector<std::string>& docs, size_t top_k) {
  CorpusStats st;
  std::unordered_map<std::string, int64_t> freq;
  for (const auto& d : docs) {
    ++st.documents;
    st.bytes += static_cast<int64_t>(d.size());
    st.chars += count_code_points(d);
    for (auto& w : split_words(d)) {
      ++st.words;
      ++freq[w];
    }
  }
  st.vocabulary = static_cast<int64_t>(freq.size());
  st.type_token_ratio = st.words ? static_cast<double>(st.vocabulary) / st.words : 0.0;
  double h = 0;
  for (const auto& [w, c] : freq) {
    double p = static_cast<double>(c) / st.words;
    h -= p * std::log2(p);
  }
  st.unigram_entropy_bits_per_word = h;
  st.unigram_entropy_bits_per_char = st.chars ? h * st.words / st.chars : 0.0;
  std::vector<std::pair<std::string, int64_t>> all(freq.begin(), freq.end());
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) {
    return a.second != b.second ? a.second > b.second : a.first < b.first;
  });
  if (all.size() > top_k) all.resize(top_k);
  st.top_words = std::move(all);
  return st;
}

namespace {
nlohmann::json stats_json(const CorpusStats& s) {
  nlohmann::json top = nlohmann::json::array();
  for (const auto& [w, c] : s.top_words) top.push_back({w, c});
  return {{"documents", s.documents},
          {"bytes", s.bytes},
          {"chars", s.chars},
          {"words", s.words},
          {"vocabulary", s.vocabulary},
          {"type_token_ratio", s.type_token_ratio},
          {"unigram_entropy_bits_per_word", s.unigram_entropy_bits_per_word},
          {"unigram_entropy_bits_per_char", s.unigram_entropy_bits_per_char},
          {"top_words", top}};
}

std::string data_inputs_hash(const RunConfig& cfg) {
  std::string key = fmt(cfg.data.source, "|", cfg.data.wordnet_dir, "|", cfg.data.val_fraction, "|", cfg.data.max_docs,
                        "|", cfg.data.min_chars, "|", cfg.data.max_chars, "|", cfg.run.seed);
  for (const auto& p : cfg.data.paths) key += "|" + p;
  return hex64(fnv1a64(key));
}
}  // namespace

PreparedCorpus prepare_corpus(const RunConfig& cfg) {
  const std::string dir = path_join(cfg.run.out_dir, "data");
  PreparedCorpus out;
  out.train_path = path_join(dir, "train.txt");
  out.val_path = path_join(dir, "val.txt");
  out.stats_path = path_join(dir, "stats.json");
  const std::string stamp = path_join(dir, "DONE");
  const std::string hash = data_inputs_hash(cfg);
  if (file_exists(stamp) && read_file(stamp) == hash && file_exists(out.train_path) && file_exists(out.val_path)) {
    auto j = nlohmann::json::parse(read_file(out.stats_path));
    out.train_docs = j["split"]["train_documents"];
    out.val_docs = j["split"]["val_documents"];
    log_info("data: reusing ", dir, " (", out.train_docs, " train / ", out.val_docs, " val documents)");
    return out;
  }
  make_dirs(dir);

  std::vector<std::string> raw;
  if (cfg.data.source == "wordnet") {
    raw = read_wordnet_glosses(cfg.data.wordnet_dir);
  } else {
    for (const auto& p : cfg.data.paths) {
      auto docs = read_text_lines(p);
      raw.insert(raw.end(), std::make_move_iterator(docs.begin()), std::make_move_iterator(docs.end()));
    }
  }
  if (cfg.data.max_docs > 0 && static_cast<int64_t>(raw.size()) > cfg.data.max_docs) raw.resize(cfg.data.max_docs);

  CleanCounts& cc = out.counts;
  std::unordered_set<uint64_t> seen;
  std::vector<std::string> train, val;
  for (const auto& doc : raw) {
    ++cc.input;
    bool invalid = false;
    std::string c = clean_text(doc, &invalid);
    cc.invalid_utf8 += invalid;
    int64_t n = count_code_points(c);
    if (n < cfg.data.min_chars) { ++cc.too_short; continue; }
    if (n > cfg.data.max_chars) { ++cc.too_long; continue; }
    if (!seen.insert(fnv1a64(c)).second) { ++cc.duplicates; continue; }
    ++cc.kept;
    (is_validation(c, cfg.data.val_fraction, static_cast<uint64_t>(cfg.run.seed)) ? val : train).push_back(std::move(c));
  }
  if (train.empty() || val.empty())
    throw DataError(fmt("data: after cleaning, ", train.size(), " train and ", val.size(),
                        " validation documents remain (need at least one of each; input had ", cc.input, ")"));

  auto write_lines = [](const std::string& path, const std::vector<std::string>& docs) {
    std::string text;
    for (const auto& d : docs) text += d + "\n";
    write_file_atomic(path, text);
  };
  write_lines(out.train_path, train);
  write_lines(out.val_path, val);
  out.train_docs = static_cast<int64_t>(train.size());
  out.val_docs = static_cast<int64_t>(val.size());

  CorpusStats st = corpus_stats(train);
  nlohmann::json j;
  j["source"] = cfg.data.source;
  j["filters"] = {{"input", cc.input},           {"invalid_utf8_repaired", cc.invalid_utf8},
                  {"too_short", cc.too_short},   {"too_long", cc.too_long},
                  {"exact_duplicates", cc.duplicates}, {"kept", cc.kept}};
  j["split"] = {{"train_documents", out.train_docs}, {"val_documents", out.val_docs},
                {"val_fraction", cfg.data.val_fraction}};
  j["train"] = stats_json(st);
  write_file_atomic(out.stats_path, j.dump(2) + "\n");
  write_file_atomic(stamp, hash);

  log_info("data: ", cc.input, " documents in, ", cc.kept, " kept (", cc.too_short, " too short, ", cc.too_long,
           " too long, ", cc.duplicates, " duplicates, ", cc.invalid_utf8, " repaired UTF-8)");
  log_info("data: train ", out.train_docs, " / val ", out.val_docs, " documents; ", st.words, " words, vocabulary ",
           st.vocabulary, ", unigram entropy ", st.unigram_entropy_bits_per_word, " bits/word");
  return out;
}

}  // namespace dsforge::data
