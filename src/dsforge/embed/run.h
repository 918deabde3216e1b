// The `dsforge embed ...` commands as library calls (the CLI only fills these structs).
#pragma once
#include <cstdint>
#include <string>

#include "dsforge/embed/word2vec.h"

namespace dsforge::embed {

// Trains and writes vectors.txt, vectors.bin, embeddings.safetensors, vocab.txt and train.json into
// `out_dir`; returns train.json's text.
std::string run_embed_train(const EmbedConfig& cfg, const std::string& out_dir);

struct EmbedEvalRequest {
  std::string vectors;
  std::string wordsim, simlex, analogies;  // "" = skip that set
  int64_t restrict_vocab = 300000;
};
std::string run_embed_eval(const EmbedEvalRequest& req);  // JSON

// "word<TAB>cosine" lines for the k nearest words.
std::string run_embed_neighbors(const std::string& vectors, const std::string& word, int k);

}  // namespace dsforge::embed
