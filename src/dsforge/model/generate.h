// Autoregressive generation with each model's incremental state (DeepSeek: the MLA latent cache by
// default; GPT-2: a per-head KV cache; LSTM: its recurrent state).
//
// Prompts of different lengths decode together: they are left-padded to a common length and the
// pad positions are masked as keys (RoPE is relative, so the shift changes nothing). Each new token
// is passed to `on_token(row, id)` as soon as it is sampled, for streaming.
//
//   SampleOptions o; o.temperature = 0.8; o.top_p = 0.9; o.stop_tokens = {eot};
//   auto out = generate(model, {{1, 2, 3}, {4, 5}}, o, [](int64_t row, int64_t id) { ... });
#pragma once
#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "dsforge/model/causal_lm.h"

namespace dsforge::model {

struct SampleOptions {
  int64_t max_new_tokens = 32;
  double temperature = 0.0;         // 0 = greedy
  int64_t top_k = 0;                // 0 = no limit
  double top_p = 1.0;               // nucleus: smallest set with cumulative probability >= top_p
  double repetition_penalty = 1.0;  // > 1 discourages tokens already in the prompt or output (CTRL rule)
  std::vector<int64_t> stop_tokens;
  uint64_t seed = 0;
  CacheMode cache_mode = CacheMode::kLatentAbsorbed;
};

// Picks the next token from logits [V] (float) given the tokens so far; `u` is a uniform draw in [0, 1).
int64_t sample_token(at::Tensor logits, const std::vector<int64_t>& history, const SampleOptions& opts, double u);

// The summed next-token negative log-likelihood (nats) of `ids` scored through the decode path: windows
// of `window` tokens (each from an empty cache), fed to forward_cached in chunks of up to 64 tokens: the
// arithmetic generate runs (the fused step; int8 x int8 for w8a8 folders). Returns {nats, targets}.
// DeepSeek-V3 models only (Error otherwise).
std::pair<double, int64_t> decode_path_nll(CausalLm m, const std::vector<int64_t>& ids, int64_t window);

std::vector<std::vector<int64_t>> generate(CausalLm m, const std::vector<std::vector<int64_t>>& prompts,
                                           const SampleOptions& opts,
                                           const std::function<void(int64_t row, int64_t id)>& on_token = nullptr);

// Beam search for one prompt: keeps the `beam` best partial continuations by summed log-probability,
// collects a hypothesis when it emits a stop token, and returns the finished hypothesis with the best
// score / length^length_penalty (the stop token not included; unfinished beams count at
// max_new_tokens). beam = 1 is greedy decoding. Each step reorders the cached state to the surviving
// beams' parents (DecodeState::select_rows), so a step costs one cached forward of `beam` tokens.
struct BeamOptions {
  int64_t beam = 4;
  int64_t max_new_tokens = 32;
  double length_penalty = 1.0;
  std::vector<int64_t> stop_tokens;
  CacheMode cache_mode = CacheMode::kLatentAbsorbed;
};
struct BeamResult {
  std::vector<int64_t> tokens;  // the continuation, without the stop token
  double log_prob = 0;          // summed log-probability (stop token included when it ended)
};
BeamResult beam_search(CausalLm m, const std::vector<int64_t>& prompt, const BeamOptions& opts);

}  // namespace dsforge::model
