// Translator's decoding for a model already in memory: what fine-tuning (tasks/seq2seq.cpp) scores
// its test split with, so that `finetune --task parallel` and `data back-translate` decode alike.
#pragma once
#include <string>
#include <vector>

#include "dsforge/model/causal_lm.h"
#include "dsforge/tasks/translate.h"
#include "dsforge/tokenizer/bpe.h"

namespace dsforge::tasks {

// `eot` closes each source and stops each output (tasks/translate.h has the details).
std::vector<std::string> translate_with(model::CausalLm m, const tok::BpeTokenizer& tok, int64_t eot,
                                        const std::vector<std::string>& sources, const TranslateOptions& opt);

}  // namespace dsforge::tasks
