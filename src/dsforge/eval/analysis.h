// `dsforge analyze`: where a model goes wrong and whether training went well.
//
//   diagnose_fit    reads a run's metrics.jsonl and names over-fitting (validation loss rising from
//                   its minimum while training loss keeps falling), under-fitting (training loss
//                   still falling fast at the end, or far above what it started at relative to the
//                   drop), instability (loss spikes, non-finite steps, rollbacks), with the steps and
//                   values that show it and a suggestion.
//   lm_hard_cases   per-token losses of a model on a token shard: the vocabulary items and the
//                   documents (end-of-text separated) with the highest mean loss.
//   classification  from finetune's predictions.tsv: the hardest examples (highest loss), per-class
//                   errors and the most confused pairs.
//   mine_hard       from finetune's train_predictions.tsv: a re-weighted training file (text<TAB>label)
//                   that repeats the hardest fraction of the examples, to fine-tune on again.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "dsforge/model/causal_lm.h"

namespace dsforge::eval {

struct Finding {
  std::string kind;        // "over-fitting", "under-fitting", "instability", "healthy", "too few points to judge"
  std::string evidence;    // steps and values
  std::string suggestion;
};
// `eval_json` (optional): the run's eval.json; a model worse than its unigram baseline is under-fitting.
std::vector<Finding> diagnose_fit(const std::string& metrics_jsonl, const std::string& eval_json = "");

struct HardItem {
  std::string text;   // the token or the document
  double mean_loss = 0;
  int64_t count = 0;  // occurrences (tokens) or length in tokens (documents)
};
struct LmHardCases {
  std::vector<HardItem> tokens, documents;
};
// decode(ids) renders token ids as text; eot_id separates documents (-1: none).
LmHardCases lm_hard_cases(model::CausalLm m, const std::string& shard_path, int64_t seq_len, int64_t top_k,
                          int64_t min_count, int64_t eot_id,
                          const std::function<std::string(const std::vector<int32_t>&)>& decode);

struct ClassificationErrors {
  std::vector<std::vector<std::string>> hardest;            // text, gold, pred, loss
  std::vector<std::pair<std::string, int64_t>> confused;    // "gold -> pred", count
  std::vector<std::pair<std::string, double>> per_class_error;  // label, error rate
};
ClassificationErrors classification_errors(const std::string& predictions_tsv, int64_t top_k);

struct MiningResult {
  int64_t examples = 0, hard = 0, written = 0;
  double loss_threshold = 0;                       // the lowest loss among the repeated examples
  std::vector<std::pair<std::string, int64_t>> hard_per_class;  // label, hard examples, most first
};
// Every example once, then the `fraction` with the highest loss repeated until each appears `factor`
// times in all. Errors name the file and line.
MiningResult mine_hard_examples(const std::string& train_predictions_tsv, const std::string& out_tsv, double fraction,
                                int64_t factor);

std::string analysis_text(const std::vector<Finding>& fit, const LmHardCases* lm, const ClassificationErrors* cls,
                          const MiningResult* mining = nullptr);
// The same as JSON (analysis.json, which the HTML report shows).
std::string analysis_json(const std::vector<Finding>& fit, const LmHardCases* lm, const ClassificationErrors* cls,
                          const MiningResult* mining = nullptr);

// `dsforge analyze RUN_DIR`: fit diagnosis from RUN_DIR/metrics.jsonl and, when RUN_DIR/model exists,
// the hardest tokens and documents of the validation shard. Writes RUN_DIR/analysis.json; returns the text.
std::string analyze_run(const std::string& run_dir, int64_t top_k);
// `dsforge analyze --finetune DIR`: hardest test examples, per-class errors and confused pairs from
// DIR/predictions.tsv; with `mine_out`, the re-weighted training file from DIR/train_predictions.tsv.
// Writes DIR/analysis.json; returns the text.
std::string analyze_finetune(const std::string& dir, int64_t top_k, const std::string& mine_out, double fraction,
                             int64_t factor);

}  // namespace dsforge::eval
