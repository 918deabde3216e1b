#include "dsforge/embed/word2vec.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <thread>

#include "dsforge/core/error.h"
#include "dsforge/core/splitmix.h"
#include "dsforge/embed/corpus.h"
#include "dsforge/embed/glove.h"
#include "dsforge/embed/kernels.h"

namespace dsforge::embed {

// ---------------------------------------------------------------- pieces
SigmoidTable::SigmoidTable() {
  for (int i = 0; i < kSize; ++i) {
    const double x = (static_cast<double>(i) / kSize * 2 - 1) * kMaxExp;
    table[i] = static_cast<float>(1.0 / (1.0 + std::exp(-x)));
  }
}

double sgns_update(float* in, float* const* outs, int n, int dim, float alpha, const SigmoidTable* table) {
  std::vector<float> neu1e(static_cast<size_t>(dim), 0.0f);
  double loss = 0;
  for (int d = 0; d < n; ++d) {
    float* out = outs[d];
    const float label = d == 0 ? 1.0f : 0.0f;
    const float f = kernels::dot(in, out, dim);
    const double s = 1.0 / (1.0 + std::exp(-static_cast<double>(f)));
    loss -= std::log(d == 0 ? s : 1.0 - s);
    const float g = (label - (table ? kernels::sigmoid(*table, f) : static_cast<float>(s))) * alpha;
    kernels::axpy(g, out, neu1e.data(), dim);
    kernels::axpy(g, in, out, dim);
  }
  kernels::axpy(1.0f, neu1e.data(), in, dim);
  return loss;
}

AliasSampler::AliasSampler(const std::vector<double>& weights) : n_(weights.size()) {
  // Vose's alias method: columns of height 1; a small column is topped up by one large donor.
  double sum = 0;
  for (double w : weights) sum += w;
  if (n_ == 0 || !(sum > 0)) throw Error("AliasSampler: no positive weight");
  std::vector<double> p(n_);
  for (size_t i = 0; i < n_; ++i) p[i] = weights[i] * static_cast<double>(n_) / sum;
  threshold_.assign(n_, 0);
  alias_.assign(n_, 0);
  std::vector<uint32_t> small, large;
  for (size_t i = 0; i < n_; ++i) (p[i] < 1.0 ? small : large).push_back(static_cast<uint32_t>(i));
  auto to_u32 = [](double q) { return static_cast<uint32_t>(std::min(q * 4294967296.0, 4294967295.0)); };
  while (!small.empty() && !large.empty()) {
    const uint32_t s = small.back(), l = large.back();
    small.pop_back();
    threshold_[s] = to_u32(p[s]);
    alias_[s] = static_cast<int32_t>(l);
    p[l] -= 1.0 - p[s];
    if (p[l] < 1.0) {
      large.pop_back();
      small.push_back(l);
    }
  }
  for (uint32_t i : large) threshold_[i] = 0xFFFFFFFFu, alias_[i] = static_cast<int32_t>(i);
  for (uint32_t i : small) threshold_[i] = 0xFFFFFFFFu, alias_[i] = static_cast<int32_t>(i);  // rounding leftovers
}

std::vector<double> noise_weights(const std::vector<int64_t>& counts, double power) {
  std::vector<double> w(counts.size());
  for (size_t i = 0; i < counts.size(); ++i) w[i] = std::pow(static_cast<double>(counts[i]), power);
  return w;
}

double keep_probability(int64_t count, int64_t total, double sample) {
  if (sample <= 0 || count <= 0) return 1.0;
  const double t = sample * static_cast<double>(total), c = static_cast<double>(count);
  return std::min(1.0, (std::sqrt(c / t) + 1) * t / c);
}

// ---------------------------------------------------------------- training
void validate(const EmbedConfig& cfg) {
  if (cfg.inputs.empty()) throw ConfigError("embed train: no input files (--input FILE...)");
  if (cfg.method != "sgns" && cfg.method != "cbow" && cfg.method != "glove")
    throw ConfigError(fmt("embed train: --method must be sgns, cbow or glove (got '", cfg.method, "')"));
  auto positive = [](const char* flag, int64_t v) {
    if (v < 1) throw ConfigError(fmt("embed train: ", flag, " must be >= 1 (got ", v, ")"));
  };
  positive("--dim", cfg.dim);
  positive("--window", cfg.window);
  positive("--min-count", cfg.min_count);
  positive("--epochs", cfg.epochs);
  positive("--threads", cfg.threads);
  if (cfg.method != "glove") positive("--negative", cfg.negative);
  if (cfg.dim > 100000) throw ConfigError(fmt("embed train: --dim ", cfg.dim, " is too large (at most 100000)"));
  if (cfg.sample < 0) throw ConfigError(fmt("embed train: --sample must be >= 0 (got ", cfg.sample, ")"));
  if (cfg.alpha != -1 && !(cfg.alpha > 0)) throw ConfigError(fmt("embed train: --alpha must be > 0 (got ", cfg.alpha, ")"));
  if (cfg.method == "glove") {
    if (!(cfg.x_max > 0)) throw ConfigError(fmt("embed train: --x-max must be > 0 (got ", cfg.x_max, ")"));
    if (cfg.memory_mb < 1) throw ConfigError(fmt("embed train: --memory-mb must be >= 1 (got ", cfg.memory_mb, ")"));
  }
  for (const auto& f : cfg.inputs) file_size_of(f);  // DataError naming a missing input
}

namespace {

constexpr int kMaxSentence = 10000;  // longer lines are cut into pieces of this many words (as gensim)

struct Word2VecShared {
  const EmbedConfig* cfg;
  int dim, window, negative;
  bool cbow, shared_negatives;
  float* syn0;
  float* syn1;
  AliasSampler noise;
  std::vector<uint64_t> keep;  // keep probability * 2^32
  SigmoidTable sigmoid;
  std::atomic<int64_t> words_done{0};
  int64_t words_total = 0;  // epochs * corpus words in the vocabulary
  double alpha0 = 0.025, min_alpha = 1e-4;
  std::vector<uint64_t> sizes;
  const Vocab* vocab;
};

using Rng = SplitMix64;  // 64 good bits per call, a few cycles

// The hot loops, compiled twice (x86-64-v3: AVX2 + FMA; baseline x86-64) and picked at load time by
// the CPU's features. Not "arch=haswell": GCC picks that clone by CPU model, so only on Intel Haswell
// parts (this AMD EPYC ran the baseline clone until session 15).

// Asks for every cache line of a row (a 100-float row spans 7 or 8 lines; one prefetch brings one).
__attribute__((always_inline)) inline void prefetch_row(const float* row, int dim) {
  const char* p = reinterpret_cast<const char*>(row);
  const size_t bytes = static_cast<size_t>(dim) * sizeof(float);
  for (size_t o = 0; o < bytes; o += 64) __builtin_prefetch(p + o, 1);
  __builtin_prefetch(p + bytes - 1, 1);
}

// Draws the noise words of one positive pair (skipping the positive word itself, as word2vec does) into
// targets[1..), prefetching their rows; returns how many targets there are, the positive included.
__attribute__((always_inline)) inline int draw_targets(const Word2VecShared& sh, Rng& rng, int32_t w, int32_t* targets) {
  int n = 0;
  targets[n++] = w;
  prefetch_row(sh.syn1 + static_cast<size_t>(w) * static_cast<size_t>(sh.dim), sh.dim);
  for (int d = 0; d < sh.negative; ++d) {
    const int32_t t = sh.noise.sample(rng.next());
    if (t == w) continue;
    prefetch_row(sh.syn1 + static_cast<size_t>(t) * static_cast<size_t>(sh.dim), sh.dim);
    targets[n++] = t;
  }
  return n;
}

// How many (context, centre) pairs ahead the skip-gram loop draws noise words and asks for rows: the
// rows of a pair come from anywhere in two matrices of vocabulary x dim floats (24 MB at 30k words),
// so most are cache misses; asked for two pairs early, they arrive while the pairs before are trained.
constexpr int kPairsAhead = 2;
struct SgPair {
  int32_t context, centre;
};

// One (context, centre) pair: the context word's row against the centre word (label 1) and the noise
// words (label 0), each output row updated at once, the input row at the end (word2vec's order).
__attribute__((always_inline)) inline void train_pair(const Word2VecShared& sh, float* in, const int32_t* targets, int n,
                                                      float alpha, float* neu1e) {
  const int dim = sh.dim;
  const size_t D = static_cast<size_t>(dim);
  std::memset(neu1e, 0, D * sizeof(float));
  for (int d = 0; d < n; ++d) {
    float* out = sh.syn1 + static_cast<size_t>(targets[d]) * D;
    const float f = kernels::dot(in, out, dim);
    const float g = ((d == 0 ? 1.0f : 0.0f) - kernels::sigmoid(sh.sigmoid, f)) * alpha;
    kernels::axpy2(g, in, out, neu1e, dim);  // neu1e += g out; out += g in
  }
  kernels::axpy(1.0f, neu1e, in, dim);
}

// `targets` holds (kPairsAhead + 1) * (negative + 1) ids; `pairs` is the caller's scratch.
__attribute__((target_clones("arch=x86-64-v3", "default")))
void train_sentence_sg(const Word2VecShared& sh, Rng& rng, const int32_t* sen, int len, float alpha, float* neu1e, int32_t* targets,
                       std::vector<SgPair>& pairs) {
  const int window = sh.window;
  const size_t D = static_cast<size_t>(sh.dim);
  if (sh.shared_negatives) {
    // --shared-negatives (Ji et al. 2016, "Parallelizing Word2Vec in Shared and Distributed Memory"): one
    // draw of noise words per centre word serves its whole window, so their rows stay in L1 from one
    // context word to the next.
    for (int i = 0; i < len; ++i) {
      const int32_t w = sen[i];
      const int b = static_cast<int>(rng.next() % static_cast<uint64_t>(window));
      const int lo = std::max(0, i - window + b), hi = std::min(len, i + window + 1 - b);
      const int n = draw_targets(sh, rng, w, targets);
      for (int j = lo; j < hi; ++j)
        if (j != i) train_pair(sh, sh.syn0 + static_cast<size_t>(sen[j]) * D, targets, n, alpha, neu1e);
    }
    return;
  }
  // The original: a fresh draw of noise words per pair. The sentence's pairs are listed first (each
  // centre's reduced window drawn as word2vec does), then trained in order while the noise words and
  // rows of the pair kPairsAhead later are drawn and asked for.
  pairs.clear();
  for (int i = 0; i < len; ++i) {
    const int b = static_cast<int>(rng.next() % static_cast<uint64_t>(window));
    const int lo = std::max(0, i - window + b), hi = std::min(len, i + window + 1 - b);
    for (int j = lo; j < hi; ++j)
      if (j != i) pairs.push_back({sen[j], sen[i]});
  }
  const int P = static_cast<int>(pairs.size()), stride = sh.negative + 1;
  int counts[kPairsAhead + 1];
  auto ask = [&](int p) {
    prefetch_row(sh.syn0 + static_cast<size_t>(pairs[static_cast<size_t>(p)].context) * D, sh.dim);
    counts[p % (kPairsAhead + 1)] = draw_targets(sh, rng, pairs[static_cast<size_t>(p)].centre, targets + (p % (kPairsAhead + 1)) * stride);
  };
  for (int p = 0; p < std::min(P, kPairsAhead); ++p) ask(p);
  for (int p = 0; p < P; ++p) {
    if (p + kPairsAhead < P) ask(p + kPairsAhead);
    const int slot = p % (kPairsAhead + 1);
    train_pair(sh, sh.syn0 + static_cast<size_t>(pairs[static_cast<size_t>(p)].context) * D, targets + slot * stride, counts[slot],
               alpha, neu1e);
  }
}

__attribute__((target_clones("arch=x86-64-v3", "default")))
void train_sentence_cbow(const Word2VecShared& sh, Rng& rng, const int32_t* sen, int len, float alpha, float* neu1, float* neu1e) {
  const int dim = sh.dim, window = sh.window, negative = sh.negative;
  const size_t D = static_cast<size_t>(dim);
  for (int i = 0; i < len; ++i) {
    const int32_t w = sen[i];
    const int b = static_cast<int>(rng.next() % static_cast<uint64_t>(window));
    const int lo = std::max(0, i - window + b), hi = std::min(len, i + window + 1 - b);
    std::memset(neu1, 0, D * sizeof(float));
    int cw = 0;
    for (int j = lo; j < hi; ++j)
      if (j != i) {
        kernels::axpy(1.0f, sh.syn0 + static_cast<size_t>(sen[j]) * D, neu1, dim);
        ++cw;
      }
    if (cw == 0) continue;
    kernels::scale(1.0f / static_cast<float>(cw), neu1, dim);  // the mean of the context (cbow_mean)
    std::memset(neu1e, 0, D * sizeof(float));
    for (int d = 0; d <= negative; ++d) {
      int32_t target = w;
      float label = 1.0f;
      if (d > 0) {
        target = sh.noise.sample(rng.next());
        if (target == w) continue;
        label = 0.0f;
      }
      float* out = sh.syn1 + static_cast<size_t>(target) * D;
      const float f = kernels::dot(neu1, out, dim);
      const float g = (label - kernels::sigmoid(sh.sigmoid, f)) * alpha;
      kernels::axpy(g, out, neu1e, dim);
      kernels::axpy(g, neu1, out, dim);
    }
    for (int j = lo; j < hi; ++j)
      if (j != i) kernels::axpy(1.0f, neu1e, sh.syn0 + static_cast<size_t>(sen[j]) * D, dim);
  }
}

void word2vec_worker(Word2VecShared& sh, int tid) {
  const EmbedConfig& cfg = *sh.cfg;
  const auto T = static_cast<uint64_t>(cfg.threads);
  Rng rng{cfg.seed * 0x2545F4914F6CDD1Dull + static_cast<uint64_t>(tid) * 0x9E3779B97F4A7C15ull + 1};
  std::vector<float> neu1(static_cast<size_t>(sh.dim)), neu1e(static_cast<size_t>(sh.dim));
  std::vector<int32_t> sen, targets(static_cast<size_t>(kPairsAhead + 1) * static_cast<size_t>(sh.negative + 1));
  std::vector<SgPair> pairs;
  sen.reserve(kMaxSentence);
  const bool subsample = cfg.sample > 0;
  int64_t pending = 0;  // words read since the last report to words_done
  float alpha = static_cast<float>(sh.alpha0);
  auto train = [&]() {
    if (sen.empty()) return;
    if (sh.cbow)
      train_sentence_cbow(sh, rng, sen.data(), static_cast<int>(sen.size()), alpha, neu1.data(), neu1e.data());
    else
      train_sentence_sg(sh, rng, sen.data(), static_cast<int>(sen.size()), alpha, neu1e.data(), targets.data(), pairs);
    sen.clear();
  };
  auto report = [&]() {
    const int64_t done = sh.words_done.fetch_add(pending) + pending;
    pending = 0;
    const double progress = static_cast<double>(done) / static_cast<double>(sh.words_total + 1);
    alpha = static_cast<float>(std::max(sh.min_alpha, sh.alpha0 - (sh.alpha0 - sh.min_alpha) * progress));
  };
  const WordTable& table = sh.vocab->table;
  for (int epoch = 0; epoch < cfg.epochs; ++epoch) {
    for (size_t f = 0; f < cfg.inputs.size(); ++f) {
      const uint64_t n = sh.sizes[f];
      LineReader reader(cfg.inputs[f], n * static_cast<uint64_t>(tid) / T, n * static_cast<uint64_t>(tid + 1) / T);
      std::string_view line;
      while (reader.next(line)) {
        for_each_word(line, [&](std::string_view word) {
          const int32_t idx = table.find(word);
          if (idx < 0) return;
          ++pending;
          if (subsample && (rng.next() & 0xFFFFFFFFull) >= sh.keep[static_cast<size_t>(idx)]) return;
          sen.push_back(idx);
          if (sen.size() == kMaxSentence) train();
        });
        train();
        if (pending >= 10000) report();
      }
    }
  }
  report();
}

EmbedResult train_word2vec(const EmbedConfig& cfg, Vocab vocab) {
  EmbedResult res;
  const size_t V = vocab.size(), D = static_cast<size_t>(cfg.dim);
  WordVectors& vec = res.vectors;
  vec.dim = cfg.dim;
  vec.words = vocab.table.words();
  vec.counts = vocab.table.counts();
  vec.data.resize(V * D);
  std::vector<float> syn1(V * D, 0.0f);
  Rng init{cfg.seed};
  for (auto& x : vec.data)  // word2vec: uniform in [-0.5/dim, 0.5/dim)
    x = (static_cast<float>(init.next() >> 40) / 16777216.0f - 0.5f) / static_cast<float>(cfg.dim);

  auto sh = std::make_unique<Word2VecShared>();
  sh->cfg = &cfg;
  sh->dim = cfg.dim;
  sh->window = cfg.window;
  sh->negative = cfg.negative;
  sh->cbow = cfg.method == "cbow";
  sh->shared_negatives = cfg.shared_negatives;
  sh->syn0 = vec.data.data();
  sh->syn1 = syn1.data();
  sh->noise = AliasSampler(noise_weights(vocab.table.counts()));
  sh->keep.resize(V);
  for (size_t i = 0; i < V; ++i)
    sh->keep[i] = static_cast<uint64_t>(keep_probability(vocab.table.counts()[i], vocab.total_words, cfg.sample) * 4294967296.0);
  sh->words_total = vocab.total_words * cfg.epochs;
  sh->alpha0 = cfg.alpha > 0 ? cfg.alpha : 0.025;
  sh->min_alpha = std::min(cfg.min_alpha, sh->alpha0);
  sh->vocab = &vocab;
  for (const auto& f : cfg.inputs) sh->sizes.push_back(file_size_of(f));

  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> pool;
  std::atomic<bool> stop{false};
  std::thread progress;
  if (cfg.verbose)
    progress = std::thread([&]() {
      while (!stop.load()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        const double p = 100.0 * static_cast<double>(sh->words_done.load()) / static_cast<double>(sh->words_total + 1);
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::fprintf(stderr, "\rembed: %5.1f%%  %.0fk words/s  ", p, static_cast<double>(sh->words_done.load()) / s / 1e3);
      }
      std::fprintf(stderr, "\n");
    });
  for (int t = 1; t < cfg.threads; ++t) pool.emplace_back(word2vec_worker, std::ref(*sh), t);
  word2vec_worker(*sh, 0);
  for (auto& th : pool) th.join();
  stop = true;
  if (progress.joinable()) progress.join();
  res.report.train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  res.report.trained_words = sh->words_done.load();
  return res;
}

}  // namespace

EmbedResult train_embeddings(const EmbedConfig& cfg) {
  validate(cfg);
  const auto t0 = std::chrono::steady_clock::now();
  Vocab vocab = build_vocab(cfg.inputs, cfg.min_count);
  const double vocab_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const int64_t vocab_size = static_cast<int64_t>(vocab.size()), corpus_words = vocab.total_words, raw = vocab.raw_words;
  EmbedResult r = cfg.method == "glove" ? train_glove(cfg, std::move(vocab)) : train_word2vec(cfg, std::move(vocab));
  r.report.method = cfg.method;
  r.report.vocab_seconds = vocab_seconds;
  r.report.vocab_size = vocab_size;
  r.report.corpus_words = corpus_words;
  r.report.raw_words = raw;
  if (r.report.trained_words == 0) r.report.trained_words = corpus_words * cfg.epochs;
  r.report.words_per_second = r.report.train_seconds > 0 ? static_cast<double>(r.report.trained_words) / r.report.train_seconds : 0;
  return r;
}

}  // namespace dsforge::embed
