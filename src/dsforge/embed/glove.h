// GloVe (Pennington, Socher & Manning 2014) as in the reference tool: co-occurrence counts within a
// symmetric window weighted 1/distance (windows never cross a line; out-of-vocabulary words are
// dropped first), counted in bounded memory, then AdaGrad on the weighted least squares
//   J = sum_ij f(X_ij) (w_i . w~_j + b_i + b~_j - log X_ij)^2,  f(x) = min(1, (x / x_max)^alpha)
// with the saved vector of a word being w + w~ (the reference's "model 2").
//
// Bounded memory: pairs are summed in an open-addressing table of at most half the budget; when it is
// 70% full it is sorted and written to disk as a run; at the end the runs are merged (k-way, summing
// equal pairs) into one sorted file, which training streams in shuffled blocks each epoch.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dsforge/embed/corpus.h"
#include "dsforge/embed/word2vec.h"

namespace dsforge::embed {

double glove_weight(double x, double x_max, double alpha);

#pragma pack(push, 1)
struct CoocRecord {
  uint64_t key;  // (i << 32) | j
  float x;
  int32_t i() const { return static_cast<int32_t>(key >> 32); }
  int32_t j() const { return static_cast<int32_t>(key & 0xFFFFFFFFu); }
};
#pragma pack(pop)
static_assert(sizeof(CoocRecord) == 12, "records are written to disk as 12 packed bytes");

class CoocCounter {
 public:
  CoocCounter(const std::string& tmp_dir, size_t budget_bytes);
  ~CoocCounter();
  CoocCounter(const CoocCounter&) = delete;
  CoocCounter& operator=(const CoocCounter&) = delete;
  void add(int32_t i, int32_t j, float x);
  // Merges everything into one file sorted by (i, j), equal pairs summed; returns its path (removed
  // with the counter). `n_records` receives the number of distinct pairs.
  std::string finish(int64_t* n_records);
  int64_t runs() const { return static_cast<int64_t>(runs_.size()); }

 private:
  void spill();
  std::string dir_;
  size_t capacity_ = 0, used_ = 0;
  std::vector<uint64_t> keys_;  // ~0 = empty
  std::vector<float> vals_;
  std::vector<std::string> runs_;
  std::string merged_;
};

// Adds the co-occurrences of every line of `files` (only words in `vocab`) to `counter`.
void count_cooccurrences(const std::vector<std::string>& files, const Vocab& vocab, int window, CoocCounter& counter);

EmbedResult train_glove(const EmbedConfig& cfg, Vocab vocab);

}  // namespace dsforge::embed
