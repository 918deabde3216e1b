#include "dsforge/continual/penalty.h"

#include <ATen/ATen.h>

#include "dsforge/continual/replay.h"
#include "dsforge/core/error.h"

namespace dsforge::continual {

FisherKind parse_fisher_kind(const std::string& name) {
  if (name == "empirical") return FisherKind::kEmpirical;
  if (name == "sampled") return FisherKind::kSampled;
  throw ConfigError(fmt("key 'continual.fisher': \"", name, "\" must be \"empirical\" or \"sampled\""));
}

const char* fisher_kind_name(FisherKind kind) { return kind == FisherKind::kEmpirical ? "empirical" : "sampled"; }

namespace {

// One target per row of `logits` [T, V], drawn from softmax(logits) by the inverse of its CDF.
at::Tensor sample_targets(const at::Tensor& logits, SplitMix64& rng) {
  at::Tensor p = at::softmax(logits.detach().to(at::kDouble).cpu(), -1).contiguous();
  const int64_t t_len = p.size(0), v = p.size(1);
  at::Tensor out = at::empty({t_len}, at::kLong);
  const double* pp = p.data_ptr<double>();
  int64_t* o = out.data_ptr<int64_t>();
  for (int64_t t = 0; t < t_len; ++t) {
    const double u = rng.uniform();
    double c = 0;
    int64_t k = 0;
    for (; k < v - 1; ++k) {
      c += pp[t * v + k];
      if (u < c) break;
    }
    o[t] = k;
  }
  return out.to(logits.device());
}

}  // namespace

TensorMap estimate_fisher(torch::nn::Module& m, int64_t n, const std::function<FisherSample(int64_t)>& sample,
                          FisherKind kind, uint64_t seed) {
  if (n < 1) throw ConfigError(fmt("key 'continual.fisher_samples': ", n, " must be at least 1"));
  std::vector<std::pair<std::string, at::Tensor>> params;
  for (auto& p : m.named_parameters())
    if (p.value().requires_grad()) params.emplace_back(p.key(), p.value());
  std::vector<at::Tensor> sums;
  for (auto& [name, p] : params) sums.push_back(at::zeros(p.sizes(), p.options().dtype(at::kFloat)));
  SplitMix64 rng(seed);
  for (auto& [name, p] : params) p.mutable_grad() = at::Tensor();
  for (int64_t s = 0; s < n; ++s) {
    FisherSample smp = sample(s);
    TORCH_CHECK(smp.logits.dim() == 2, "estimate_fisher: sample logits must be [T, V], got ", smp.logits.sizes());
    at::Tensor y = kind == FisherKind::kSampled ? sample_targets(smp.logits, rng) : smp.targets.to(smp.logits.device());
    TORCH_CHECK(y.dim() == 1 && y.size(0) == smp.logits.size(0), "estimate_fisher: targets must be [T]");
    // The mean negative log-likelihood of this sample, in float32 whatever the logits' type.
    at::Tensor nll = at::nll_loss(at::log_softmax(smp.logits.to(at::kFloat), -1), y);
    nll.backward();
    for (size_t i = 0; i < params.size(); ++i) {
      at::Tensor& g = params[i].second.mutable_grad();
      if (!g.defined()) continue;
      sums[i].add_(g.to(at::kFloat).square());
      g = at::Tensor();
    }
  }
  TensorMap out;
  for (size_t i = 0; i < params.size(); ++i) out[params[i].first] = (sums[i] / static_cast<double>(n)).cpu().contiguous();
  return out;
}

TensorMap parameter_snapshot(torch::nn::Module& m) {
  TensorMap out;
  for (auto& p : m.named_parameters())
    if (p.value().requires_grad()) out[p.key()] = p.value().detach().to(at::kFloat).cpu().clone();
  return out;
}

void QuadraticPenalty::add(QuadraticTerm term) {
  for (const auto& [name, w] : term.weight)
    if (!term.anchor.count(name))
      throw CheckpointError(fmt("continual: the ", term.name, " term has a weight for '", name, "' but no anchor"));
  terms_.push_back(std::move(term));
  checked_ = false;
}

at::Tensor QuadraticPenalty::value(torch::nn::Module& m) {
  if (terms_.empty()) return at::Tensor();
  std::vector<std::pair<std::string, at::Tensor>> params;
  for (auto& p : m.named_parameters())
    if (p.value().requires_grad()) params.emplace_back(p.key(), p.value());
  if (!checked_) {
    // Every anchor names a parameter with its shape; tensors move to the parameter's device once.
    std::map<std::string, at::Tensor> by_name(params.begin(), params.end());
    for (auto& term : terms_) {
      for (auto* map : {&term.anchor, &term.weight})
        for (auto& [name, t] : *map) {
          auto it = by_name.find(name);
          if (it == by_name.end())
            throw CheckpointError(fmt("continual: the ", term.name, " anchor names '", name,
                                      "', which is not a trainable parameter of this model (another architecture?)"));
          if (t.sizes() != it->second.sizes())
            throw CheckpointError(fmt("continual: the ", term.name, " anchor of '", name, "' has shape ", t.sizes(),
                                      ", the model's parameter ", it->second.sizes(), " (another architecture or vocabulary?)"));
          t = t.to(it->second.device(), at::kFloat);
        }
    }
    checked_ = true;
  }
  at::Tensor total = at::zeros({}, params.front().second.options().dtype(at::kFloat));
  for (const auto& term : terms_) {
    if (term.strength == 0) continue;
    at::Tensor sum = at::zeros({}, total.options());
    for (const auto& [name, p] : params) {
      auto a = term.anchor.find(name);
      if (a == term.anchor.end()) continue;
      auto w = term.weight.find(name);
      if (!term.weight.empty() && w == term.weight.end()) continue;  // a Fisher without this parameter
      at::Tensor d2 = (p.to(at::kFloat) - a->second).square();
      sum = sum + (term.weight.empty() ? d2.sum() : (d2 * w->second).sum());
    }
    total = total + 0.5 * term.strength * sum;
  }
  return total;
}

}  // namespace dsforge::continual
