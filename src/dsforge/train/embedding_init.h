// Starting a language model's token embeddings from word vectors (train.init_embeddings): the row of every
// token that decodes to a whole word (letters only, a leading space allowed: " dog") the vector file knows
// (exactly, else in lower case) takes that word's vector, rescaled to the norm a freshly initialised row has
// (init_std x sqrt(d)); the other rows keep their random initialisation.
//
//   EmbeddingInit r = init_embeddings_from_vectors(*model, tokenizer, embed::load_vectors("vec/vectors.bin"), 0.02);
#pragma once
#include <cstdint>
#include <string>

namespace dsforge::embed {
struct WordVectors;
}
namespace dsforge::model {
class CausalLmImpl;
}
namespace dsforge::tok {
class BpeTokenizer;
}

namespace dsforge::train {

struct EmbeddingInit {
  int64_t word_tokens = 0;  // tokens that decode to a whole word
  int64_t initialised = 0;  // of those, found in the vectors
};

// Throws ConfigError when the vectors' dimension is not the model's hidden size, or the model has no
// input-embedding table dsforge knows.
EmbeddingInit init_embeddings_from_vectors(model::CausalLmImpl& m, const tok::BpeTokenizer& tok, const embed::WordVectors& v, double init_std);

}  // namespace dsforge::train
