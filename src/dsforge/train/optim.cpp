#include "dsforge/train/optim.h"

#include <ATen/ATen.h>

#include <cmath>

#include "dsforge/core/error.h"
#include "dsforge/kernels/fused.h"

namespace dsforge::train {

AdamW::AdamW(const std::vector<std::pair<std::string, at::Tensor>>& named_params, const AdamWOptions& opts,
             const std::vector<bool>& owned)
    : opts_(opts) {
  for (const auto& [name, p] : named_params) {
    if (!p.requires_grad()) continue;
    const bool embedding = name.find("embed") != std::string::npos || name.find(".wte.") != std::string::npos ||
                           name.find(".wpe.") != std::string::npos;
    const bool mine = owned.empty() || owned.at(params_.size());
    params_.push_back({name, p, p.dim() >= 2 && !embedding, mine ? at::zeros_like(p) : at::Tensor(),
                       mine ? at::zeros_like(p) : at::Tensor()});
  }
}

int64_t AdamW::state_bytes() const {
  int64_t n = 0;
  for (const auto& p : params_)
    if (p.exp_avg.defined()) n += 2 * p.exp_avg.numel() * static_cast<int64_t>(p.exp_avg.element_size());
  return n;
}

void AdamW::zero_grad() {
  for (auto& p : params_)
    if (p.value.grad().defined()) p.value.mutable_grad() = at::Tensor();
}

void AdamW::step() {
  at::NoGradGuard no_grad;
  ++step_;
  const double bc1 = 1.0 - std::pow(opts_.beta1, static_cast<double>(step_));
  const double bc2 = 1.0 - std::pow(opts_.beta2, static_cast<double>(step_));
  for (auto& p : params_) {
    const at::Tensor& g = p.value.grad();
    if (!g.defined() || !p.exp_avg.defined()) continue;
    // One fused pass: moments, bias-corrected update and decoupled decay (ATen ops off the fast path).
    kernels::adamw_update(p.value, g, p.exp_avg, p.exp_avg_sq,
                          {opts_.lr, opts_.beta1, opts_.beta2, opts_.eps, p.decay ? opts_.weight_decay : 0.0, bc1, bc2, 1.0});
  }
}

TensorMap AdamW::state_dict() const {
  TensorMap out;
  for (const auto& p : params_) {
    if (!p.exp_avg.defined()) continue;
    out["exp_avg." + p.name] = p.exp_avg;
    out["exp_avg_sq." + p.name] = p.exp_avg_sq;
  }
  out["step"] = at::tensor(std::vector<int64_t>{step_}, at::kLong);
  return out;
}

void AdamW::load_state_dict(const TensorMap& state, const std::string& origin) {
  auto get = [&](const std::string& key, const at::Tensor& like) {
    auto it = state.find(key);
    if (it == state.end()) throw CheckpointError(fmt(origin, ": optimizer state has no '", key, "'"));
    if (!it->second.sizes().equals(like.sizes()))
      throw CheckpointError(fmt(origin, ": optimizer '", key, "' has shape ", it->second.sizes(), ", expected ", like.sizes()));
    return it->second.to(like.device(), like.scalar_type());
  };
  for (auto& p : params_) {
    if (!p.exp_avg.defined()) continue;
    p.exp_avg.copy_(get("exp_avg." + p.name, p.exp_avg));
    p.exp_avg_sq.copy_(get("exp_avg_sq." + p.name, p.exp_avg_sq));
  }
  auto it = state.find("step");
  if (it == state.end()) throw CheckpointError(fmt(origin, ": optimizer state has no 'step'"));
  step_ = it->second.item<int64_t>();
}

double clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm) {
  at::NoGradGuard no_grad;
  double sq = 0;
  for (const auto& p : params)
    if (p.grad().defined()) sq += kernels::sum_of_squares(p.grad());
  const double norm = std::sqrt(sq);
  if (max_norm > 0 && norm > max_norm && std::isfinite(norm)) {
    const double scale = max_norm / (norm + 1e-6);
    for (const auto& p : params)
      if (p.grad().defined()) p.grad().mul_(scale);
  }
  return norm;
}

double warmup_linear_lr(int64_t step, int64_t warmup, int64_t total, double peak) {
  if (step < warmup) return peak * static_cast<double>(step + 1) / static_cast<double>(warmup);
  return peak * std::max(0.0, static_cast<double>(total - step) / static_cast<double>(std::max<int64_t>(1, total - warmup)));
}

double warmup_cosine_lr(int64_t step, int64_t warmup, int64_t total, double peak, double min_ratio) {
  if (warmup > 0 && step < warmup) return peak * static_cast<double>(step + 1) / static_cast<double>(warmup);
  if (step >= total) return peak * min_ratio;
  const double span = static_cast<double>(std::max<int64_t>(1, total - warmup));
  const double progress = static_cast<double>(step - warmup) / span;
  const double cosine = 0.5 * (1.0 + std::cos(M_PI * progress));
  return peak * (min_ratio + (1.0 - min_ratio) * cosine);
}

double schedule_lr(const Schedule& s, int64_t step) {
  if (s.warmup > 0 && step < s.warmup) return s.peak * static_cast<double>(step + 1) / static_cast<double>(s.warmup);
  const double floor = s.peak * s.min_ratio;
  if (s.kind == "constant") return s.peak;
  if (s.kind == "cosine") return warmup_cosine_lr(step, s.warmup, s.total, s.peak, s.min_ratio);
  const double p = static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, s.total));
  if (s.kind == "wsd") {
    const double start = 1.0 - s.decay_fraction;
    if (p < start) return s.peak;
    const double t = std::min(1.0, (p - start) / std::max(s.decay_fraction, 1e-12));
    return s.peak + (floor - s.peak) * t;
  }
  if (s.kind == "deepseek") {
    if (p < 0.676) return s.peak;
    if (p < 0.966) {
      const double t = (p - 0.676) / (0.966 - 0.676);
      return 0.1 * s.peak + 0.9 * s.peak * 0.5 * (1.0 + std::cos(M_PI * t));
    }
    if (p < 0.989) return 0.1 * s.peak;
    return 0.0332 * s.peak;
  }
  throw ConfigError(fmt("schedule '", s.kind, "' is unknown (constant, cosine, wsd, deepseek)"));
}

double mtp_weight_factor(const Schedule& s, int64_t step) {
  if (s.kind != "deepseek") return 1.0;
  return static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, s.total)) < 0.676 ? 1.0 : 1.0 / 3.0;
}

double bias_speed_factor(const Schedule& s, int64_t step) {
  if (s.kind != "deepseek") return 1.0;
  return static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, s.total)) < 0.966 ? 1.0 : 0.0;
}

}  // namespace dsforge::train
