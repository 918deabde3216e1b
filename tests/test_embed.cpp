// Word embeddings (src/dsforge/embed): the word2vec update against finite differences, the noise and
// subsampling distributions against their formulas, GloVe's weighting, counting in bounded memory and
// falling loss, the file formats (and gensim reading ours), the evaluations against hand-computed
// values, and the errors on bad input.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <random>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/embed/corpus.h"
#include "dsforge/embed/evaluate.h"
#include "dsforge/embed/glove.h"
#include "dsforge/embed/run.h"
#include "dsforge/embed/word2vec.h"
#include "dsforge/model/causal_lm.h"
#include "dsforge/model/io.h"
#include "dsforge/tokenizer/bpe.h"
#include "dsforge/train/embedding_init.h"
#include "tiny_model.h"
#include "test_util.h"

using namespace dsforge;
using namespace dsforge::embed;

namespace {

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
}

// Two topics whose words never share a line: animals and vehicles, 20 words each.
std::string topic_corpus(int lines, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string out;
  for (int l = 0; l < lines; ++l) {
    const char* topic = (l % 2) ? "animal" : "vehicle";
    for (int w = 0; w < 12; ++w) out += std::string(w ? " " : "") + topic + std::to_string(rng() % 20);
    out += "\n";
  }
  return out;
}

double cosine(const WordVectors& v, const std::string& a, const std::string& b) {
  const float* x = v.row(static_cast<size_t>(v.find(a)));
  const float* y = v.row(static_cast<size_t>(v.find(b)));
  double s = 0, nx = 0, ny = 0;
  for (int k = 0; k < v.dim; ++k) s += x[k] * y[k], nx += x[k] * x[k], ny += y[k] * y[k];
  return s / std::sqrt(nx * ny);
}

double sgns_loss(const std::vector<double>& in, const std::vector<std::vector<double>>& outs) {
  double l = 0;
  for (size_t d = 0; d < outs.size(); ++d) {
    double f = 0;
    for (size_t k = 0; k < in.size(); ++k) f += in[k] * outs[d][k];
    l -= std::log(1.0 / (1.0 + std::exp(d == 0 ? -f : f)));
  }
  return l;
}

}  // namespace

TEST(EmbedWord2Vec, SgnsUpdateIsGradientStepByFiniteDifferences) {
  const int dim = 8, n = 3;  // one positive, two noise words
  const float alpha = 0.1f;
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 0.4f);
  std::vector<float> in(dim);
  std::vector<std::vector<float>> outs(n, std::vector<float>(dim));
  for (auto& x : in) x = nd(rng);
  for (auto& o : outs)
    for (auto& x : o) x = nd(rng);
  // float64 central differences of the loss -log s(in.o0) - sum_k log s(-in.ok)
  std::vector<double> din(in.begin(), in.end());
  std::vector<std::vector<double>> douts;
  for (auto& o : outs) douts.emplace_back(o.begin(), o.end());
  const double h = 1e-6;
  std::vector<double> g_in(dim);
  std::vector<std::vector<double>> g_out(n, std::vector<double>(dim));
  for (int k = 0; k < dim; ++k) {
    auto p = din, m = din;
    p[k] += h, m[k] -= h;
    g_in[k] = (sgns_loss(p, douts) - sgns_loss(m, douts)) / (2 * h);
    for (int d = 0; d < n; ++d) {
      auto po = douts, mo = douts;
      po[d][k] += h, mo[d][k] -= h;
      g_out[d][k] = (sgns_loss(din, po) - sgns_loss(din, mo)) / (2 * h);
    }
  }
  const double loss0 = sgns_loss(din, douts);
  std::vector<float> in2 = in;
  auto outs2 = outs;
  std::vector<float*> ptrs;
  for (auto& o : outs2) ptrs.push_back(o.data());
  EXPECT_NEAR(sgns_update(in2.data(), ptrs.data(), n, dim, alpha, nullptr), loss0, 1e-5);
  for (int k = 0; k < dim; ++k) {
    EXPECT_NEAR(in2[k] - in[k], -alpha * g_in[k], 1e-5) << "input component " << k;
    for (int d = 0; d < n; ++d) EXPECT_NEAR(outs2[d][k] - outs[d][k], -alpha * g_out[d][k], 1e-5) << "row " << d << " component " << k;
  }
  // The tabulated logistic (1000 steps over [-6, 6]) is within one step's slope of the exact one.
  SigmoidTable table;
  std::vector<float> in3 = in;
  auto outs3 = outs;
  std::vector<float*> p3;
  for (auto& o : outs3) p3.push_back(o.data());
  sgns_update(in3.data(), p3.data(), n, dim, alpha, &table);
  for (int k = 0; k < dim; ++k) EXPECT_NEAR(in3[k], in2[k], 0.004 * alpha * 3);
  // The loss falls after the step.
  std::vector<double> din2(in2.begin(), in2.end());
  std::vector<std::vector<double>> douts2;
  for (auto& o : outs2) douts2.emplace_back(o.begin(), o.end());
  EXPECT_LT(sgns_loss(din2, douts2), loss0);
}

TEST(EmbedWord2Vec, NoiseDistributionIsCountToThreeQuarters) {
  const std::vector<int64_t> counts = {10000, 1000, 100, 10, 1};
  const auto w = noise_weights(counts);
  double sum = 0;
  for (double x : w) sum += x;
  AliasSampler s(w);
  std::vector<int64_t> hits(counts.size(), 0);
  std::mt19937_64 rng(7);
  const int n = 2'000'000;
  for (int i = 0; i < n; ++i) ++hits[static_cast<size_t>(s.sample(rng()))];
  for (size_t i = 0; i < counts.size(); ++i) {
    const double expected = std::pow(static_cast<double>(counts[i]), 0.75) / sum;  // 10000^0.75 = 1000 ...
    EXPECT_NEAR(static_cast<double>(hits[i]) / n, expected, 0.002) << "word " << i;
  }
  EXPECT_NEAR(w[0], 1000.0, 1e-9);
  EXPECT_NEAR(w[2], std::pow(100.0, 0.75), 1e-9);
}

TEST(EmbedWord2Vec, SubsamplingKeepProbability) {
  // (sqrt(f / t) + 1) * t / f with f = count / total and t = 1e-3
  EXPECT_DOUBLE_EQ(keep_probability(1000, 1'000'000, 1e-3), 1.0);                  // f = t: 2.0, capped
  EXPECT_NEAR(keep_probability(100'000, 1'000'000, 1e-3), (10 + 1) * 0.01, 1e-12);  // f/t = 100: 0.11
  EXPECT_NEAR(keep_probability(4000, 1'000'000, 1e-3), (2 + 1) * 0.25, 1e-12);      // f/t = 4: 0.75
  EXPECT_DOUBLE_EQ(keep_probability(100'000, 1'000'000, 0), 1.0);                    // sampling off
}

TEST(EmbedCorpus, SlicesCoverEveryLineOnce) {
  TempDir tmp;
  const std::string path = tmp.path + "/c.txt";
  std::string text;
  for (int i = 0; i < 500; ++i) text += "line" + std::to_string(i) + (i % 7 ? " x y" : "") + "\n";
  text += "last line without newline";
  write_text(path, text);
  const uint64_t n = file_size_of(path);
  for (int T : {1, 2, 3, 7}) {
    std::vector<std::string> got;
    for (int t = 0; t < T; ++t) {
      LineReader r(path, n * t / T, n * (t + 1) / T, 64);  // a buffer smaller than some lines
      std::string_view line;
      while (r.next(line)) got.emplace_back(line);
    }
    ASSERT_EQ(got.size(), 501u) << T << " slices";
    EXPECT_EQ(got[0], "line0");
    EXPECT_EQ(got[1], "line1 x y");
    EXPECT_EQ(got.back(), "last line without newline");
  }
}

TEST(EmbedCorpus, VocabCountsAndMinCount) {
  TempDir tmp;
  write_text(tmp.path + "/a.txt", "the cat  sat\n\nthe\tdog sat\r\nthe end\n");
  Vocab v = build_vocab({tmp.path + "/a.txt"}, 2);
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v.table.words()[0], "the");
  EXPECT_EQ(v.table.counts()[0], 3);
  EXPECT_EQ(v.table.words()[1], "sat");
  EXPECT_EQ(v.total_words, 5);
  EXPECT_EQ(v.raw_words, 8);
  EXPECT_EQ(v.table.find("cat"), WordTable::kMissing);
}

TEST(EmbedWord2Vec, SkipGramAndCbowSeparateTopics) {
  TempDir tmp;
  write_text(tmp.path + "/c.txt", topic_corpus(3000, 1));
  for (const char* method : {"sgns", "cbow"}) {
    EmbedConfig cfg;
    cfg.inputs = {tmp.path + "/c.txt"};
    cfg.method = method;
    cfg.dim = 16;
    cfg.epochs = 3;
    cfg.sample = 0;
    cfg.threads = 2;
    const EmbedResult r = train_embeddings(cfg);
    EXPECT_EQ(r.report.vocab_size, 40);
    EXPECT_EQ(r.report.trained_words, 3 * 36000);
    double same = 0, cross = 0;
    for (int i = 0; i < 10; ++i) {
      same += cosine(r.vectors, "animal" + std::to_string(i), "animal" + std::to_string(i + 10));
      cross += cosine(r.vectors, "animal" + std::to_string(i), "vehicle" + std::to_string(i));
    }
    EXPECT_GT(same / 10, cross / 10 + 0.3) << method;
  }
}

TEST(EmbedGlove, WeightingFunction) {
  EXPECT_NEAR(glove_weight(50, 100, 0.75), std::pow(0.5, 0.75), 1e-12);  // 0.5946
  EXPECT_NEAR(glove_weight(1, 100, 0.75), std::pow(0.01, 0.75), 1e-12);  // 0.0316
  EXPECT_DOUBLE_EQ(glove_weight(100, 100, 0.75), 1.0);
  EXPECT_DOUBLE_EQ(glove_weight(1e6, 100, 0.75), 1.0);
}

TEST(EmbedGlove, SpilledRunsMergeToTheSameCounts) {
  TempDir tmp;
  std::map<std::pair<int, int>, double> expected;
  CoocCounter c(tmp.path, 64 * 1024);  // a 2048-slot table: spills every ~1400 distinct pairs
  std::mt19937 rng(5);
  for (int k = 0; k < 20000; ++k) {
    const int i = static_cast<int>(rng() % 60), j = static_cast<int>(rng() % 60);
    const float x = 1.0f / static_cast<float>(1 + rng() % 4);
    c.add(i, j, x);
    expected[{i, j}] += x;
  }
  int64_t n = 0;
  const std::string merged = c.finish(&n);
  EXPECT_GT(c.runs(), 5);
  ASSERT_EQ(n, static_cast<int64_t>(expected.size()));
  std::FILE* f = std::fopen(merged.c_str(), "rb");
  ASSERT_TRUE(f);
  CoocRecord r{};
  auto it = expected.begin();
  while (std::fread(&r, sizeof r, 1, f) == 1) {
    ASSERT_EQ(r.i(), it->first.first);
    ASSERT_EQ(r.j(), it->first.second);
    EXPECT_NEAR(r.x, it->second, 1e-3);
    ++it;
  }
  std::fclose(f);
  EXPECT_TRUE(it == expected.end());
}

TEST(EmbedGlove, CooccurrencesWeightedByInverseDistance) {
  TempDir tmp;
  write_text(tmp.path + "/c.txt", "a b c\nc a\n");
  Vocab v = build_vocab({tmp.path + "/c.txt"}, 1);
  CoocCounter c(tmp.path, 1 << 20);
  count_cooccurrences({tmp.path + "/c.txt"}, v, 2, c);
  int64_t n = 0;
  const std::string merged = c.finish(&n);
  std::map<std::pair<std::string, std::string>, float> got;
  std::FILE* f = std::fopen(merged.c_str(), "rb");
  CoocRecord r{};
  while (std::fread(&r, sizeof r, 1, f) == 1) got[{v.table.words()[r.i()], v.table.words()[r.j()]}] = r.x;
  std::fclose(f);
  EXPECT_FLOAT_EQ((got[{"a", "b"}]), 1.0f);
  EXPECT_FLOAT_EQ((got[{"a", "c"}]), 0.5f + 1.0f);  // distance 2 on line 1, 1 on line 2
  EXPECT_FLOAT_EQ((got[{"c", "a"}]), 1.5f);
  EXPECT_FLOAT_EQ((got[{"b", "c"}]), 1.0f);
  EXPECT_EQ(got.count({"a", "a"}), 0u);
  EXPECT_EQ(n, 6);
}

TEST(EmbedGlove, LossFallsAndTopicsSeparate) {
  TempDir tmp;
  write_text(tmp.path + "/c.txt", topic_corpus(2000, 2));
  EmbedConfig cfg;
  cfg.inputs = {tmp.path + "/c.txt"};
  cfg.method = "glove";
  cfg.dim = 16;
  cfg.epochs = 15;
  cfg.memory_mb = 1;
  cfg.tmp_dir = tmp.path;
  const EmbedResult r = train_embeddings(cfg);
  ASSERT_EQ(r.report.epoch_loss.size(), 15u);
  // falls steadily at first, then settles (AdaGrad on shuffled blocks wobbles by ~0.1% near the optimum)
  for (size_t e = 1; e < 5; ++e) EXPECT_LT(r.report.epoch_loss[e], r.report.epoch_loss[e - 1]) << "epoch " << e;
  for (size_t e = 5; e < r.report.epoch_loss.size(); ++e) EXPECT_LT(r.report.epoch_loss[e], 1.01 * r.report.epoch_loss[e - 1]) << "epoch " << e;
  EXPECT_LT(r.report.epoch_loss.back(), 0.5 * r.report.epoch_loss.front());
  EXPECT_GT(cosine(r.vectors, "animal1", "animal2"), cosine(r.vectors, "animal1", "vehicle2"));
}

TEST(EmbedVectors, TextBinaryAndSafetensorsRoundTrip) {
  TempDir tmp;
  WordVectors v;
  v.dim = 3;
  v.words = {"the", "naïve", "x"};
  v.counts = {5, 3, 1};
  v.data = {0.1f, -2.5f, 1e-7f, 3.25f, 0.0f, -0.333333343f, 1e30f, -1e-30f, 7.0f};
  save_word2vec_text(tmp.path + "/v.txt", v);
  save_word2vec_binary(tmp.path + "/v.bin", v);
  save_safetensors_vectors(tmp.path, v, "sgns");
  for (const std::string p : {"/v.txt", "/v.bin", "/embeddings.safetensors"}) {
    const WordVectors w = load_vectors(tmp.path + p);
    EXPECT_EQ(w.dim, 3) << p;
    EXPECT_EQ(w.words, v.words) << p;
    EXPECT_EQ(w.data, v.data) << p;  // bit-exact, text included (%.9g)
  }
  EXPECT_EQ(read_file(tmp.path + "/v.txt").substr(0, 4), "3 3\n");
}

TEST(EmbedVectors, GensimReadsOurBinaryAndText) {
  if (std::system("/usr/bin/python3 -c 'import gensim' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "/usr/bin/python3 with gensim (Debian python3-gensim) not installed";
  TempDir tmp;
  WordVectors v;
  v.dim = 4;
  v.words = {"alpha", "beta"};
  v.data = {1, 2, 3, 4, -0.5f, 0.25f, 0, 8};
  save_word2vec_binary(tmp.path + "/v.bin", v);
  save_word2vec_text(tmp.path + "/v.txt", v);
  const std::string out = tmp.path + "/py.txt";
  const std::string cmd = "/usr/bin/python3 -c \"from gensim.models import KeyedVectors as K; "
                          "b=K.load_word2vec_format('" + tmp.path + "/v.bin', binary=True); "
                          "t=K.load_word2vec_format('" + tmp.path + "/v.txt'); "
                          "print(' '.join(b.index_to_key), *b['beta'].tolist(), *t['alpha'].tolist())\" > " + out;
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  EXPECT_EQ(read_file(out), "alpha beta -0.5 0.25 0.0 8.0 1.0 2.0 3.0 4.0\n");
}

TEST(EmbedEval, SpearmanAveragesTies) {
  // ranks x = 1, 2.5, 2.5, 4 and y = 1, 3, 2, 4: Pearson of the ranks = 4.5 / sqrt(4.5 * 5)
  EXPECT_EQ(average_ranks({1, 2, 2, 3}), (std::vector<double>{1, 2.5, 2.5, 4}));
  EXPECT_NEAR(spearman({1, 2, 2, 3}, {1, 3, 2, 4}), 4.5 / std::sqrt(22.5), 1e-12);
  EXPECT_NEAR(spearman({1, 2, 3}, {30, 20, 10}), -1.0, 1e-12);
}

namespace {
WordVectors tiny_vectors() {
  // king - man + woman lands on queen; "apple" is far from all.
  WordVectors v;
  v.dim = 3;
  v.words = {"man", "woman", "king", "queen", "apple", "prince"};
  v.data = {1, 0, 0.1f,  0, 1, 0.1f,  1, 0, 1,  0, 1, 1,  -1, -1, 0,  0.9f, 0.2f, 1.1f};
  return v;
}
}  // namespace

TEST(EmbedEval, AnalogiesAndSimilarityOnHandBuiltVectors) {
  TempDir tmp;
  write_text(tmp.path + "/q.txt",
             ": royal\nman woman king queen\nMan Woman King Queen\nwoman man queen king\nman woman king unicorn\n: other\nking queen man woman\n");
  const AnalogyResult a = evaluate_analogies(tiny_vectors(), tmp.path + "/q.txt");
  EXPECT_EQ(a.questions, 5);
  EXPECT_EQ(a.oov, 1);
  ASSERT_EQ(a.sections.size(), 2u);
  EXPECT_EQ(a.sections[0].questions, 4);
  // woman:man::queen:? by 3CosAdd (by hand from unit rows): king 0.774 - 0.070 + 0.500 = 1.204, prince 1.126
  EXPECT_EQ(a.correct_add, 4);
  EXPECT_EQ(a.correct_mul, 4);
  // restrict_vocab = 3 leaves queen (row 3) out: every question has an OOV word
  EXPECT_EQ(evaluate_analogies(tiny_vectors(), tmp.path + "/q.txt", 3).oov, 5);

  write_text(tmp.path + "/s.tsv", "# comment\nman\twoman\t2\nking\tqueen\t5\nking\tprince\t9\nman\tunicorn\t1\n");
  const SimilarityResult s = evaluate_similarity(tiny_vectors(), tmp.path + "/s.tsv");
  EXPECT_EQ(s.pairs, 4);
  EXPECT_EQ(s.oov, 1);
  EXPECT_NEAR(s.spearman, 1.0, 1e-12);  // cosines 0.01, 0.50, 0.99 rise with the scores
}

TEST(EmbedEval, ReadsTheSharedSets) {
  const std::string dir = shared_data_dir() + "/word_similarity";
  if (!file_exists(dir + "/wordsim353.tsv")) GTEST_SKIP() << "../shared/data/word_similarity not present";
  const WordVectors v = tiny_vectors();
  const SimilarityResult ws = evaluate_similarity(v, dir + "/wordsim353.tsv");
  EXPECT_EQ(ws.pairs, 353);
  const SimilarityResult sl = evaluate_similarity(v, dir + "/simlex999.txt");
  EXPECT_EQ(sl.pairs, 999);
  const AnalogyResult an = evaluate_analogies(v, dir + "/questions-words.txt");
  EXPECT_EQ(an.questions, 19544);
  EXPECT_EQ(an.sections.size(), 14u);
  EXPECT_EQ(an.answered(), 2);  // only 'king queen man woman' and 'man woman king queen' use these six words
  EXPECT_EQ(an.correct_add, 2);
}

TEST(EmbedErrors, BadInputNamesTheProblem) {
  TempDir tmp;
  write_text(tmp.path + "/empty.txt", "\n  \n\t\n");
  EmbedConfig cfg;
  cfg.inputs = {tmp.path + "/empty.txt"};
  EXPECT_THROW_MSG(train_embeddings(cfg), DataError, "empty.txt: corpus has no words");
  write_text(tmp.path + "/rare.txt", "a b c\n");
  cfg.inputs = {tmp.path + "/rare.txt"};
  EXPECT_THROW_MSG(train_embeddings(cfg), DataError, "no word occurs --min-count 5 times");
  cfg.dim = 0;
  EXPECT_THROW_MSG(train_embeddings(cfg), ConfigError, "--dim must be >= 1 (got 0)");
  cfg.dim = 10;
  cfg.method = "fasttext";
  EXPECT_THROW_MSG(train_embeddings(cfg), ConfigError, "--method must be sgns, cbow or glove");
  cfg.method = "sgns";
  cfg.inputs = {tmp.path + "/missing.txt"};
  EXPECT_THROW_MSG(train_embeddings(cfg), DataError, "missing.txt: no such file");

  write_text(tmp.path + "/sim.tsv", "# header\nking\tqueen\t5\nking queen\n");
  EXPECT_THROW_MSG(evaluate_similarity(tiny_vectors(), tmp.path + "/sim.tsv"), DataError, "sim.tsv:3: expected 'word1<TAB>word2<TAB>score'");
  write_text(tmp.path + "/sim2.tsv", "king\tqueen\thigh\n");
  EXPECT_THROW_MSG(evaluate_similarity(tiny_vectors(), tmp.path + "/sim2.tsv"), DataError, "sim2.tsv:1:");
  write_text(tmp.path + "/q.txt", ": s\nman woman king\n");
  EXPECT_THROW_MSG(evaluate_analogies(tiny_vectors(), tmp.path + "/q.txt"), DataError, "q.txt:2: expected four words");
  write_text(tmp.path + "/q2.txt", "man woman king queen\n");
  EXPECT_THROW_MSG(evaluate_analogies(tiny_vectors(), tmp.path + "/q2.txt"), DataError, "q2.txt:1: question before any ': section'");
  // vectors: the similarity file is not a word2vec file; a truncated binary file
  EXPECT_THROW_MSG(load_vectors(tmp.path + "/sim.tsv"), DataError, "sim.tsv:1: expected a word2vec header");
  write_text(tmp.path + "/v.txt", "2 3\nthe 1 2 3\ncat 1 2\n");
  EXPECT_THROW_MSG(load_vectors(tmp.path + "/v.txt"), DataError, "v.txt:3: expected 3 numbers after 'cat', got 2");
  save_word2vec_binary(tmp.path + "/v.bin", tiny_vectors());
  const std::string bin = read_file(tmp.path + "/v.bin");
  write_text(tmp.path + "/cut.bin", bin.substr(0, bin.size() - 7));
  EXPECT_THROW_MSG(load_vectors(tmp.path + "/cut.bin"), DataError, "truncated binary file");
}

TEST(EmbedCli, TrainWritesAllFormats) {
  TempDir tmp;
  write_text(tmp.path + "/c.txt", topic_corpus(400, 3));
  EmbedConfig cfg;
  cfg.inputs = {tmp.path + "/c.txt"};
  cfg.dim = 8;
  cfg.epochs = 1;
  run_embed_train(cfg, tmp.path + "/out");
  for (const char* f : {"vectors.txt", "vectors.bin", "embeddings.safetensors", "vocab.txt", "train.json"})
    EXPECT_TRUE(file_exists(tmp.path + "/out/" + f)) << f;
  const std::string nb = run_embed_neighbors(tmp.path + "/out/vectors.bin", "animal3", 3);
  EXPECT_EQ(std::count(nb.begin(), nb.end(), '\n'), 3);
  EXPECT_THROW_MSG(run_embed_neighbors(tmp.path + "/out/vectors.bin", "zebra", 3), DataError, "'zebra' is not in the vocabulary");
}

TEST(Embed, LanguageModelEmbeddingsStartFromWordVectors) {
  TempDir t;
  const std::string model_dir = save_tiny_model(t.path, {"the dog ran to the cat", "a dog and a cat", "the red dog"});
  model::CausalLm m = model::load_pretrained(model_dir);
  const auto tok = tok::BpeTokenizer::load(model_dir + "/tokenizer.json");
  const int64_t d = m->config().hidden_size;
  WordVectors v;
  v.dim = static_cast<int>(d);
  v.words = {"dog", "cat"};
  for (int64_t i = 0; i < 2 * d; ++i) v.data.push_back(static_cast<float>(i % d) * (i < d ? 1.0f : -1.0f) + 0.5f);
  at::Tensor table;
  for (const auto& p : m->named_parameters())
    if (p.key().find("embed_tokens.weight") != std::string::npos) table = p.value();
  ASSERT_TRUE(table.defined());
  const at::Tensor before = table.detach().clone();
  const train::EmbeddingInit r = train::init_embeddings_from_vectors(*m, tok, v, 0.02);
  EXPECT_GE(r.word_tokens, r.initialised);
  // The rows of the tokens " dog" / "dog" now point along the dog vector with norm 0.02 sqrt(d); every
  // row of a token that is not a known word is untouched.
  const at::Tensor dog = at::tensor(std::vector<float>(v.row(0), v.row(0) + d));
  int64_t changed = 0;
  for (int64_t id = 0; id < tok.vocab_size(); ++id) {
    std::string w = tok.decode({static_cast<int32_t>(id)});
    if (!w.empty() && w[0] == ' ') w.erase(0, 1);
    const at::Tensor row = table[id].detach();
    if (w == "dog") {
      EXPECT_NEAR(row.norm().item<double>(), 0.02 * std::sqrt(static_cast<double>(d)), 1e-5);
      EXPECT_NEAR(at::cosine_similarity(row, dog, 0).item<double>(), 1.0, 1e-5);
    }
    if (w != "dog" && w != "cat") {
      EXPECT_TRUE(at::equal(row, before[id])) << w;
    }
    changed += !at::equal(row, before[id]);
  }
  EXPECT_EQ(changed, r.initialised);
  EXPECT_GE(r.initialised, 1);
  v.dim = static_cast<int>(d) + 1;
  EXPECT_THROW_MSG(train::init_embeddings_from_vectors(*m, tok, v, 0.02), ConfigError, "the vectors have");
}
