#include "dsforge/train/embedding_init.h"

#include <ATen/ATen.h>

#include <cctype>
#include <cmath>

#include "dsforge/core/error.h"
#include "dsforge/core/text.h"
#include "dsforge/embed/vectors.h"
#include "dsforge/model/causal_lm.h"
#include "dsforge/tokenizer/bpe.h"

namespace dsforge::train {

EmbeddingInit init_embeddings_from_vectors(model::CausalLmImpl& m, const tok::BpeTokenizer& tok, const embed::WordVectors& v, double init_std) {
  at::Tensor table;
  for (const auto& p : m.named_parameters())
    if (ends_with(p.key(), "embed_tokens.weight") || ends_with(p.key(), "wte.weight") || ends_with(p.key(), "embedding.weight")) {
      table = p.value();
      break;
    }
  if (!table.defined()) throw ConfigError("train.init_embeddings: the model has no input-embedding table to initialise");
  const int64_t d = table.size(1);
  if (v.dim != d)
    throw ConfigError(fmt("train.init_embeddings: the vectors have ", v.dim, " dimensions, the model's embeddings ", d,
                          " (train them with dsforge embed train --dim ", d, ")"));
  EmbeddingInit r;
  const double norm = init_std * std::sqrt(static_cast<double>(d));
  at::NoGradGuard ng;
  std::vector<float> row(static_cast<size_t>(d));
  for (int64_t id = 0; id < std::min<int64_t>(table.size(0), tok.vocab_size()); ++id) {
    std::string word = tok.decode({static_cast<int32_t>(id)});
    if (!word.empty() && word[0] == ' ') word.erase(0, 1);
    if (word.empty() || word_spans(word).size() != 1 || word_spans(word)[0].second != word.size() || word.find('\'') != std::string::npos)
      continue;
    ++r.word_tokens;
    int64_t i = v.find(word);
    if (i < 0) i = v.find(lower_ascii(word));
    if (i < 0) continue;
    const float* src = v.row(static_cast<size_t>(i));
    double n = 0;
    for (int64_t k = 0; k < d; ++k) n += static_cast<double>(src[k]) * src[k];
    if (n <= 0) continue;
    const auto scale = static_cast<float>(norm / std::sqrt(n));
    for (int64_t k = 0; k < d; ++k) row[static_cast<size_t>(k)] = src[k] * scale;
    table[id].copy_(at::tensor(row, at::kFloat).to(table.device(), table.scalar_type()));
    ++r.initialised;
  }
  return r;
}

}  // namespace dsforge::train
