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
#include <memory>
#include <sstream>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unordered_map>
#include <unordered_set>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/log.h"
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

std::string clean_text(const std::string& text, bool* had_invalid) {
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

namespace {
int64_t count_code_points(const std::string& s) {
  int64_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

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
    if (!line.empty()) {
      ++lines;
      repeated += !seen.insert(line).second;
    }
    start = end + 1;
  }
  return lines ? static_cast<double>(repeated) / static_cast<double>(lines) : 0.0;
}

void StatsAccumulator::add(const std::string& doc) {
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
  auto num = [](double v, int prec) {
    char b[64];
    std::snprintf(b, sizeof b, "%.*f", prec, v);
    return std::string(b);
  };
  row("documents", std::to_string(s.documents));
  row("bytes", std::to_string(s.bytes));
  row("characters", std::to_string(s.chars));
  row("words", std::to_string(s.words));
  row("vocabulary (distinct words)", std::to_string(s.vocabulary));
  row("type-token ratio", num(s.type_token_ratio, 4));
  row("unigram entropy, bits/word", num(s.unigram_entropy_bits_per_word, 3));
  row("unigram entropy, bits/char", num(s.unigram_entropy_bits_per_char, 3));
  row("Zipf slope (top 1000 ranks)", num(s.zipf_slope, 3));
  row("repeated word 3-grams", num(s.ngram_repetition, 4));
  row("exact duplicate documents", num(s.duplicate_fraction, 4));
  std::string top;
  for (size_t i = 0; i < s.top_words.size() && i < 10; ++i)
    top += (i ? ", " : "") + s.top_words[i].first + " " + std::to_string(s.top_words[i].second);
  row("top words", top);
  return out;
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

namespace {

// Appends lines to a temporary file and renames it into place on commit().
class LineWriter {
 public:
  explicit LineWriter(std::string path) : path_(std::move(path)), tmp_(path_ + ".tmp"), out_(tmp_, std::ios::binary) {
    if (!out_) throw IoError(fmt(tmp_, ": cannot create"));
  }
  void write(const std::string& line) { out_ << line << '\n'; }
  void commit() {
    out_.close();
    if (!out_) throw IoError(fmt(tmp_, ": write failed"));
    std::filesystem::rename(tmp_, path_);
  }

 private:
  std::string path_, tmp_;
  std::ofstream out_;
};

// data.min_word_count: rewrite a split, replacing words rarer than the threshold in `freq`.
void replace_rare_words(const std::string& path, const std::unordered_map<std::string, int64_t>& freq, int64_t min_count,
                        const std::string& unk) {
  std::ifstream in(path);
  LineWriter out(path);
  for (std::string line; std::getline(in, line);) {
    std::string result, word;
    auto flush = [&]() {
      if (word.empty()) return;
      std::string lower = word;
      for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      auto it = freq.find(lower);
      result += (it == freq.end() || it->second < min_count) ? unk : word;
      word.clear();
    };
    for (char ch : line) {
      const auto c = static_cast<unsigned char>(ch);
      if (std::isalnum(c) || c == '\'' || c >= 0x80) {
        word.push_back(ch);
      } else {
        flush();
        result.push_back(ch);
      }
    }
    flush();
    out.write(result);
  }
  out.commit();
}
}  // namespace

PreparedCorpus prepare_corpus(const RunConfig& cfg) {
  const auto& dc = cfg.data;
  const std::string dir = path_join(cfg.run.out_dir, "data");
  PreparedCorpus out;
  out.train_path = path_join(dir, "train.txt");
  out.val_path = path_join(dir, "val.txt");
  out.stats_path = path_join(dir, "stats.json");
  const std::string stamp = path_join(dir, "DONE");
  const std::string hash = section_hash(cfg, "data");
  if (file_exists(stamp) && read_file(stamp) == hash && file_exists(out.train_path) && file_exists(out.val_path)) {
    auto j = nlohmann::json::parse(read_file(out.stats_path));
    out.train_docs = j["split"]["train_documents"];
    out.val_docs = j["split"]["val_documents"];
    log_info("data: reusing ", dir, " (", out.train_docs, " train / ", out.val_docs, " val documents)");
    return out;
  }
  make_dirs(dir);

  // Stream: each document is read, filtered, deduplicated and written before the next is read.
  CleanCounts& cc = out.counts;
  std::unordered_set<uint64_t> seen;
  std::unique_ptr<NearDedup> near;
  if (dc.near_dedup)
    near = std::make_unique<NearDedup>(NearDedupOptions{dc.shingle, dc.shingle_size, dc.minhash_perm, dc.minhash_bands,
                                                        dc.near_dedup_threshold, static_cast<uint64_t>(cfg.run.seed)});
  StatsAccumulator stats;
  std::unordered_map<std::string, int64_t> train_freq;
  LineWriter train(out.train_path), val(out.val_path);
  auto process = [&](std::string&& doc) {
    if (dc.max_docs > 0 && cc.input >= dc.max_docs) return;
    ++cc.input;
    if (repeated_line_fraction(doc) > dc.max_repeated_line_fraction) { ++cc.repeated_lines; return; }
    bool invalid = false;
    std::string c = clean_text(doc, &invalid);
    cc.invalid_utf8 += invalid;
    const int64_t n = count_code_points(c);
    if (n < dc.min_chars) { ++cc.too_short; return; }
    if (n > dc.max_chars) { ++cc.too_long; return; }
    if (ngram_repetition(c) > dc.max_ngram_repetition) { ++cc.repetitive; return; }
    if (!seen.insert(fnv1a64(c)).second) { ++cc.duplicates; return; }
    if (near && !near->insert(c)) { ++cc.near_duplicates; return; }
    ++cc.kept;
    if (is_validation(c, dc.val_fraction, static_cast<uint64_t>(cfg.run.seed))) {
      val.write(c);
      ++out.val_docs;
    } else {
      stats.add(c);
      if (dc.min_word_count > 0)
        for (auto& w : split_words(c)) ++train_freq[w];
      train.write(c);
      ++out.train_docs;
    }
  };
  if (dc.source == "wordnet") {
    for (auto& d : read_wordnet_glosses(dc.wordnet_dir)) process(std::move(d));
  } else {
    IngestOptions io{dc.jsonl_field, dc.invalid_utf8 == "drop" ? InvalidUtf8::kDrop : InvalidUtf8::kRepair};
    IngestCounts ic = for_each_document(expand_inputs(dc.paths), io, process);
    cc.dropped_invalid_utf8 = ic.dropped_invalid;
    cc.invalid_utf8 += ic.invalid_utf8 - ic.dropped_invalid;  // repaired ones were counted by clean_text as valid
    cc.input += ic.dropped_invalid;
  }
  train.commit();
  val.commit();
  if (out.train_docs == 0 || out.val_docs == 0)
    throw DataError(fmt("data: after cleaning, ", out.train_docs, " train and ", out.val_docs,
                        " validation documents remain (need at least one of each; input had ", cc.input, ")"));
  if (dc.min_word_count > 0) {  // word-level vocabularies: rare words -> unk_token, counted on train only
    replace_rare_words(out.train_path, train_freq, dc.min_word_count, dc.unk_token);
    replace_rare_words(out.val_path, train_freq, dc.min_word_count, dc.unk_token);
  }

  CorpusStats st = stats.finish();
  nlohmann::json j;
  j["source"] = dc.source;
  j["filters"] = {{"input", cc.input},
                  {"invalid_utf8", cc.invalid_utf8},
                  {"dropped_invalid_utf8", cc.dropped_invalid_utf8},
                  {"repeated_lines", cc.repeated_lines},
                  {"repetitive_ngrams", cc.repetitive},
                  {"too_short", cc.too_short},
                  {"too_long", cc.too_long},
                  {"exact_duplicates", cc.duplicates},
                  {"near_duplicates", cc.near_duplicates},
                  {"kept", cc.kept}};
  j["split"] = {{"train_documents", out.train_docs}, {"val_documents", out.val_docs}, {"val_fraction", dc.val_fraction}};
  j["train"] = stats_json(st);
  write_file_atomic(out.stats_path, j.dump(2) + "\n");
  write_file_atomic(stamp, hash);

  log_info("data: ", cc.input, " documents in, ", cc.kept, " kept (", cc.too_short, " too short, ", cc.too_long,
           " too long, ", cc.repetitive, " repetitive, ", cc.duplicates, " exact and ", cc.near_duplicates,
           " near duplicates, ", cc.invalid_utf8 + cc.dropped_invalid_utf8, " with invalid UTF-8)");
  log_info("data: train ", out.train_docs, " / val ", out.val_docs, " documents; ", st.words, " words, vocabulary ",
           st.vocabulary, ", unigram entropy ", st.unigram_entropy_bits_per_word, " bits/word, Zipf slope ", st.zipf_slope);
  return out;
}

}  // namespace dsforge::data
