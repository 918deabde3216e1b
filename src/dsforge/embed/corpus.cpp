#include "dsforge/embed/corpus.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <sys/stat.h>

#include "dsforge/core/error.h"

namespace dsforge::embed {

uint64_t file_size_of(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw DataError(fmt(path, ": no such file"));
  if (S_ISDIR(st.st_mode)) throw DataError(fmt(path, ": is a directory (expected a text file)"));
  return static_cast<uint64_t>(st.st_size);
}

LineReader::LineReader(const std::string& path, uint64_t begin, uint64_t end, size_t buffer_bytes)
    : path_(path), buf_(std::max<size_t>(buffer_bytes, 4096)), pos_(begin), end_(end) {
  f_ = std::fopen(path.c_str(), "rb");
  if (!f_) throw DataError(fmt(path, ": cannot open"));
  if (begin > 0) {
    // The slice starts at the first line beginning at or after `begin`: skip the rest of the line
    // that covers byte begin-1 (if that byte is '\n', nothing is skipped).
    if (std::fseek(f_, static_cast<long>(begin - 1), SEEK_SET) != 0) throw DataError(fmt(path, ": cannot seek"));
    pos_ = begin - 1;
    for (;;) {
      if (lo_ == hi_ && !fill()) break;
      const char* nl = static_cast<const char*>(std::memchr(buf_.data() + lo_, '\n', hi_ - lo_));
      if (nl) {
        const size_t skip = static_cast<size_t>(nl - (buf_.data() + lo_)) + 1;
        lo_ += skip;
        pos_ += skip;
        break;
      }
      pos_ += hi_ - lo_;
      lo_ = hi_;
    }
  }
}

LineReader::~LineReader() {
  if (f_) std::fclose(f_);
}

bool LineReader::fill() {
  if (eof_) return false;
  if (lo_ > 0) {  // keep the unread tail at the front
    std::memmove(buf_.data(), buf_.data() + lo_, hi_ - lo_);
    hi_ -= lo_;
    lo_ = 0;
  }
  if (hi_ == buf_.size()) buf_.resize(buf_.size() * 2);
  const size_t got = std::fread(buf_.data() + hi_, 1, buf_.size() - hi_, f_);
  if (got == 0) {
    eof_ = true;
    return false;
  }
  hi_ += got;
  return true;
}

bool LineReader::next(std::string_view& line) {
  if (pos_ >= end_) return false;
  size_t scanned = 0;
  for (;;) {
    const char* start = buf_.data() + lo_;
    const char* nl = static_cast<const char*>(std::memchr(start + scanned, '\n', hi_ - lo_ - scanned));
    if (nl || (eof_ && hi_ > lo_)) {
      size_t len = nl ? static_cast<size_t>(nl - start) : hi_ - lo_;
      const size_t consumed = nl ? len + 1 : len;
      if (len > 0 && start[len - 1] == '\r') --len;
      line = std::string_view(start, len);
      lo_ += consumed;
      pos_ += consumed;
      ++line_no_;
      return true;
    }
    if (eof_) return false;
    scanned = hi_ - lo_;
    if (!fill() && hi_ == lo_) return false;
  }
}

// ---------------------------------------------------------------- WordTable
uint64_t hash_word(std::string_view w) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (char c : w) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  return h ^ (h >> 29);
}

int32_t WordTable::find(std::string_view w) const {
  if (slots_.empty()) return kMissing;
  const size_t mask = slots_.size() - 1;
  for (size_t s = hash_word(w) & mask;; s = (s + 1) & mask) {
    const int32_t i = slots_[s];
    if (i < 0) return kMissing;
    if (words_[static_cast<size_t>(i)] == w) return i;
  }
}

int32_t WordTable::add(std::string_view w, int64_t by) {
  if ((words_.size() + 1) * 10 > slots_.size() * 7) rehash(std::max<size_t>(1024, slots_.size() * 2));
  const size_t mask = slots_.size() - 1;
  size_t s = hash_word(w) & mask;
  for (;; s = (s + 1) & mask) {
    const int32_t i = slots_[s];
    if (i < 0) break;
    if (words_[static_cast<size_t>(i)] == w) {
      counts_[static_cast<size_t>(i)] += by;
      return i;
    }
  }
  const auto idx = static_cast<int32_t>(words_.size());
  words_.emplace_back(w);
  counts_.push_back(by);
  slots_[s] = idx;
  return idx;
}

void WordTable::rehash(size_t n) {
  size_t slots = 1;
  while (slots < n) slots <<= 1;
  slots_.assign(slots, -1);
  const size_t mask = slots - 1;
  for (size_t i = 0; i < words_.size(); ++i) {
    size_t s = hash_word(words_[i]) & mask;
    while (slots_[s] >= 0) s = (s + 1) & mask;
    slots_[s] = static_cast<int32_t>(i);
  }
}

void WordTable::prune(int64_t min_count) {
  size_t k = 0;
  for (size_t i = 0; i < words_.size(); ++i)
    if (counts_[i] >= min_count) {
      if (k != i) {
        words_[k] = std::move(words_[i]);
        counts_[k] = counts_[i];
      }
      ++k;
    }
  words_.resize(k);
  counts_.resize(k);
  rehash(std::max<size_t>(1024, k * 2));
}

void WordTable::sort_by_count() {
  std::vector<size_t> order(words_.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return counts_[a] > counts_[b]; });
  std::vector<std::string> w(words_.size());
  std::vector<int64_t> c(words_.size());
  for (size_t i = 0; i < order.size(); ++i) {
    w[i] = std::move(words_[order[i]]);
    c[i] = counts_[order[i]];
  }
  words_ = std::move(w);
  counts_ = std::move(c);
  rehash(std::max<size_t>(1024, words_.size() * 2));
}

void WordTable::clear() {
  words_.clear();
  counts_.clear();
  slots_.clear();
}

// ---------------------------------------------------------------- vocabulary
Vocab build_vocab(const std::vector<std::string>& files, int64_t min_count, size_t max_types) {
  if (files.empty()) throw ConfigError("embed: no input files (--input FILE...)");
  if (min_count < 1) throw ConfigError(fmt("embed: --min-count must be >= 1 (got ", min_count, ")"));
  Vocab v;
  int64_t reduce = 1;  // counts at or below this were dropped by a reduction
  for (const auto& path : files) {
    LineReader r(path, 0, file_size_of(path));
    std::string_view line;
    while (r.next(line)) {
      ++v.lines;
      for_each_word(line, [&](std::string_view w) {
        ++v.raw_words;
        v.table.add(w);
      });
      if (v.table.size() > max_types) v.table.prune(++reduce);
    }
  }
  v.raw_types = static_cast<int64_t>(v.table.size());
  if (v.raw_words == 0) {
    std::string names;
    for (const auto& f : files) names += (names.empty() ? "" : ", ") + f;
    throw DataError(fmt(names, ": corpus has no words (", v.lines, " lines, all blank); expected whitespace-separated text"));
  }
  v.table.prune(min_count);
  if (v.table.size() == 0)
    throw DataError(fmt(files.front(), files.size() > 1 ? " (and the other inputs)" : "", ": no word occurs --min-count ", min_count,
                        " times (", v.raw_words, " words, ", v.raw_types, " distinct); lower --min-count or give more text"));
  v.table.sort_by_count();
  for (int64_t c : v.table.counts()) v.total_words += c;
  return v;
}

}  // namespace dsforge::embed
