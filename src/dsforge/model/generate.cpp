#include "dsforge/model/generate.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <unordered_set>

#include "dsforge/core/error.h"
#include "dsforge/kernels/platform.h"
#include "dsforge/model/deepseek.h"

namespace dsforge::model {

namespace {

// Token order of the sampler: higher probability first, the lower id first among equals (a strict
// total order, so a draw does not depend on how the selection below partitions).
struct Order {
  const double* p;
  bool operator()(int32_t a, int32_t b) const { return p[a] > p[b] || (p[a] == p[b] && a < b); }
};

// The first position j of idx[lo, hi) in sampler order at which `reached(before + mass of positions
// lo..j)` holds (reached is monotone in the mass), or hi - 1 when none does; on return idx[lo, j] holds
// that prefix, idx[j] in its place. Quickselect on the running mass: each round partitions around a
// pivot and keeps the side the crossing is in, so a draw over V tokens costs O(V) on average instead
// of sorting all of them.
template <typename Reached>
std::pair<int64_t, double> crossing(std::vector<int32_t>& idx, const double* p, int64_t lo, int64_t hi, double before,
                                    Reached reached) {
  const Order order{p};
  while (hi - lo > 32) {
    int32_t a = idx[lo], b = idx[lo + (hi - lo) / 2], c = idx[hi - 1];  // the median of three as pivot
    if (order(b, a)) std::swap(a, b);
    if (order(c, b)) std::swap(b, c);
    if (order(b, a)) std::swap(a, b);
    const int32_t pivot = b;
    auto* first = idx.data() + lo;
    auto* mid = std::partition(first, idx.data() + hi, [&](int32_t i) { return order(i, pivot); });
    std::iter_swap(mid, std::find(mid, idx.data() + hi, pivot));  // the pivot right after its predecessors
    const int64_t m = mid - idx.data();
    double left = 0;
    for (auto* q = first; q != mid; ++q) left += p[*q];
    if (m > lo && reached(before + left)) {
      hi = m;
      continue;
    }
    before += left;
    if (reached(before + p[pivot])) return {m, before + p[pivot]};
    before += p[pivot];
    lo = m + 1;
  }
  std::sort(idx.begin() + lo, idx.begin() + hi, order);
  for (int64_t j = lo; j < hi; ++j) {
    before += p[idx[j]];
    if (reached(before)) return {j, before};
  }
  return {hi - 1, before};
}

}  // namespace

int64_t sample_token(at::Tensor logits, const std::vector<int64_t>& history, const SampleOptions& opts, double u) {
  // In float64 (float32 logits widen exactly, read in place: the server draws here for every row of
  // every step).
  const int64_t V = logits.numel();
  if (V == 0) throw Error("sample_token: empty logits");
  thread_local std::vector<double> l;
  if (logits.scalar_type() == at::kFloat && logits.device().is_cpu() && logits.is_contiguous()) {
    const float* p = logits.data_ptr<float>();
    l.assign(p, p + V);
  } else {
    const at::Tensor x = logits.to(at::kCPU, at::kDouble).contiguous();
    l.assign(x.data_ptr<double>(), x.data_ptr<double>() + V);
  }
  if (opts.repetition_penalty != 1.0) {
    std::unordered_set<int64_t> seen(history.begin(), history.end());
    for (int64_t id : seen)
      if (id >= 0 && id < V) l[id] = l[id] > 0 ? l[id] / opts.repetition_penalty : l[id] * opts.repetition_penalty;
  }
  if (opts.temperature <= 0) return std::max_element(l.begin(), l.end()) - l.begin();  // the first maximum
  for (double& v : l) v /= opts.temperature;
  const bool keep_top_k = opts.top_k > 0 && opts.top_k < V;
  if (keep_top_k) {  // keep the k largest (and any equal to the k-th)
    std::vector<double> sorted = l;
    std::nth_element(sorted.begin(), sorted.begin() + (opts.top_k - 1), sorted.end(), std::greater<double>());
    const double kth = sorted[static_cast<size_t>(opts.top_k - 1)];
    for (double& v : l)
      if (v < kth) v = -INFINITY;
  }
  const double top = *std::max_element(l.begin(), l.end());
  const double z = kernels::vector_loops().exp_shifted_sum_f64(l.data(), V, top);  // vectorised: the server's rows draw here
  if (!keep_top_k && opts.top_p >= 1.0) {
    // Nothing truncated: every order of the tokens inverts the same distribution, so the CDF is taken in
    // id order, one pass and no selection (the rows of a served batch draw here at every step).
    const double target = u * z;
    double acc = 0;
    int64_t last = 0;
    for (int64_t i = 0; i < V; ++i) {
      if (l[i] == 0) continue;
      last = i;
      if (target < (acc += l[i])) return i;
    }
    return last;  // u * z rounded up to the total
  }
  for (double& v : l) v /= z;  // l now holds the probabilities
  std::vector<int32_t> idx(static_cast<size_t>(V));
  for (int32_t i = 0; i < static_cast<int32_t>(V); ++i) idx[i] = i;
  // Keep the smallest prefix of the ordered distribution whose mass reaches top_p, renormalise, and
  // invert its CDF at u: the same token for the same logits and seed (no library RNG involved).
  int64_t keep = V;
  double mass = 0;
  if (opts.top_p < 1.0) {
    const auto [last, m] = crossing(idx, l.data(), 0, V, 0.0, [&](double acc) { return acc >= opts.top_p; });
    keep = last + 1;
    mass = m;
  } else {
    for (double v : l) mass += v;
  }
  const double target = u * mass;
  return idx[crossing(idx, l.data(), 0, keep, 0.0, [&](double acc) { return target < acc; }).first];
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

BeamResult beam_search(CausalLm m, const std::vector<int64_t>& prompt, const BeamOptions& opts) {
  if (prompt.empty()) throw Error("beam_search: empty prompt");
  if (opts.beam < 1) throw Error(fmt("beam_search: beam ", opts.beam, " must be >= 1"));
  at::NoGradGuard no_grad;
  const bool was_training = m->is_training();
  m->eval();
  const auto device = m->parameters().front().device();
  const auto P = static_cast<int64_t>(prompt.size());
  const int64_t max_len = std::min(P + opts.max_new_tokens, m->config().max_position_embeddings);
  if (P >= max_len)
    throw Error(fmt("beam_search: prompt of ", P, " tokens leaves no room below max_position_embeddings = ",
                    m->config().max_position_embeddings));
  const int64_t steps = max_len - P;
  auto is_stop = [&](int64_t id) { return std::find(opts.stop_tokens.begin(), opts.stop_tokens.end(), id) != opts.stop_tokens.end(); };
  auto normalised = [&](double lp, size_t len) {
    return lp / std::pow(static_cast<double>(std::max<size_t>(len, 1)), opts.length_penalty);
  };

  struct Hyp {
    std::vector<int64_t> tokens;
    double log_prob = 0;
  };
  std::vector<Hyp> live{Hyp{}}, finished;
  auto state = m->start_decode(1, max_len, opts.cache_mode, at::Tensor());
  at::Tensor input = at::tensor(prompt, at::kLong).unsqueeze(0).to(device);
  for (int64_t step = 0; step < steps; ++step) {
    at::Tensor logp = at::log_softmax(m->decode(input, *state).select(1, -1).to(at::kFloat), -1).cpu();  // [live, V]
    const int64_t V = logp.size(1);
    // Candidates: every live beam extended by every token; the best 2 x beam keep enough non-stop ones.
    std::vector<float> scores;
    for (const auto& h : live) scores.push_back(static_cast<float>(h.log_prob));
    const at::Tensor total = logp + at::tensor(scores).unsqueeze(1);
    const int64_t k = std::min<int64_t>(2 * opts.beam, total.numel());
    auto [vals, idx] = total.reshape({-1}).topk(k);
    std::vector<Hyp> next;
    std::vector<int64_t> parents, tokens;
    for (int64_t c = 0; c < k && static_cast<int64_t>(next.size()) < opts.beam; ++c) {
      const int64_t flat = idx[c].item<int64_t>(), parent = flat / V, token = flat % V;
      Hyp h = live[static_cast<size_t>(parent)];
      h.log_prob = vals[c].item<double>();
      if (is_stop(token)) {
        // A stop token ends the hypothesis; only candidates ranked within the beam may finish.
        if (c < opts.beam) finished.push_back(h);
        continue;
      }
      h.tokens.push_back(token);
      next.push_back(std::move(h));
      parents.push_back(parent);
      tokens.push_back(token);
    }
    // Done when no live beam can still beat the worst of `beam` finished hypotheses (scores only fall).
    if (static_cast<int64_t>(finished.size()) >= opts.beam) {
      double worst = INFINITY;
      for (const auto& f : finished) worst = std::min(worst, normalised(f.log_prob, f.tokens.size()));
      double best_live = -INFINITY;
      for (const auto& h : next)
        best_live = std::max(best_live, opts.length_penalty > 0 ? normalised(h.log_prob, static_cast<size_t>(steps))
                                                                : normalised(h.log_prob, h.tokens.size()));
      if (next.empty() || best_live <= worst) {
        live.clear();
        break;
      }
    }
    if (next.empty()) {
      live.clear();
      break;
    }
    live = std::move(next);
    if (step + 1 == steps) break;
    state->select_rows(at::tensor(parents, at::kLong));
    input = at::tensor(tokens, at::kLong).unsqueeze(1).to(device);
  }
  for (auto& h : live) finished.push_back(std::move(h));  // reached the length limit
  if (was_training) m->train();
  const Hyp* best = nullptr;
  for (const auto& f : finished)
    if (!best || normalised(f.log_prob, f.tokens.size()) > normalised(best->log_prob, best->tokens.size())) best = &f;
  return best ? BeamResult{best->tokens, best->log_prob} : BeamResult{};
}

std::pair<double, int64_t> decode_path_nll(CausalLm m, const std::vector<int64_t>& ids, int64_t window) {
  auto* ds = dynamic_cast<DeepseekV3Impl*>(m.get());
  if (!ds) throw Error("decode_path_nll: a DeepSeek-V3 model is needed");
  at::NoGradGuard no_grad;
  const bool was_training = m->is_training();
  m->eval();
  double nats = 0;
  int64_t targets = 0;
  for (size_t start = 0; start + 1 < ids.size(); start += static_cast<size_t>(window)) {
    const int64_t n = std::min<int64_t>(window + 1, static_cast<int64_t>(ids.size() - start));
    KvCache cache = ds->make_cache(1, window + 1);
    for (int64_t c = 0; c + 1 < n; c += DeepseekV3Impl::kFusedMaxTokens) {
      const int64_t len = std::min<int64_t>(DeepseekV3Impl::kFusedMaxTokens, n - 1 - c);
      const auto at_ = ids.begin() + static_cast<int64_t>(start) + c;
      const at::Tensor in = at::tensor(std::vector<int64_t>(at_, at_ + len), at::kLong).unsqueeze(0);
      const at::Tensor target = at::tensor(std::vector<int64_t>(at_ + 1, at_ + 1 + len), at::kLong);
      const at::Tensor logits = ds->forward_cached(in, cache)[0].to(at::kFloat);
      nats += at::cross_entropy_loss(logits, target, {}, at::Reduction::Sum).item<double>();
      targets += len;
    }
  }
  if (was_training) m->train();
  return {nats, targets};
}

}  // namespace dsforge::model
