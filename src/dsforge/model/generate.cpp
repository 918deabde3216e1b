#include "dsforge/model/generate.h"

#include <ATen/ATen.h>

#include <random>
#include <unordered_set>

#include "dsforge/core/error.h"

namespace dsforge::model {

int64_t sample_token(at::Tensor logits, const std::vector<int64_t>& history, const SampleOptions& opts, double u) {
  logits = logits.to(at::kDouble).contiguous().clone();
  double* l = logits.data_ptr<double>();
  const int64_t V = logits.size(0);
  if (opts.repetition_penalty != 1.0) {
    std::unordered_set<int64_t> seen(history.begin(), history.end());
    for (int64_t id : seen)
      if (id >= 0 && id < V) l[id] = l[id] > 0 ? l[id] / opts.repetition_penalty : l[id] * opts.repetition_penalty;
  }
  if (opts.temperature <= 0) return logits.argmax().item<int64_t>();
  at::Tensor scaled = logits / opts.temperature;
  if (opts.top_k > 0 && opts.top_k < V) {
    const double kth = std::get<0>(scaled.topk(opts.top_k)).min().item<double>();
    scaled = scaled.masked_fill(scaled < kth, -INFINITY);
  }
  at::Tensor p = at::softmax(scaled, -1);
  auto sorted = p.sort(/*dim=*/-1, /*descending=*/true);
  at::Tensor sp = std::get<0>(sorted).contiguous(), si = std::get<1>(sorted).contiguous();
  const double* ps = sp.data_ptr<double>();
  const int64_t* is = si.data_ptr<int64_t>();
  // Keep the smallest prefix of the sorted distribution whose mass reaches top_p, renormalise, and
  // invert the CDF at u: reproducible for a seed on every build (no library RNG involved).
  int64_t keep = V;
  if (opts.top_p < 1.0) {
    double acc = 0;
    for (int64_t i = 0; i < V; ++i) {
      acc += ps[i];
      if (acc >= opts.top_p) { keep = i + 1; break; }
    }
  }
  double mass = 0;
  for (int64_t i = 0; i < keep; ++i) mass += ps[i];
  double target = u * mass, acc = 0;
  for (int64_t i = 0; i < keep; ++i) {
    acc += ps[i];
    if (target < acc) return is[i];
  }
  return is[keep - 1];
}

std::vector<std::vector<int64_t>> generate(CausalLm m, const std::vector<std::vector<int64_t>>& prompts,
                                           const SampleOptions& opts,
                                           const std::function<void(int64_t, int64_t)>& on_token) {
  const int64_t B = static_cast<int64_t>(prompts.size());
  if (B == 0) return {};
  size_t P = 0;
  for (const auto& p : prompts) {
    if (p.empty()) throw Error("generate: empty prompt");
    P = std::max(P, p.size());
  }
  at::NoGradGuard no_grad;
  const bool was_training = m->is_training();
  m->eval();
  const auto device = m->parameters().front().device();

  // Left-pad to P with token 0; mark pads so that no real token attends to them.
  const int64_t max_len = std::min(static_cast<int64_t>(P) + opts.max_new_tokens, m->config().max_position_embeddings);
  if (static_cast<int64_t>(P) >= max_len)
    throw Error(fmt("generate: prompt of ", P, " tokens leaves no room below max_position_embeddings = ",
                    m->config().max_position_embeddings));
  at::Tensor input = at::zeros({B, static_cast<int64_t>(P)}, at::kLong);
  at::Tensor pad = at::zeros({B, max_len}, at::kBool);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t off = static_cast<int64_t>(P - prompts[b].size());
    for (size_t i = 0; i < prompts[b].size(); ++i) input[b][off + static_cast<int64_t>(i)] = prompts[b][i];
    if (off > 0) pad[b].narrow(0, 0, off).fill_(true);
  }
  auto state = m->start_decode(B, max_len, opts.cache_mode, pad.any().item<bool>() ? pad.to(device) : at::Tensor());
  input = input.to(device);

  std::vector<std::vector<int64_t>> out(static_cast<size_t>(B)), history(prompts.begin(), prompts.end());
  std::vector<bool> done(static_cast<size_t>(B), false);
  std::mt19937_64 rng(opts.seed);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  for (int64_t step = 0; step < opts.max_new_tokens && state->len < state->max_len; ++step) {
    at::Tensor logits = m->decode(input, *state).select(1, -1).to(at::kFloat).cpu();  // (B, V)
    std::vector<int64_t> next(static_cast<size_t>(B), 0);
    bool all_done = true;
    for (int64_t b = 0; b < B; ++b) {
      const double u = uniform(rng);  // drawn for every row, so a row's stream does not depend on others finishing
      if (done[b]) continue;
      next[b] = sample_token(logits[b], history[b], opts, u);
      out[b].push_back(next[b]);
      history[b].push_back(next[b]);
      if (on_token) on_token(b, next[b]);
      if (std::find(opts.stop_tokens.begin(), opts.stop_tokens.end(), next[b]) != opts.stop_tokens.end()) done[b] = true;
      all_done = all_done && done[b];
    }
    if (all_done) break;
    input = at::tensor(next, at::kLong).unsqueeze(1).to(device);
  }
  if (was_training) m->train();
  return out;
}

}  // namespace dsforge::model
