// Generation, classification and regression metrics computed exactly as the tools people report
// them with, so numbers are comparable with published ones.
//
//   BLEU   sacreBLEU's defaults: 13a tokenisation, corpus-level n-gram statistics (n = 1..4) clipped
//          by the maximum count over references, closest reference length, brevity penalty, "exp"
//          smoothing for zero counts; sentence BLEU uses the effective order as sacreBLEU's
//          sentence_bleu does. The signature names the settings.
//   chrF   sacreBLEU's defaults: character n-grams 1..6 of each line with whitespace removed,
//          beta = 2, corpus statistics summed; precision and recall averaged over the orders that
//          occur, then F-beta (with several references the best-scoring one per segment).
//          BLEU and chrF are defined in mt_metrics.h, with sacreBLEU's other options (tokenizers intl,
//          zh, char, none; lowercase; chrF++), TER and paired bootstrap resampling; the functions
//          here are their default settings.
//   ROUGE  Google's rouge-score: lowercase, non-alphanumerics to spaces, optional Porter stemmer
//          (NLTK's, on tokens longer than 3 characters); ROUGE-N by clipped n-gram overlap, ROUGE-L
//          by LCS, ROUGE-Lsum by summary-level union LCS over sentences; with several references the
//          best F per example; the corpus figure is the mean over examples.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace dsforge::eval {

// ---------------------------------------------------------------- BLEU
std::string tokenize_13a(const std::string& line);

struct BleuScore {
  double score = 0;                 // 0..100
  std::vector<int64_t> counts, totals;
  std::vector<double> precisions;   // 0..100
  double bp = 0;
  int64_t sys_len = 0, ref_len = 0;
  std::string signature;
};
// refs[r][i] is reference r of segment i; every stream has hyps.size() lines.
// DataError unless there is a reference stream and every one has a line per hypothesis.
void check_reference_streams(const std::vector<std::string>& hyps, const std::vector<std::vector<std::string>>& refs);
BleuScore corpus_bleu(const std::vector<std::string>& hyps, const std::vector<std::vector<std::string>>& refs);
BleuScore sentence_bleu(const std::string& hyp, const std::vector<std::string>& refs);

// ---------------------------------------------------------------- chrF
struct ChrfScore {
  double score = 0;  // 0..100
  std::string signature;
};
ChrfScore corpus_chrf(const std::vector<std::string>& hyps, const std::vector<std::vector<std::string>>& refs);

// ---------------------------------------------------------------- ROUGE
// NLTK's PorterStemmer in its default (NLTK_EXTENSIONS) mode, on a lowercase ASCII word.
std::string porter_stem(const std::string& word);
std::vector<std::string> rouge_tokenize(const std::string& text, bool stem);

struct PRF {
  double precision = 0, recall = 0, fmeasure = 0;
};
// One example: kind is "rouge1".."rouge9", "rougeL" or "rougeLsum" (sentences split at '\n').
PRF rouge(const std::string& kind, const std::string& target, const std::string& prediction, bool stem);
// Means over examples; for each example the reference with the best F.
std::map<std::string, PRF> corpus_rouge(const std::vector<std::string>& hyps, const std::vector<std::vector<std::string>>& refs,
                                        const std::vector<std::string>& kinds, bool stem);

// ---------------------------------------------------------------- classification, regression
struct ClassificationReport {
  std::vector<std::string> labels;           // sorted; gold and predicted
  std::vector<std::vector<int64_t>> confusion;  // [gold][pred]
  double accuracy = 0;
  PRF micro, macro, weighted;
  std::vector<PRF> per_class;
  std::vector<int64_t> support;
};
ClassificationReport classification_report(const std::vector<std::string>& pred, const std::vector<std::string>& gold);
// The indices of the `k` largest values, largest first, ties by index (the hardest examples by loss).
std::vector<int64_t> highest_first(const std::vector<double>& values, int64_t k);

struct RegressionReport {
  double mse = 0, mae = 0, rmse = 0, r2 = 0;
  int64_t n = 0;
};
RegressionReport regression_report(const std::vector<double>& pred, const std::vector<double>& gold);

}  // namespace dsforge::eval
