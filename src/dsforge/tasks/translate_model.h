// Translator's decoding for a model already in memory: what fine-tuning (tasks/seq2seq.cpp) scores
// its test split with, so that `finetune --task parallel` and `data back-translate` decode alike.
#pragma once
#include <string>
#include <vector>

#include "dsforge/model/causal_lm.h"
#include "dsforge/tasks/translate.h"
#include "dsforge/tokenizer/bpe.h"

namespace dsforge::tasks {

// Tokens a source keeps and a target may take in a model of `context` positions: the source at most
// half the context, the target what is left after it and the two <eot> (at least 1). Fine-tuning and
// decoding share it, so a model is never asked for more than it was trained on.
struct TokenBudget {
  int64_t source = 0, target = 0;
};
TokenBudget token_budget(int64_t context, int64_t max_source, int64_t max_target);

// `eot` closes each source and stops each output (tasks/translate.h has the details).
std::vector<std::string> translate_with(model::CausalLm m, const tok::BpeTokenizer& tok, int64_t eot,
                                        const std::vector<std::string>& sources, const TranslateOptions& opt);

}  // namespace dsforge::tasks
