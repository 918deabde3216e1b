// Intrinsic evaluation of word vectors as gensim's KeyedVectors.evaluate_word_pairs and
// evaluate_word_analogies compute it: words lower-cased (case_insensitive=True; the most frequent
// casing wins), only the first `restrict_vocab` rows are in play (gensim's default 300000; the
// original word2vec compute-accuracy used 30000), questions or pairs with a word outside them are
// counted as OOV and left out of the score.
//
//   WordVectors v = load_vectors("out/vectors.bin");
//   SimilarityResult ws = evaluate_similarity(v, "wordsim353.tsv");       // ws.spearman
//   AnalogyResult an = evaluate_analogies(v, "questions-words.txt");      // an.accuracy_add / _mul
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dsforge/embed/vectors.h"

namespace dsforge::embed {

// Ranks 1..n with tied values given the mean of their ranks.
std::vector<double> average_ranks(const std::vector<double>& x);
double pearson(const std::vector<double>& x, const std::vector<double>& y);
double spearman(const std::vector<double>& x, const std::vector<double>& y);  // Pearson of the average ranks

struct SimilarityResult {
  std::string file;
  int64_t pairs = 0, oov = 0;  // pairs read; pairs with a word outside the vocabulary
  double spearman = 0, pearson = 0;
  double oov_ratio() const { return pairs ? 100.0 * static_cast<double>(oov) / static_cast<double>(pairs) : 0; }
};
// "word1 TAB word2 TAB score" lines; lines starting with '#' are comments. A line in another shape
// is a DataError naming file:line.
SimilarityResult evaluate_similarity(const WordVectors& v, const std::string& path, int64_t restrict_vocab = 300000);

struct AnalogySection {
  std::string name;
  int64_t questions = 0, oov = 0, correct_add = 0, correct_mul = 0;
};
struct AnalogyResult {
  std::string file;
  int64_t questions = 0, oov = 0, correct_add = 0, correct_mul = 0;
  std::vector<AnalogySection> sections;
  int64_t answered() const { return questions - oov; }
  double accuracy_add() const { return answered() ? static_cast<double>(correct_add) / static_cast<double>(answered()) : 0; }
  double accuracy_mul() const { return answered() ? static_cast<double>(correct_mul) / static_cast<double>(answered()) : 0; }
};
// a : b :: c : d lines under ": section" headers (word2vec's questions-words.txt). The answer is the
// word x (not a, b or c) maximising 3CosAdd cos(x, b) - cos(x, a) + cos(x, c), and, separately,
// 3CosMul (Levy & Goldberg 2014) as gensim's most_similar_cosmul: s(x,b) s(x,c) / (s(x,a) + 1e-6)
// with s = (1 + cos) / 2.
AnalogyResult evaluate_analogies(const WordVectors& v, const std::string& path, int64_t restrict_vocab = 300000);

}  // namespace dsforge::embed
