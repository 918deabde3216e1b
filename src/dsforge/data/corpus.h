// Corpus preparation: read documents, clean them, filter, drop exact and near duplicates, split
// train/val(/test), and measure the corpus.
//
// A document is a line, a paragraph or a whole file of text (data.txt_documents), or a JSONL
// record's text; it may span lines. The built-in corpus is the glosses of Debian's `wordnet-base`,
// one "word: definition" document per synset. Output, under `<run>/data/`: train.jsonl, val.jsonl
// and, with data.test_paths, test.jsonl (one {"text": ...} object per line, see splits.h), and
// stats.json.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <unordered_map>
#include <unordered_set>
#include <string>
#include <string_view>
#include <vector>

#include "dsforge/core/run_config.h"

namespace dsforge::data {

// Parses WordNet 3.0 data.{noun,verb,adj,adv} in `dir` into "lemma: definition" lines (examples
// after the definition are left out). Throws DataError naming the file and line on malformed input.
std::vector<std::string> read_wordnet_glosses(const std::string& dir);

// One synset of WordNet's data.* files: its words as written (underscores kept, adjective markers
// like "(a)" removed) and its full gloss. Throws DataError naming the file and line.
struct WordNetSynset {
  std::vector<std::string> words;
  std::string gloss;
  int lex_filenum = 0;  // the lexicographer file (0-44): wordnet_lexname() names it
};
// "noun.animal", "verb.motion", ...: the 45 lexicographer files of WordNet 3.0 (lexnames(5WN)).
const std::string& wordnet_lexname(int lex_filenum);
void for_each_wordnet_synset(const std::string& dir, const std::function<void(const WordNetSynset&)>& fn);
// The definition (the gloss up to its first ';') of each word's first noun sense, the most frequent one
// (index.noun lists a lemma's synsets by frequency). DataError naming index.noun and the word when
// WordNet has no such noun.
std::map<std::string, std::string> wordnet_first_definitions(const std::string& dir, const std::vector<std::string>& words);
struct CleanCounts {
  int64_t input = 0;
  int64_t invalid_utf8 = 0;   // documents that had invalid bytes (repaired, or dropped per data.invalid_utf8)
  int64_t dropped_invalid_utf8 = 0;
  int64_t repeated_lines = 0; // too many repeated lines
  int64_t repetitive = 0;     // too many repeated word 3-grams
  int64_t too_short = 0;
  int64_t too_long = 0;
  int64_t duplicates = 0;     // exact duplicates of an earlier document after cleaning
  int64_t near_duplicates = 0;
  int64_t contamination = 0;  // training documents equal or near to a validation/test document
  int64_t binary_files_skipped = 0;
  int64_t kept = 0;
};

// Share of word 3-grams of `doc` that repeat an earlier 3-gram of the same document.
double ngram_repetition(const std::string& doc, int n = 3);
// Share of non-blank lines of `text` that repeat an earlier line (blank lines are ignored).
double repeated_line_fraction(const std::string& text);

struct CleanOptions {
  bool collapse_whitespace = false;  // every whitespace run (newlines too) -> one space
  int max_blank_lines = 2;           // longer runs of blank lines are cut to this many
};

// NFKC (ICU), then whitespace. By default lines survive: "\r\n", "\r" and the Unicode line and
// paragraph separators become "\n", tabs and indentation stay, trailing spaces of each line go,
// runs of blank lines are capped at max_blank_lines, leading blank lines and trailing whitespace of
// the document go; other control characters become spaces. With collapse_whitespace, every
// whitespace or control run becomes one space and the text is trimmed (one-line documents). Sets
// *had_invalid when the input was not valid UTF-8 (invalid bytes become U+FFFD).
std::string clean_text(const std::string& text, const CleanOptions& opts = {}, bool* had_invalid = nullptr);

struct CorpusStats {
  int64_t documents = 0;
  int64_t bytes = 0;
  int64_t chars = 0;          // Unicode code points
  int64_t words = 0;
  int64_t vocabulary = 0;     // distinct lower-cased words
  double type_token_ratio = 0;
  double unigram_entropy_bits_per_word = 0;
  double unigram_entropy_bits_per_char = 0;
  double zipf_slope = 0;          // least-squares slope of log frequency on log rank (top 1000 ranks)
  double ngram_repetition = 0;    // share of word 3-grams repeating within their document
  double duplicate_fraction = 0;  // exact duplicate documents / documents seen
  std::vector<std::pair<std::string, int64_t>> top_words;
};

// Streaming statistics: memory grows with the vocabulary, not with the corpus.
class StatsAccumulator {
 public:
  void add(const std::string& doc);
  CorpusStats finish(size_t top_k = 20) const;

 private:
  CorpusStats st_;
  std::unordered_map<std::string, int64_t> freq_;
  std::unordered_set<uint64_t> seen_;
  int64_t dup_docs_ = 0, trigrams_ = 0, repeated_trigrams_ = 0;
};
CorpusStats corpus_stats(const std::vector<std::string>& docs, size_t top_k = 20);
std::string stats_table(const CorpusStats& s);
nlohmann::ordered_json stats_json(const CorpusStats& s);
// The inverse of stats_json (the "train" object of stats.json); throws DataError on a missing field.
CorpusStats stats_from_json(const nlohmann::json& j);
// Unicode code points of UTF-8 text (what min_chars / max_chars count).
int64_t count_code_points(std::string_view s);
// Words as the statistics count them: runs of letters, digits, apostrophes and non-ASCII, lower-cased.
std::vector<std::string> split_words(const std::string& doc);

struct PreparedCorpus {
  std::string train_path, val_path, stats_path;
  std::string test_path;  // empty without data.test_paths
  int64_t train_docs = 0, val_docs = 0, test_docs = 0;
  CleanCounts counts;
};

// Whether a document belongs to validation: a seeded hash of its text, so the split does not
// depend on order and never moves a document between runs.
bool is_validation(const std::string& doc, double val_fraction, uint64_t seed);

// Runs the whole stage into `<out_dir>/data`; skips the work when it was done with the same inputs.
// Validation comes from a seeded hash split of data.paths, or from data.val_paths as given (then
// all of data.paths trains); data.test_paths gives a test split. Held-out files are cleaned like
// the rest but not filtered or deduplicated; training documents equal to one of them after
// cleaning, or near one per the MinHash settings, are dropped and counted as contamination.
PreparedCorpus prepare_corpus(const RunConfig& cfg);

}  // namespace dsforge::data
