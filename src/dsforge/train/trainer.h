// The one training loop, for every task (train/task.h): pre-training a language model (LmTask), the
// fine-tuning tasks, and whatever comes later (distillation, continual learning, search trials).
//
// Read it top to bottom in trainer.cpp: fit() = setup, restore or initialise, then step / log /
// evaluate / checkpoint until max_steps. The optimizer (AdamW, train.beta1/beta2/eps/weight_decay),
// the schedule (train.schedule, warmup), clipping (train.grad_clip), precision (train.precision),
// gradient accumulation and micro-batch fitting (train.memory_gb), loss-spike rollback, early stopping,
// checkpoints (CheckpointManager), TensorBoard, metrics.jsonl and the progress line come from the run
// config; data parallelism from DataParallel.
//
// Data-parallel runs (set_comm) keep every rank's parameters identical: rank 0's initial or restored
// state is broadcast, gradients, losses, the task's step sums and the stop request are reduced, so
// every rank takes the same decisions (skip, rollback, early stop, checkpoint) at the same step.
//
// Resume is exact: a checkpoint holds the weights, the optimizer moments and step, the random
// generator states, the loss scale and the task's data position; a run interrupted at step k
// continues with the same batches and losses. SIGINT/SIGTERM finish the current step, write a
// checkpoint and return with `interrupted` set.
//
//   LmTask task(cfg, model_cfg, train_shard);
//   Trainer t(cfg, task);
//   t.set_callbacks(callbacks);          // evaluate (validation loss), fault injection in tests
//   TrainResult r = t.fit();
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "dsforge/core/run_config.h"
#include "dsforge/model/causal_lm.h"
#include "dsforge/model/config.h"
#include "dsforge/train/task.h"

namespace dsforge::dist {
class Comm;
}

namespace dsforge::train {

class LmTask;

struct TrainResult {
  int64_t start_step = 0;   // 0 for a fresh run, k when resumed from step k
  int64_t final_step = 0;
  double last_loss = 0;     // mean main loss over the last logging window
  double tokens_per_second = 0;
  double mfu = 0;           // model FLOPs utilisation of the last logging window
  int64_t skipped_steps = 0;  // non-finite loss or gradient (including fp16 overflow)
  int64_t rollbacks = 0;      // loss spikes rolled back to the last checkpoint
  int64_t micro_batch = 0, accum_steps = 0;  // the plan fit() chose
  bool interrupted = false;
  bool early_stopped = false;
  int64_t best_step = -1;   // the step whose weights early stopping restored
  double best_val_loss = 0;
  std::string checkpoint;   // the last checkpoint folder written
};

class Trainer {
 public:
  // Any task; `cfg.run.out_dir` receives checkpoints/, metrics.jsonl and tb/.
  Trainer(RunConfig cfg, TrainTask& task);
  // Language-model pre-training on the shards of `manifest_path` (owns its LmTask).
  Trainer(RunConfig cfg, model::ModelConfig model_cfg, const std::string& manifest_path);
  ~Trainer();

  TrainResult fit();
  // Data parallelism over `comm` (not owned; null = one process): each rank takes batch_size / ranks
  // rows of every micro-batch, gradients are averaged by a bucketed all-reduce overlapped with the
  // backward pass, rank 0 reads and writes checkpoints and logs; dist.zero1 shards the optimizer moments.
  void set_comm(dist::Comm* comm) { comm_ = comm; }
  void set_callbacks(TrainCallbacks callbacks) { callbacks_ = std::move(callbacks); }
  // The language model of the second constructor.
  model::CausalLm& model();

 private:
  struct Run;  // the state of one fit(): see trainer.cpp
  void setup(Run& r);
  bool restore(Run& r, bool with_position);
  void start(Run& r);
  enum class StepOutcome { kTrained, kSkipped, kRolledBack };
  StepOutcome step(Run& r);
  void log_interval(Run& r);
  bool evaluate(Run& r);  // true when early stopping ends the run
  void save(Run& r);

  RunConfig cfg_;
  std::unique_ptr<LmTask> own_task_;
  TrainTask* task_;
  TrainCallbacks callbacks_;
  dist::Comm* comm_ = nullptr;
};

}  // namespace dsforge::train
