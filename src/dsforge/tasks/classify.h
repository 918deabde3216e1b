// Text classification by fine-tuning a pretrained dsforge language model end to end: the mean of
// the last hidden states over a text's tokens feeds a linear head, and the whole network trains with
// cross-entropy. Reports accuracy and F1 beside the majority-class baseline, so a reader sees what
// the model adds.
//
// Tasks: "wordnet-lexname" (the built-in one: a WordNet gloss -> its lexicographer file, e.g.
// noun.animal, from Debian's wordnet-base) and "tsv" (text<TAB>label files: SST-2, AG News, the UCI
// sentiment sentences in ../shared/data/text_classification).
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "dsforge/eval/text_metrics.h"
#include "dsforge/train/attack_options.h"

namespace dsforge::tasks {

struct Example {
  std::string text, label;
};
struct ClassifyData {
  std::string name;
  std::vector<Example> train, test;
};

// text<TAB>label per line (the last tab separates); a first line whose label reads "label" is a
// header; at most `max` examples (0 = all). Errors name file:line.
std::vector<Example> read_tsv_examples(const std::string& path, int64_t max = 0);
// Glosses -> lexicographer files; every 10th synset (in file order) goes to test, then both splits
// are subsampled deterministically to max_train / max_test (0 = all).
ClassifyData wordnet_lexname_task(const std::string& wordnet_dir, int64_t max_train, int64_t max_test, uint64_t seed);

struct FinetuneOptions {
  int64_t epochs = 3;
  int64_t batch = 32;
  double lr = 1e-3;         // peak; linear warmup over 5% of steps, linear decay to 0
  double weight_decay = 0.01;
  int64_t max_len = 64;     // tokens per text (truncated)
  uint64_t seed = 0;
  // Run-config overrides for the training loop ("train.beta2=0.98", "train.precision=bf16"); see
  // tasks/finetune_run.h for the fine-tuning defaults they change.
  std::vector<std::string> overrides;

  // Robustness and fairness options (dsforge robust train, dsforge fairness train):
  // adversarial training on the token embeddings (a DeepSeek backbone): mode "pgd" trains on
  // (1 - w) CE(clean) + w CE(attacked), "freelb" on FreeLB's mean over adversarial->steps ascent points.
  std::optional<train::AttackOptions> adversarial;
  std::string adversarial_mode = "pgd";
  double adversarial_weight = 0.5;
  // A rewrite of each training text keyed by a seed that depends on (seed, step, row), e.g. synonym
  // augmentation; nullptr = the texts as they are.
  std::function<std::string(const std::string& text, uint64_t seed)> augment_text;
  // Counterfactual logit pairing (Garg et al. 2019): adds clp_weight x mean |logits(x) - logits(x')| over
  // the batch's texts whose counterfactual x' differs from x.
  std::function<std::string(const std::string& text)> counterfactual;
  double clp_weight = 0;
};

struct Prediction {
  std::string label;
  double loss = 0;  // cross-entropy of the gold label (infinite for a label the training split lacks)
};

struct FinetuneResult {
  eval::ClassificationReport model, majority;
  std::vector<Prediction> test_predictions;  // aligned with data.test
  std::string majority_label;
  std::vector<double> epoch_losses;
  double train_seconds = 0;
};

// Loads `model_dir` (config.json, model.safetensors, tokenizer.json), fine-tunes, evaluates on
// data.test; with `out_dir`, writes there finetune.json (metrics, per class, confusion matrix),
// classifier.safetensors, predictions.tsv and train_predictions.tsv (text, gold, pred, loss: what
// `dsforge analyze` reads) and tb/ (TensorBoard: losses, accuracy, per-class F1, confusion table).
FinetuneResult finetune_classifier(const std::string& model_dir, const ClassifyData& data, const FinetuneOptions& opt,
                                   const std::string& out_dir = "");
std::string finetune_json(const ClassifyData& data, const FinetuneResult& r);
std::string finetune_table(const FinetuneResult& r);
std::string predictions_tsv(const std::vector<Example>& examples, const std::vector<Prediction>& preds);
std::string confusion_markdown(const eval::ClassificationReport& c);

}  // namespace dsforge::tasks
