// word2vec (Mikolov et al. 2013, "Distributed Representations of Words and Phrases") and GloVe
// (Pennington et al. 2014) training on a streamed corpus, with no libtorch dependency.
//
// word2vec as in the original C tool and gensim: skip-gram or CBOW (mean of the context) with negative
// sampling from the unigram^0.75 distribution, subsampling of frequent words (keep probability
// (sqrt(f/t) + 1) * t/f with f the word's share of the corpus and t = sample), the window shrunk by a
// random b in [0, window) per centre word, a learning rate decaying linearly from alpha to min_alpha
// over all epochs, and lock-free (Hogwild) updates from `threads` workers that each read their own
// slice of every file.
//
//   EmbedConfig cfg;
//   cfg.inputs = {"corpus.txt"};
//   cfg.method = "sgns";
//   EmbedResult r = train_embeddings(cfg);    // r.vectors, r.report
//   write_embed_outputs("out", r);            // vectors.txt, vectors.bin, embeddings.safetensors, ...
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "dsforge/embed/vectors.h"

namespace dsforge::embed {

struct EmbedConfig {
  std::vector<std::string> inputs;
  std::string method = "sgns";  // sgns | cbow | glove
  int dim = 100;
  int window = 5;
  int64_t min_count = 5;
  int negative = 5;        // word2vec: noise words per positive pair
  double sample = 1e-3;    // word2vec: subsampling threshold t (0 = off)
  int epochs = 5;
  int threads = 2;
  double alpha = -1;       // initial learning rate; -1 = 0.025 (word2vec, as gensim) or 0.05 (GloVe)
  double min_alpha = 1e-4; // word2vec: final learning rate
  uint64_t seed = 1;
  bool shared_negatives = false;  // skip-gram: one noise draw per centre word for its whole window
  // GloVe
  double x_max = 100;          // weighting f(x) = min(1, (x / x_max)^glove_alpha)
  double glove_alpha = 0.75;
  int64_t memory_mb = 512;     // co-occurrence counting budget before spilling sorted runs to disk
  std::string tmp_dir;         // for the spilled runs; "" = the output folder or /tmp
  bool verbose = false;        // progress lines on stderr
};

struct TrainReport {
  std::string method;
  int64_t vocab_size = 0, corpus_words = 0, raw_words = 0;
  int64_t trained_words = 0;    // words processed over all epochs (before subsampling)
  double vocab_seconds = 0, train_seconds = 0;
  double words_per_second = 0;  // trained_words / train_seconds
  // GloVe only
  int64_t cooc_entries = 0, cooc_runs = 0;
  double cooc_seconds = 0;
  std::vector<double> epoch_loss;  // mean weighted squared error per epoch
};

struct EmbedResult {
  WordVectors vectors;
  TrainReport report;
};

// Checks the settings (ConfigError naming the flag) before any reading.
void validate(const EmbedConfig& cfg);
EmbedResult train_embeddings(const EmbedConfig& cfg);
// vectors.txt, vectors.bin, embeddings.safetensors, vocab.txt and train.json in `dir`.
void write_embed_outputs(const std::string& dir, const EmbedConfig& cfg, const EmbedResult& r);

// ---------------------------------------------------------------- pieces, exposed for the tests
// Logistic function as word2vec tabulates it: 1000 steps over [-6, 6].
struct SigmoidTable {
  static constexpr int kSize = 1000;
  static constexpr float kMaxExp = 6.0f;
  float table[kSize];
  SigmoidTable();
};

// One negative-sampling update of input vector `in` against output rows outs[0] (label 1) and
// outs[1..n) (label 0), as word2vec does: for each row, g = (label - sigmoid(in.out)) * alpha
// (saturated at |in.out| > 6 when `table` is given, exact logistic when it is null); the row moves
// by g * in and `in` then moves by sum of g * out (gradient steps on -log sigmoid(in.out_0) -
// sum log sigmoid(-in.out_k)). Returns that loss before the update.
double sgns_update(float* in, float* const* outs, int n, int dim, float alpha, const SigmoidTable* table);

// Alias-method sampler over `weights` (O(1) per draw, memory linear in the vocabulary).
class AliasSampler {
 public:
  AliasSampler() = default;
  explicit AliasSampler(const std::vector<double>& weights);
  // u1 uniform in [0, 1) picks a column, u2 decides between it and its alias; `r` is 64 random bits.
  int32_t sample(uint64_t r) const {
    const auto col = static_cast<uint32_t>((r >> 32) * n_ >> 32);
    return static_cast<uint32_t>(r) < threshold_[col] ? static_cast<int32_t>(col) : alias_[col];
  }
  size_t size() const { return n_; }

 private:
  uint64_t n_ = 0;
  std::vector<uint32_t> threshold_;  // P(keep column) * 2^32
  std::vector<int32_t> alias_;
};
// Noise distribution of word2vec: count^power normalised.
std::vector<double> noise_weights(const std::vector<int64_t>& counts, double power = 0.75);
// word2vec's keep probability for a word seen `count` times in `total` (1 when sample is 0).
double keep_probability(int64_t count, int64_t total, double sample);

}  // namespace dsforge::embed
