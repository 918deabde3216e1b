// Source -> target generation by fine-tuning a pretrained causal LM: each pair is one sequence
// `source <eot> target <eot>` with the loss on the target and its closing <eot> only; decoding
// feeds `source <eot>` and continues until <eot>, greedily and with beam search. BLEU and chrF
// (sacreBLEU's) and ROUGE-1/2/L (rouge-score's, with the Porter stemmer for English targets) are
// reported beside the copy-source baseline (the source itself as the output).
//
// Tasks: "wordnet-define" (a word -> its WordNet gloss, the built-in one; every 10th synset is
// test) and parallel files (Multi30k en -> de, SciTLDR abstract -> TLDR in ../shared/data).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace dsforge::tasks {

struct Pair {
  std::string source, target;
};
struct Seq2SeqData {
  std::string name;
  std::vector<Pair> train, test;
  // Several references per test pair (SciTLDR's all_targets.tsv); empty = test[i].target alone.
  std::vector<std::vector<std::string>> test_references;
  bool english_target = true;  // ROUGE stems English words
};

// Word (underscores as spaces) -> the gloss's definition (up to the first ';'), both splits
// subsampled deterministically to max_train / max_test (0 = all).
Seq2SeqData wordnet_define_task(const std::string& wordnet_dir, int64_t max_train, int64_t max_test, uint64_t seed);
// Line-aligned files; at most `max` pairs (0 = all). Errors name the files and the line counts.
std::vector<Pair> read_parallel(const std::string& source_path, const std::string& target_path, int64_t max = 0);
// One line per segment, its references separated by tabs (the first field dropped when `id_column`).
std::vector<std::vector<std::string>> read_references(const std::string& path, bool id_column, int64_t max = 0);

struct Seq2SeqOptions {
  int64_t epochs = 2;
  int64_t batch = 16;
  double lr = 1e-3;           // warmup over 5% of the steps, then linear decay to 0
  double weight_decay = 0.01;
  int64_t max_source = 96;    // tokens (longer sources keep their beginning)
  int64_t max_target = 48;    // tokens kept for training; decoding stops after as many
  int64_t beam = 4;           // 0 = greedy only
  double length_penalty = 1.0;
  uint64_t seed = 0;
  std::vector<std::string> overrides;  // run-config overrides for the training loop (tasks/finetune_run.h)
};

struct GenerationScores {
  double bleu = 0, chrf = 0;
  double rouge1 = 0, rouge2 = 0, rougeL = 0;  // F-measures, 0..100
  std::string bleu_signature;
};
// refs[i]: the references of segment i (one or more). Segments with fewer references than the most
// are padded by repeating their first one, which changes no score (BLEU clips by the best count over
// references, chrF and ROUGE take the best reference).
GenerationScores score_generation(const std::vector<std::string>& hyps, const std::vector<std::vector<std::string>>& refs,
                                  bool stem);

struct Seq2SeqResult {
  std::map<std::string, GenerationScores> scores;  // "greedy", "beam", "copy-source"
  std::map<std::string, std::vector<std::string>> outputs;  // "greedy", "beam"
  std::vector<double> epoch_losses;
  double train_seconds = 0, decode_seconds = 0;
};

// Loads `model_dir`, fine-tunes on data.train, decodes data.test; with `out_dir` writes there
// seq2seq.json and the outputs (greedy.txt, beam.txt, with source.txt and reference.txt).
Seq2SeqResult finetune_seq2seq(const std::string& model_dir, const Seq2SeqData& data, const Seq2SeqOptions& opt,
                               const std::string& out_dir = "");
std::string seq2seq_json(const Seq2SeqData& data, const Seq2SeqResult& r);
std::string seq2seq_table(const Seq2SeqResult& r);

}  // namespace dsforge::tasks
