// Continual-learning regularisers: the diagonal Fisher information of a model on a domain, and the
// quadratic pulls toward earlier weights that EWC, online EWC and L2-SP add to the training loss.
//
// The Fisher (estimate_fisher) is the mean over n samples of the squared gradient of each sample's
// mean negative log-likelihood:
//   F_i = 1/n sum_s ( d/dtheta_i  1/T_s sum_t -log p_theta(y_st | x_st) )^2
// with y the data's own next tokens ("empirical" Fisher) or tokens drawn from the model's predictive
// distribution softmax(logits) ("sampled" Fisher, the true Fisher's Monte-Carlo estimate; Kunstner
// et al. 2019 on why the two differ). A sample is one window of the domain's text; with one target
// per sample (T_s = 1) this is the per-example Fisher of a softmax model.
//
// The penalty (QuadraticPenalty) is a sum of terms  strength_k / 2 * sum_i F_k,i (theta_i - a_k,i)^2:
//   EWC (Kirkpatrick et al. 2017):    one term per earlier domain, its Fisher and the weights after it;
//   online EWC (Schwarz et al. 2018): one term, F <- gamma * F_old + F_new, anchored at the latest weights;
//   L2-SP (Li et al. 2018):           one term with F = 1, anchored at the starting weights.
//
//   QuadraticPenalty pen;
//   pen.add({"ewc", fisher, anchor, /*strength=*/1000.0});
//   at::Tensor p = pen.value(model);   // a scalar with a gradient to model's parameters
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "dsforge/core/safetensors.h"

namespace dsforge::continual {

enum class FisherKind { kEmpirical, kSampled };
// "empirical" or "sampled"; ConfigError naming continual.fisher otherwise.
FisherKind parse_fisher_kind(const std::string& name);
const char* fisher_kind_name(FisherKind kind);

// One sample of the Fisher: logits [T, V] computed from the module's parameters, and the data's next
// tokens [T] (int64; used by the empirical Fisher, ignored by the sampled one).
struct FisherSample {
  at::Tensor logits;
  at::Tensor targets;
};

// The diagonal Fisher of `m`'s trainable parameters (by name, float32, on the CPU) over samples
// 0..n-1 of `sample`. Parameters no sample reaches get zeros. `seed` drives the sampled Fisher's draws.
// The module's gradients are cleared before and after.
TensorMap estimate_fisher(torch::nn::Module& m, int64_t n, const std::function<FisherSample(int64_t)>& sample,
                          FisherKind kind, uint64_t seed);

// The trainable parameters of `m` by name, detached and cloned to the CPU: an anchor.
TensorMap parameter_snapshot(torch::nn::Module& m);

struct QuadraticTerm {
  std::string name;  // "ewc", "online-ewc", "l2sp": what the log calls it
  TensorMap weight;  // per-parameter weights F (empty = 1 everywhere: L2-SP)
  TensorMap anchor;  // per-parameter centres
  double strength = 0;  // lambda (EWC) or alpha (L2-SP)
};

class QuadraticPenalty {
 public:
  // Every tensor of `term` must name a trainable parameter of the module later passed to value(), with
  // its shape (checked there, with the term and the tensor named).
  void add(QuadraticTerm term);
  bool empty() const { return terms_.empty(); }
  const std::vector<QuadraticTerm>& terms() const { return terms_; }
  // sum_k strength_k / 2 * sum_i w_k,i (theta_i - a_k,i)^2 over the module's trainable parameters; the
  // anchors and weights move to each parameter's device once. An undefined tensor when empty().
  at::Tensor value(torch::nn::Module& m);

 private:
  std::vector<QuadraticTerm> terms_;
  bool checked_ = false;
};

}  // namespace dsforge::continual
