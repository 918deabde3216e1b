// Vocabulary growth: when a new domain needs tokens the tokenizer lacks (a new script), learn N more
// BPE merges on the new data on top of the existing tokenizer and give the model rows for them.
//
// extend_tokenizer keeps every old id, byte string and merge (same ranks, same order); the new merges
// rank after all old ones, learned on the new documents' pre-tokens as the old tokenizer encodes them
// (count the adjacent pairs, merge the most frequent, ties toward the lexicographically greater pair of
// byte strings, as the trainer does). New token k gets id V + k. Since a new merge applies only where
// no old one does, any text none of whose pre-tokens holds a new token's pair after the old merges
// (English text, when the new merges are over CJK bytes) encodes exactly as before.
//
// grow_model_folder writes a copy of a model folder with V + N tokens: the embedding and output-head
// rows (every tensor whose first dimension is the vocabulary) of a new token are the mean of the rows
// of the byte tokens its bytes are; old rows are copied. Its continual state grows too: Fisher rows of
// new tokens are 0 (nothing to protect yet), their anchors the new rows.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dsforge/tokenizer/bpe.h"

namespace dsforge::continual {

// `docs` are the new domain's documents. Fewer than `n_merges` merges are learned when no pair occurs
// twice any more.
tok::BpeTokenizer extend_tokenizer(const tok::BpeTokenizer& base, const std::vector<std::string>& docs, int64_t n_merges);

// The model folder `from` with its tokenizer extended by `n_merges` merges learned on the documents of
// `train_jsonl` (a prepared split, data/splits.h) -> `out` (config.json, model.safetensors,
// tokenizer.json, dsforge_training.json, continual/). Reuses `out` when it was made from the same inputs.
void grow_model_folder(const std::string& from, const std::string& out, const std::string& train_jsonl, int64_t n_merges,
                       uint64_t seed);

}  // namespace dsforge::continual
