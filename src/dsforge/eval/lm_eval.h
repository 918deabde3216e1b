// Language-model evaluation: mean next-token cross-entropy and perplexity over a token shard, and
// the unigram baseline (the perplexity of predicting every token by its training frequency).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dsforge/model/causal_lm.h"

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
LmEval evaluate_lm(model::CausalLm m, const std::string& shard_path, int64_t seq_len, int64_t batch,
                   int64_t max_batches, const std::vector<int64_t>* token_bytes = nullptr);

// Unigram model fitted on `train_shard` with add-one smoothing over `vocab_size`, scored on
// every token of `eval_shard`.
LmEval unigram_baseline(const std::string& train_shard, const std::string& eval_shard, int64_t vocab_size,
                        const std::vector<int64_t>* token_bytes = nullptr);

}  // namespace dsforge::eval
