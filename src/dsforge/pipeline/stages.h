// The pipeline's stages as library calls over one run folder. Each stage reads the previous
// stage's files, never its internals, and skips work whose outputs already match its inputs, so
// re-running a command continues where it stopped.
//
//   <run>/config.toml            resolved run config
//   <run>/data/                  train.jsonl, val.jsonl [, test.jsonl], stats.json (prepare;
//                                one {"text": ...} per line, see data/splits.h)
//   <run>/tokenizer.json         Hugging Face byte-level BPE              (tokenizer)
//   <run>/shards/                train_000.bin, val_000.bin [, test_000.bin], manifest (tokenize)
//   <run>/config.json            model config (HF DeepseekV3 names)       (train)
//   <run>/checkpoints/step_N/    model + optimizer + trainer state        (train)
//   <run>/model/                 config.json, model.safetensors, tokenizer.json (train, final)
//   <run>/metrics.jsonl, tb/     metrics and TensorBoard events           (train, eval)
//   <run>/eval.json              validation (and test) loss/perplexity + unigram baseline (eval)
//
// This header is free of libtorch so that the CLI compiles fast.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "dsforge/core/run_config.h"

namespace dsforge::pipeline {

// Exit codes of the stages.
constexpr int kOk = 0;
constexpr int kInterrupted = 130;

void configure_threads(const RunConfig& cfg);
void stage_prepare(const RunConfig& cfg);
// The quality report: of `inputs` (files, folders, globs; streamed) when given, else of the run's
// prepared corpus (with its per-filter counts). A readable table, or JSON.
std::string data_stats_report(const RunConfig& cfg, const std::vector<std::string>& inputs, bool as_json);
// Augmented copies of <run>/data/train.jsonl -> <run>/data/train_augmented.jsonl (augment.*); the
// tokenize stage adds them to the training shard only.
void stage_augment(const RunConfig& cfg);
struct AugmentCounts {
  int64_t documents = 0, eda_copies = 0, cda_copies = 0, bt_copies = 0;
  int64_t bt_dropped_identical = 0, bt_dropped_empty = 0;  // back-translated copies not written
};
// The same on any file: .jsonl records (data.jsonl_field) or a text file of one document per line
// in; augmented copies out as JSONL when `output` ends in .jsonl, else one per line. The counts go to
// `manifest` (default: output + ".manifest.json"); the stage's is <run>/data/augment.json.
AugmentCounts augment_file(const RunConfig& cfg, const std::string& input, const std::string& output,
                           const std::string& manifest = "");
std::string augment_counts_json(const AugmentCounts& c, const RunConfig& cfg);
void stage_tokenizer(const RunConfig& cfg);
void stage_tokenize(const RunConfig& cfg);
// What a caller hears of a training run (a search trial): each validation loss; returning true stops
// the run after that step (checkpoint saved, kInterrupted), as a pruned trial must.
struct TrainObserver {
  std::function<bool(int64_t step, double val_loss)> on_validation;
};
// kInterrupted when stopped by a signal or the observer (checkpoint saved).
int stage_train(const RunConfig& cfg, const TrainObserver& observer = {});
// Validation loss/perplexity/bits per byte of <run>/model beside the unigram baseline -> eval.json.
// The windows are the model's training seq_len (recorded in the model folder).
void stage_eval(const RunConfig& cfg);
// Loss, perplexity and bits per byte of any model folder on any UTF-8 text file, read as one stream
// (streamed through the tokenizer, bounded memory). seq_len 0 = the model's training seq_len;
// stride 0 = seq_len (see eval::evaluate_lm for what each target sees). Returns the JSON it reports.
std::string eval_text(const std::string& model_dir, const std::string& text_path, int64_t seq_len, int64_t stride,
                      int64_t batch, bool as_json);
// Prints "<prompt><completion>" per prompt (cfg.generate), streaming tokens as they come.
void stage_generate(const RunConfig& cfg, const std::string& model_dir = "");
// prepare -> tokenizer -> tokenize -> train -> eval -> generate.
int run_pipeline(const RunConfig& cfg);

}  // namespace dsforge::pipeline
