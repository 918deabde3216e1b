// Gradient attacks on a continuous input, and the adversarial losses that train against them: FGSM
// (Goodfellow et al. 2015) and PGD (Madry et al. 2018) under an L-infinity or L2 budget, and FreeLB
// (Zhu et al. 2020). The input is whatever a model reads: images in [0, 1] (with the box kept) or token
// embeddings (with a mask of the positions that may move). robust/ measures models with them; the image
// and text fine-tuning tasks train with them.
//
//   AttackOptions a;  a.method = "pgd";  a.eps = 0.1;  a.steps = 20;
//   at::Tensor x_adv = perturb([&](const at::Tensor& x) { return cross_entropy(model(x), y, none); }, x, a,
//                              {}, Box{0, 1});
#pragma once
#include <ATen/core/Tensor.h>

#include <functional>
#include <optional>

#include "dsforge/train/attack_options.h"

namespace dsforge::train {

// Valid values of the input (pixels in [0, 1]); the perturbed input is clipped into it.
struct Box {
  double lo = 0, hi = 1;
};

// Per-example losses [B] of an input [B, ...]; the attack ascends their sum.
using LossOfInput = std::function<at::Tensor(const at::Tensor& x)>;

// The adversarial input x + delta, delta in the eps-ball (and x + delta in `box`), detached. Only the
// coordinates where `mask` (broadcastable to x) is 1 move. Gradients flow to the input only: the
// model's parameter gradients are left as they were.
at::Tensor perturb(const LossOfInput& loss, const at::Tensor& x, const AttackOptions& a, const at::Tensor& mask = {},
                   std::optional<Box> box = std::nullopt);

// The size of each example's perturbation in the attack's norm [B].
at::Tensor perturbation_norm(const at::Tensor& delta, const std::string& norm);

// FreeLB's training loss: the mean over K = a.steps ascent steps of the loss at x + delta_k (delta_0
// random in the ball), each delta_{k+1} one projected step up the gradient from delta_k. Backward on it
// gives the parameters the mean gradient over the K points, as FreeLB accumulates. Returns the scalar.
at::Tensor freelb_loss(const LossOfInput& loss, const at::Tensor& x, const AttackOptions& a, const at::Tensor& mask = {});

}  // namespace dsforge::train
