// Knowledge distillation (`dsforge distill`): a student language model trained through the one trainer
// on the run config's token shards against a frozen teacher (Hinton et al. 2015).
//
// Per micro-batch, with student logits z_s, teacher logits z_t (no gradient, eval mode), targets y:
//   kd     = T^2 * mean over tokens of KL(softmax(z_t / T) || softmax(z_s / T))
//   ce     = mean cross-entropy of z_s against y (the hard labels)
//   hidden = mean over tokens and features of (P h_s - h_t)^2   (h: the last hidden states, P a learned
//            d_student -> d_teacher projection; only when hidden_weight > 0)
//   loss   = alpha * kd + (1 - alpha) * ce + hidden_weight * hidden + the student's balance loss (MoE)
// The T^2 factor keeps the soft targets' gradient on the scale of the hard labels' as T changes. alpha = 0
// without hidden matching is the same student trained from scratch on the same rows (the baseline).
// The student's MTP modules are not trained (their loss is not part of the objective).
//
// Teacher and student share a tokenizer: the shards' tokenizer must be the teacher's, a student model
// folder must have the same tokenizer.json, a student config file must have its vocab_size (a preset
// takes it). Anything else is refused with a ConfigError naming both.
//
//   DistillOptions o; o.teacher_dir = "runs/t/model"; o.student = "nano"; o.run_config = "t.toml";
//   o.out_dir = "runs/distilled"; DistillReport r = distill(o);   // runs/distilled/model/
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace dsforge::compress {

// T^2 * mean over rows of KL(softmax(teacher / T) || softmax(student / T)), logits [N, V] or [B, S, V]
// (the same for both); the teacher side carries no gradient. distillation_loss's kd; LwF's term
// (continual/continual_task.h).
at::Tensor distillation_kl(const at::Tensor& student_logits, const at::Tensor& teacher_logits, double temperature);

struct DistillLoss {
  at::Tensor total, kd, ce;  // 0-dim; kd already includes T^2
};
// logits [N, V] or [B, S, V] (the same for both), targets matching without V. alpha in [0, 1], T > 0.
DistillLoss distillation_loss(const at::Tensor& student_logits, const at::Tensor& teacher_logits, const at::Tensor& targets,
                              double temperature, double alpha);

struct DistillOptions {
  std::string teacher_dir;
  std::string student;        // a preset (nano, micro, ...), a config.json, or a model folder to start from
  std::string run_config;     // token shards (its run folder's shards/) and train.* settings
  std::vector<std::string> overrides;
  std::string out_dir;        // checkpoints/, metrics.jsonl, tb/, model/, distill.json
  double temperature = 2.0;
  double alpha = 0.5;
  double hidden_weight = 0.0;
};

struct DistillReport {
  int64_t teacher_params = 0, student_params = 0;
  int64_t steps = 0;
  double final_loss = 0;  // mean hard-label loss of the last logging window
  std::string model_dir;  // out_dir/model
  bool interrupted = false;  // a signal stopped training (checkpoint written; run again to resume)
};

// Throws ConfigError for bad options or a tokenizer mismatch; resumes from out_dir's checkpoints.
DistillReport distill(const DistillOptions& o);

}  // namespace dsforge::compress
