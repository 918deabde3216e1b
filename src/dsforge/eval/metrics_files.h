// `dsforge metrics ...`: the text metrics over line-aligned files (one item per line), as one JSON
// object. Bad input is refused naming the file: missing or empty files, line counts that differ,
// non-numeric regression values, labels outside a given label set.
#pragma once
#include <string>
#include <vector>

namespace dsforge::eval {

struct MetricsRequest {
  std::string kind;                 // bleu, chrf, ter, rouge, paired-bs, classification, regression
  std::string hyp;                  // bleu / chrf / rouge: hypotheses
  std::vector<std::string> refs;    // one file per reference stream
  std::string pred, gold;           // classification / regression
  bool stem = false;                // rouge: Porter stemmer
  std::vector<std::string> rouge_types{"rouge1", "rouge2", "rougeL", "rougeLsum"};
  std::vector<std::string> labels;  // classification: the allowed labels (empty = any)
  // bleu / chrf / ter / paired-bs (sacreBLEU's options)
  std::string tokenize = "13a";     // bleu: 13a, intl, zh, char, none
  bool lowercase = false;           // bleu, chrf
  int char_order = 6, word_order = 0, beta = 2;  // chrf; --word-order 2 = chrF++
  bool case_sensitive = false;      // ter
  bool sentence = false;            // also list per-line scores
  // paired-bs: `baseline` against each of `systems` on `refs`, for each of `metrics`
  std::string baseline;
  std::vector<std::string> systems;
  std::vector<std::string> metrics{"bleu", "chrf"};
  int n_bootstrap = 1000;
  uint64_t seed = 12345;
};

std::string run_metrics(const MetricsRequest& req);

// Lines of a UTF-8 text file (a final newline does not make an extra empty line; "\r" stripped);
// throws DataError naming the file when it is missing or has no lines.
std::vector<std::string> read_lines(const std::string& path);

}  // namespace dsforge::eval
