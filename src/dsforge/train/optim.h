// AdamW with parameter groups, and the learning-rate schedule.
//
// Our own AdamW (decoupled weight decay, bias correction; Loshchilov & Hutter 2019) rather than
// torch::optim's: its state is plain named tensors, so a checkpoint stores and restores it exactly
// and by parameter name.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <string_view>
#include <vector>

#include "dsforge/core/safetensors.h"

namespace dsforge::train {

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
};

class AdamW {
 public:
  // Parameters with dim() >= 2 that are not embeddings get weight decay; norms, biases and
  // embeddings do not (the usual choice, and what DEEPSEEK.md §2.1 recommends).
  // `owned` (ZeRO-1): only parameters i with owned[i] get moments and updates here; another rank
  // steps the rest. Empty = all.
  AdamW(const std::vector<std::pair<std::string, at::Tensor>>& named_params, const AdamWOptions& opts,
        const std::vector<bool>& owned = {});

  void step();        // one update from the current .grad() of every parameter
  void zero_grad();
  void set_lr(double lr) { opts_.lr = lr; }
  double lr() const { return opts_.lr; }
  int64_t steps() const { return step_; }
  void set_steps(int64_t s) { step_ = s; }
  bool owns(size_t i) const { return params_[i].exp_avg.defined(); }
  int64_t state_bytes() const;  // the moments this optimizer holds

  // "exp_avg.<name>", "exp_avg_sq.<name>" (owned parameters) and "step". load_state_dict reads the
  // owned parameters' entries and ignores the others.
  TensorMap state_dict() const;
  void load_state_dict(const TensorMap& state, const std::string& origin);

  struct Param {
    std::string name;
    at::Tensor value;
    bool decay;
    at::Tensor exp_avg, exp_avg_sq;
  };
  const std::vector<Param>& params() const { return params_; }

 private:
  std::vector<Param> params_;
  AdamWOptions opts_;
  int64_t step_ = 0;
};

// Global L2 norm of the gradients; scales them so the norm is at most max_norm (when > 0).
// Returns the norm before clipping.
double clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm);

// Linear warmup from 0 to peak over `warmup` steps, then linear decay to 0 at `total` (fine-tuning).
double warmup_linear_lr(int64_t step, int64_t warmup, int64_t total, double peak);
// Linear warmup from 0 to peak over `warmup` steps, then cosine to min_ratio * peak at `total`.
double warmup_cosine_lr(int64_t step, int64_t warmup, int64_t total, double peak, double min_ratio);

// The learning-rate schedules, all with linear warmup over `warmup` steps:
//   constant: peak after warmup.
//   cosine:   cosine from peak to min_ratio * peak at `total`.
//   wsd:      warmup-stable-decay: peak until the last decay_fraction of steps, then linear to min_ratio * peak.
//   deepseek: DeepSeek-V3's (DEEPSEEK.md §2.1, in fractions p of training): peak for p < 0.676, cosine
//             to 0.1 peak until p = 0.966, 0.1 peak until p = 0.989, then 0.0332 peak.
struct Schedule {
  std::string kind = "cosine";
  int64_t warmup = 0;
  int64_t total = 1;
  double peak = 1e-3;
  double min_ratio = 0.1;
  double decay_fraction = 0.2;  // wsd
};
double schedule_lr(const Schedule& s, int64_t step);
// DeepSeek-V3's MTP weight (0.3 then 0.1 after p = 0.676, as a factor of the configured weight: 1 then
// 1/3) and bias update speed (gamma, then 0 after p = 0.966); other schedules keep both constant.
double mtp_weight_factor(const Schedule& s, int64_t step);
double bias_speed_factor(const Schedule& s, int64_t step);

}  // namespace dsforge::train
