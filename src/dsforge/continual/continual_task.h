// Continual training of a language model through the one training loop: LmTask on the new domain's
// token shard, plus what the strategy adds to each micro-batch (continual.* of the run config):
//
//   finetune    nothing: the baseline
//   ewc         + sum over earlier domains k of ewc_lambda/2 * sum_i F_k,i (theta_i - theta*_k,i)^2
//   online-ewc  + ewc_lambda/2 * sum_i F_i (theta_i - theta*_i)^2, F the running (decayed) Fisher
//   l2sp        + l2sp_alpha/2 * ||theta - theta_0||^2 (theta_0: the weights this stage starts from)
//   replay      round(replay_ratio * rows) rows of each batch drawn from the reservoir of earlier
//               domains' windows instead of the new data
//   lwf         + lwf_alpha * T^2 * KL(softmax(z_old / T) || softmax(z / T)) per token, z_old the
//               logits of the frozen starting model on the same rows (Li & Hoiem 2017; Hinton et al. 2015)
//
// and any '+'-joined combination ("replay+ewc"). The penalty and KL values of the last step are
// logged with the loss ("penalty", "lwf_kl").
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "dsforge/continual/penalty.h"
#include "dsforge/continual/replay.h"
#include "dsforge/train/lm_task.h"

namespace dsforge::continual {

struct Strategy {
  bool ewc = false, online_ewc = false, l2sp = false, replay = false, lwf = false;
  std::string name;  // canonical: the parts in the order above, '+'-joined; "finetune" when none
  bool needs_fisher() const { return ewc || online_ewc; }
};
// "finetune", "ewc", "online-ewc", "l2sp", "replay", "lwf" or '+'-joined ("replay+ewc"). ConfigError
// naming continual.strategy and listing the names otherwise; "finetune" cannot be combined.
Strategy parse_strategy(const std::string& text);

// What the strategy needs besides the model and the new data.
struct ContinualParts {
  QuadraticPenalty penalty;                 // EWC / online-EWC / L2-SP terms (may be empty)
  std::shared_ptr<const Reservoir> replay;  // null = no replay
  double replay_ratio = 0;
  model::CausalLm teacher;                  // null = no LwF; frozen, evaluation mode
  double lwf_alpha = 0, lwf_temperature = 1;
  std::string identity;                     // what a resumed checkpoint must agree on (base model, strategy)
};


class ContinualTask : public train::LmTask {
 public:
  // `model`: the loaded model to continue; `train_shard`: the new domain's tokens.
  ContinualTask(const RunConfig& cfg, model::CausalLm model, const std::string& train_shard, ContinualParts parts);

  std::string identity() const override { return parts_.identity; }
  std::string describe() const override;
  train::MicroLoss micro_batch_loss(int64_t rows, int64_t first, int64_t count, int64_t step, c10::Device device) override;
  train::Scalars after_step(int64_t step) override;

  // Rows of replay in a micro-batch of `rows`: round(replay_ratio * rows), at most rows - 1.
  int64_t replay_rows(int64_t rows) const;

 private:
  ContinualParts parts_;
  uint64_t seed_;
  int64_t draw_step_ = -1, draw_index_ = 0;  // replay draws are seeded by (seed, step, micro-batch)
  bool teacher_placed_ = false;
  double last_penalty_ = 0, last_kl_ = 0;
};

}  // namespace dsforge::continual
