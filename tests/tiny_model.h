// A fresh tiny model folder for fine-tuning tests: a byte-level BPE of 300 tokens trained on `docs`
// and a randomly initialised model of `preset` (or a given config) saved beside it (config.json,
// model.safetensors, tokenizer.json). Returns the folder.
#pragma once
#include <string>
#include <vector>

#include "dsforge/core/io.h"
#include "dsforge/model/causal_lm.h"
#include "dsforge/model/config.h"
#include "dsforge/model/io.h"
#include "dsforge/tokenizer/bpe.h"

namespace dsforge {

// With `mc` as given (its vocabulary set to the tokenizer's).
inline std::string save_tiny_model(const std::string& dir, const std::vector<std::string>& docs, model::ModelConfig mc) {
  tok::BpeTokenizer::TrainOptions to;
  to.vocab_size = 300;
  auto tok = tok::BpeTokenizer::train(docs, to);
  mc.vocab_size = tok.vocab_size();
  model::CausalLm m = model::build_model(mc);
  m->init_weights(0.02, 1);
  const std::string model_dir = path_join(dir, "model");
  model::save_pretrained(model_dir, *m);
  tok.save(path_join(model_dir, "tokenizer.json"));
  return model_dir;
}

inline std::string save_tiny_model(const std::string& dir, const std::vector<std::string>& docs,
                                   const std::string& preset = "nano") {
  return save_tiny_model(dir, docs, model::model_config_from_preset(preset));
}

}  // namespace dsforge
