#include "dsforge/tasks/translate.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/model/causal_lm.h"
#include "dsforge/model/generate.h"
#include "dsforge/model/io.h"
#include "dsforge/tasks/translate_model.h"
#include "dsforge/tokenizer/bpe.h"

namespace dsforge::tasks {

struct Translator::Impl {
  model::CausalLm model{nullptr};
  tok::BpeTokenizer tok;
  int64_t eot = -1;
};

Translator::Translator(const std::string& model_dir) : impl_(std::make_unique<Impl>()) {
  impl_->model = model::load_pretrained(model_dir);
  impl_->model->eval();
  impl_->tok = tok::BpeTokenizer::load(path_join(model_dir, "tokenizer.json"));
  impl_->eot = impl_->tok.eot_id();
  if (impl_->eot < 0) throw ConfigError(fmt(model_dir, "/tokenizer.json: no special token to close a source sentence"));
}

Translator::~Translator() = default;
Translator::Translator(Translator&&) noexcept = default;
Translator& Translator::operator=(Translator&&) noexcept = default;

TokenBudget token_budget(int64_t context, int64_t max_source, int64_t max_target) {
  TokenBudget b;
  b.source = std::min(max_source, context / 2);
  b.target = std::max<int64_t>(1, std::min(max_target, context - b.source - 2));
  return b;
}

std::vector<std::string> Translator::translate(const std::vector<std::string>& sources, const TranslateOptions& opt) const {
  return translate_with(impl_->model, impl_->tok, impl_->eot, sources, opt);
}

std::vector<std::string> translate_with(model::CausalLm model, const tok::BpeTokenizer& tok, int64_t eot,
                                        const std::vector<std::string>& sources, const TranslateOptions& opt) {
  if (opt.beam < 1) throw ConfigError(fmt("translate: beam ", opt.beam, " must be >= 1"));
  if (opt.batch < 1) throw ConfigError(fmt("translate: batch ", opt.batch, " must be >= 1"));
  if (opt.temperature < 0) throw ConfigError(fmt("translate: temperature ", opt.temperature, " must be >= 0"));
  if (opt.beam > 1 && opt.temperature > 0) throw ConfigError("translate: choose beam search or sampling, not both");
  const TokenBudget budget = token_budget(model->config().max_position_embeddings, opt.max_source, opt.max_target);
  const int64_t max_src = budget.source, max_new = budget.target + 1;  // + the closing <eot>

  std::vector<std::vector<int64_t>> prompts(sources.size());
  for (size_t i = 0; i < sources.size(); ++i) {
    if (sources[i].empty()) continue;
    const auto ids = tok.encode(sources[i], false);
    prompts[i].assign(ids.begin(), ids.begin() + std::min<int64_t>(max_src, static_cast<int64_t>(ids.size())));
    prompts[i].push_back(eot);
  }
  auto text = [&](std::vector<int64_t> ids) {
    if (!ids.empty() && ids.back() == eot) ids.pop_back();
    std::string t = tok.decode(std::vector<int32_t>(ids.begin(), ids.end()));
    std::replace(t.begin(), t.end(), '\n', ' ');
    const size_t b = t.find_first_not_of(' '), e = t.find_last_not_of(' ');
    return b == std::string::npos ? std::string() : t.substr(b, e - b + 1);
  };

  std::vector<std::string> out(sources.size());
  if (opt.beam > 1) {
    model::BeamOptions bo;
    bo.beam = opt.beam;
    bo.max_new_tokens = max_new;
    bo.length_penalty = opt.length_penalty;
    bo.stop_tokens = {eot};
    for (size_t i = 0; i < sources.size(); ++i)
      if (!prompts[i].empty()) out[i] = text(model::beam_search(model, prompts[i], bo).tokens);
    return out;
  }
  // Batches of similar lengths: sorted by prompt length, so left padding stays short.
  std::vector<size_t> order;
  for (size_t i = 0; i < sources.size(); ++i)
    if (!prompts[i].empty()) order.push_back(i);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return prompts[a].size() < prompts[b].size(); });
  model::SampleOptions so;
  so.max_new_tokens = max_new;
  so.temperature = opt.temperature;
  so.top_p = opt.top_p;
  so.top_k = opt.top_k;
  so.stop_tokens = {eot};
  for (size_t first = 0; first < order.size(); first += static_cast<size_t>(opt.batch)) {
    const size_t n = std::min(order.size() - first, static_cast<size_t>(opt.batch));
    std::vector<std::vector<int64_t>> batch;
    for (size_t k = 0; k < n; ++k) batch.push_back(prompts[order[first + k]]);
    so.seed = opt.seed + order[first];
    const auto gen = model::generate(model, batch, so);
    for (size_t k = 0; k < n; ++k) out[order[first + k]] = text(gen[k]);
  }
  return out;
}

}  // namespace dsforge::tasks
