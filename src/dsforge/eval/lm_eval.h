// Language-model evaluation: mean next-token cross-entropy and perplexity over a token shard, and
// the unigram baseline (the perplexity of predicting every token by its training frequency).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "dsforge/model/causal_lm.h"
#include "dsforge/train/task.h"

namespace dsforge::eval {

struct LmEval {
  double loss = 0;        // nats per token
  double perplexity = 0;
  int64_t tokens = 0;
  int64_t bytes = 0;          // UTF-8 bytes of the predicted tokens (when token_bytes is given)
  double bits_per_byte = 0;   // total bits / bytes: comparable across tokenizers
};

// Windows of seq_len + 1 tokens, stride seq_len, in file order; max_batches = 0 means all.
// `token_bytes[id]` (optional): the bytes each token stands for, for bits per byte.
// Windows of seq_len + 1 tokens that start every `stride` tokens (0 = seq_len: non-overlapping, each
// target sees the tokens before it in its window, on average seq_len / 2 of context). With a smaller
// stride every window after the first scores only its last `stride` targets, which then see at least
// seq_len - stride tokens of context (the sliding-window perplexity); each target is scored once.
// Tokens after the last full window are not scored.
LmEval evaluate_lm(model::CausalLm m, const std::string& shard_path, int64_t seq_len, int64_t batch,
                   int64_t max_batches, const std::vector<int64_t>* token_bytes = nullptr, int64_t stride = 0);

// Unigram model fitted on `train_shard` with add-one smoothing over `vocab_size`, scored on
// every token of `eval_shard`.
// The validation callback of the training loop for a language model: evaluate_lm on the validation shard
// of `manifest_path` -> {"val_loss", "val_perplexity"}.
std::function<train::Scalars(int64_t step)> lm_validator(model::CausalLm m, const std::string& manifest_path,
                                                         int64_t seq_len, int64_t batch, int64_t max_batches);

LmEval unigram_baseline(const std::string& train_shard, const std::string& eval_shard, int64_t vocab_size,
                        const std::vector<int64_t>* token_bytes = nullptr);

}  // namespace dsforge::eval
