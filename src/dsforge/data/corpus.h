// Corpus preparation: read documents, clean them, drop exact duplicates, split train/val
// deterministically, and measure the corpus.
//
// A document is one line of text. The built-in corpus is the glosses of Debian's `wordnet-base`,
// one "word: definition" line per synset. Output, under `<run>/data/`: train.txt, val.txt (one
// document per line) and stats.json.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "dsforge/core/run_config.h"

namespace dsforge::data {

// Parses WordNet 3.0 data.{noun,verb,adj,adv} in `dir` into "lemma: definition" lines (examples
// after the definition are left out). Throws DataError naming the file and line on malformed input.
std::vector<std::string> read_wordnet_glosses(const std::string& dir);
// One document per non-empty line.
std::vector<std::string> read_text_lines(const std::string& path);

struct CleanCounts {
  int64_t input = 0;
  int64_t invalid_utf8 = 0;   // documents that had invalid bytes (repaired with U+FFFD)
  int64_t too_short = 0;
  int64_t too_long = 0;
  int64_t duplicates = 0;     // exact duplicates of an earlier document after cleaning
  int64_t kept = 0;
};

// NFKC, control characters to spaces, whitespace runs collapsed, trimmed. Sets *had_invalid when
// the input was not valid UTF-8.
std::string clean_text(const std::string& text, bool* had_invalid = nullptr);

struct CorpusStats {
  int64_t documents = 0;
  int64_t bytes = 0;
  int64_t chars = 0;          // Unicode code points
  int64_t words = 0;
  int64_t vocabulary = 0;     // distinct lower-cased words
  double type_token_ratio = 0;
  double unigram_entropy_bits_per_word = 0;
  double unigram_entropy_bits_per_char = 0;
  std::vector<std::pair<std::string, int64_t>> top_words;
};
CorpusStats corpus_stats(const std::vector<std::string>& docs, size_t top_k = 20);

struct PreparedCorpus {
  std::string train_path, val_path, stats_path;
  int64_t train_docs = 0, val_docs = 0;
  CleanCounts counts;
};

// Whether a document belongs to validation: a seeded hash of its text, so the split does not
// depend on order and never moves a document between runs.
bool is_validation(const std::string& doc, double val_fraction, uint64_t seed);

// Runs the whole stage into `<out_dir>/data`; skips the work when it was done with the same inputs.
PreparedCorpus prepare_corpus(const RunConfig& cfg);

}  // namespace dsforge::data
