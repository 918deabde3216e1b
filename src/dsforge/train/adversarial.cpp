#include "dsforge/train/adversarial.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/autograd.h>

#include "dsforge/core/error.h"

namespace dsforge::train {

std::string AttackOptions::describe() const {
  if (method == "fgsm") return fmt("FGSM ", norm, " eps ", eps);
  return fmt("PGD ", norm, " eps ", eps, ", ", steps, " steps of ", step_size(), random_start ? ", random start" : "");
}

double AttackOptions::step_size() const {
  if (alpha > 0) return alpha;
  return method == "fgsm" ? eps : 2.5 * eps / static_cast<double>(std::max<int64_t>(steps, 1));
}

void validate(const AttackOptions& a, const std::string& what) {
  if (a.method != "fgsm" && a.method != "pgd") throw ConfigError(fmt(what, ": method '", a.method, "': expected fgsm or pgd"));
  if (a.norm != "linf" && a.norm != "l2") throw ConfigError(fmt(what, ": norm '", a.norm, "': expected linf or l2"));
  if (!(a.eps >= 0)) throw ConfigError(fmt(what, ": eps ", a.eps, ": expected a budget >= 0"));
  if (!(a.alpha >= 0)) throw ConfigError(fmt(what, ": alpha ", a.alpha, ": expected a step size >= 0 (0 = automatic)"));
  if (a.steps < 1) throw ConfigError(fmt(what, ": steps ", a.steps, ": expected at least 1"));
}

at::Tensor perturbation_norm(const at::Tensor& delta, const std::string& norm) {
  at::Tensor flat = delta.detach().reshape({delta.size(0), -1});
  if (flat.scalar_type() != at::kDouble) flat = flat.to(at::kFloat);
  return norm == "linf" ? flat.abs().amax(1) : flat.norm(2, {1});
}

namespace {

// Broadcast per-example factors [B] over an input [B, ...].
at::Tensor per_example(const at::Tensor& v, const at::Tensor& like) {
  std::vector<int64_t> shape(static_cast<size_t>(like.dim()), 1);
  shape[0] = like.size(0);
  return v.reshape(shape);
}

// Into the eps-ball (and the box), only where the mask allows.
at::Tensor project(at::Tensor delta, const at::Tensor& x, const AttackOptions& a, const at::Tensor& mask, std::optional<Box> box) {
  if (mask.defined()) delta = delta * mask;
  if (a.norm == "linf") {
    delta = delta.clamp(-a.eps, a.eps);
  } else {
    const at::Tensor n = perturbation_norm(delta, "l2");
    delta = delta * per_example((a.eps / n.clamp_min(1e-12)).clamp_max(1.0), delta).to(delta.dtype());
  }
  if (box) delta = (x + delta).clamp(box->lo, box->hi) - x;
  return delta;
}

// A random point of the ball: uniform per coordinate (linf), a uniform direction at a uniform radius (l2).
at::Tensor random_start(const at::Tensor& x, const AttackOptions& a, const at::Tensor& mask, std::optional<Box> box) {
  auto gen = at::detail::createCPUGenerator(a.seed);
  const auto cpu = at::TensorOptions().dtype(at::kFloat);
  at::Tensor d;
  if (a.norm == "linf") {
    d = at::empty(x.sizes(), cpu).uniform_(-a.eps, a.eps, gen);
  } else {
    d = at::empty(x.sizes(), cpu).normal_(0.0, 1.0, gen);
    if (mask.defined()) d = d * mask.to(at::kCPU, at::kFloat);
    const at::Tensor radius = at::empty({x.size(0)}, cpu).uniform_(0.0, a.eps, gen);
    d = d * per_example(radius / perturbation_norm(d, "l2").clamp_min(1e-12), d);
  }
  return project(d.to(x.device(), x.scalar_type()), x, a, mask, box);
}

// One step up the gradient g: its sign (linf) or its per-example unit direction (l2).
at::Tensor ascend(const at::Tensor& delta, at::Tensor g, const AttackOptions& a, const at::Tensor& mask) {
  if (mask.defined()) g = g * mask;
  if (a.norm == "linf") return delta + a.step_size() * g.sign();
  return delta + a.step_size() * g / per_example(perturbation_norm(g, "l2").clamp_min(1e-12), g).to(g.dtype());
}

at::Tensor input_gradient(const at::Tensor& loss, const at::Tensor& d, bool retain) {
  return torch::autograd::grad({loss}, {d}, /*grad_outputs=*/{}, /*retain_graph=*/retain)[0];
}

}  // namespace

at::Tensor perturb(const LossOfInput& loss, const at::Tensor& x_in, const AttackOptions& a, const at::Tensor& mask_in,
                   std::optional<Box> box) {
  validate(a);
  const at::Tensor x = x_in.detach();
  if (a.eps == 0) return x;
  const at::Tensor mask = mask_in.defined() ? mask_in.to(x.device(), x.scalar_type()) : at::Tensor();
  at::Tensor delta = a.method == "pgd" && a.random_start ? random_start(x, a, mask, box) : at::zeros_like(x);
  for (int64_t s = 0; s < a.step_count(); ++s) {
    at::Tensor d = delta.detach().requires_grad_(true);
    const at::Tensor g = input_gradient(loss(x + d).sum(), d, false);
    delta = project(ascend(delta, g, a, mask), x, a, mask, box);
  }
  return (x + delta).detach();
}

at::Tensor freelb_loss(const LossOfInput& loss, const at::Tensor& x, const AttackOptions& a, const at::Tensor& mask_in) {
  validate(a, "freelb");
  const at::Tensor mask = mask_in.defined() ? mask_in.to(x.device(), x.scalar_type()) : at::Tensor();
  at::Tensor delta = a.random_start && a.eps > 0 ? random_start(x.detach(), a, mask, std::nullopt) : at::zeros_like(x);
  at::Tensor total;
  for (int64_t k = 0; k < a.steps; ++k) {
    at::Tensor d = delta.detach().requires_grad_(true);
    const at::Tensor l = loss(x + d).mean() / static_cast<double>(a.steps);
    total = total.defined() ? total + l : l;
    if (k + 1 < a.steps) delta = project(ascend(delta, input_gradient(l, d, true), a, mask), x.detach(), a, mask, std::nullopt);
  }
  return total;
}

}  // namespace dsforge::train
