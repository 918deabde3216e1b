// Streamed corpus reading and the vocabulary for word embeddings (word2vec, GloVe).
//
// A corpus is one or more UTF-8 text files; a line is a sentence (context windows never cross a line,
// as in gensim's LineSentence) and words are separated by ASCII whitespace. Nothing is held in memory
// beyond one read buffer per reader: each training thread reads its own byte slice of every file.
//
//   Vocab v = build_vocab({"a.txt"}, /*min_count=*/5);
//   LineReader r("a.txt", 0, file_size("a.txt"));
//   std::string_view line;
//   while (r.next(line)) for_each_word(line, [&](std::string_view w) { v.find(w); });
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

namespace dsforge::embed {

// Lines whose first byte lies in [begin, end) of one file, read through a fixed buffer (a line longer
// than the buffer grows it). Slices [k*n/T, (k+1)*n/T) for k = 0..T-1 cover every line exactly once.
class LineReader {
 public:
  LineReader(const std::string& path, uint64_t begin, uint64_t end, size_t buffer_bytes = 1 << 20);
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;
  // The next line without its '\n' (and '\r'); false at the end of the slice. The view stays valid
  // until the next call. line_number() is 1-based within the file only when the slice starts at 0.
  bool next(std::string_view& line);
  uint64_t line_number() const { return line_no_; }

 private:
  bool fill();
  std::FILE* f_ = nullptr;
  std::string path_;
  std::vector<char> buf_;
  size_t lo_ = 0, hi_ = 0;     // unread bytes buf_[lo_, hi_)
  uint64_t pos_ = 0;           // file offset of buf_[lo_]
  uint64_t end_ = 0;
  bool eof_ = false;
  uint64_t line_no_ = 0;
};

uint64_t file_size_of(const std::string& path);  // throws DataError naming a missing file

inline bool is_word_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

template <typename F>
void for_each_word(std::string_view line, F&& f) {
  size_t i = 0;
  const size_t n = line.size();
  while (i < n) {
    while (i < n && is_word_space(line[i])) ++i;
    size_t j = i;
    while (j < n && !is_word_space(line[j])) ++j;
    if (j > i) f(line.substr(i, j - i));
    i = j;
  }
}

// Word -> index with open addressing over string_view keys (no allocation per lookup).
class WordTable {
 public:
  static constexpr int32_t kMissing = -1;
  int32_t find(std::string_view w) const;
  // Index of `w`, adding it with count 0 when new; then adds `by` to its count.
  int32_t add(std::string_view w, int64_t by = 1);
  size_t size() const { return words_.size(); }
  const std::vector<std::string>& words() const { return words_; }
  const std::vector<int64_t>& counts() const { return counts_; }
  // Keeps only words with count >= min_count (order kept) and rebuilds the index.
  void prune(int64_t min_count);
  // Sorts by count, most frequent first (ties by first appearance), and rebuilds the index.
  void sort_by_count();
  void clear();

 private:
  void rehash(size_t slots);
  std::vector<std::string> words_;
  std::vector<int64_t> counts_;
  std::vector<int32_t> slots_;  // -1 empty, else index into words_
};

uint64_t hash_word(std::string_view w);

struct Vocab {
  WordTable table;          // sorted by count, most frequent first
  int64_t total_words = 0;  // occurrences of kept words in the corpus
  int64_t raw_words = 0;    // all tokens read
  int64_t raw_types = 0;    // distinct tokens read
  int64_t lines = 0;
  size_t size() const { return table.size(); }
};

// One streamed pass: counts every token, keeps those seen >= min_count times. While counting, when
// the table passes max_types entries the rarest words are dropped (word2vec's ReduceVocab), so memory
// stays bounded on huge corpora. Throws DataError naming the files when no word survives.
Vocab build_vocab(const std::vector<std::string>& files, int64_t min_count, size_t max_types = 30'000'000);

}  // namespace dsforge::embed
