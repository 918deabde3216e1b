// The training loop for every CausalLm (DeepSeek-V3, GPT-2, LSTM), readable top to bottom in
// Trainer::fit() (trainer.cpp).
//
// Data-parallel runs (set_comm) keep every rank's parameters identical: rank 0's initial or restored
// state is broadcast, gradients, losses, MoE load counts and the stop request are reduced, so every
// rank takes the same decisions (skip, rollback, early stop, checkpoint) at the same step.
//
// Resume is exact: a checkpoint holds the weights (routing bias included), the optimizer moments and
// step, the random generator states, the loss scale and the loader cursor; the batch sequence is a
// pure function of (seed, cursor), so a run interrupted at step k continues with the same batches
// and losses. SIGINT/SIGTERM finish the current step, write a checkpoint and return with
// `interrupted` set. Before the first step the micro-batch is fitted to train.memory_gb.
//
//   Trainer t(cfg, model_cfg, "runs/x/shards/manifest.json");
//   TrainResult r = t.fit();
#pragma once
#include <cstdint>
#include <string>

#include "dsforge/core/run_config.h"
#include "dsforge/model/causal_lm.h"
#include "dsforge/model/config.h"

namespace dsforge::dist {
class Comm;
}

namespace dsforge::train {

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
  std::string checkpoint;   // the last checkpoint folder written
};

class Trainer {
 public:
  Trainer(RunConfig cfg, model::ModelConfig model_cfg, std::string manifest_path);
  TrainResult fit();
  // Data parallelism over `comm` (not owned; null = one process): each rank takes batch_size / ranks
  // rows of every micro-batch, gradients are averaged by a bucketed all-reduce overlapped with the
  // backward pass, rank 0 reads and writes checkpoints and logs and sends restored state to the
  // others; dist.zero1 shards the optimizer moments.
  void set_comm(dist::Comm* comm) { comm_ = comm; }
  model::CausalLm& model() { return model_; }
  // Checkpoint and return as if interrupted once this step completes (tests, scripted pauses).
  void set_stop_at(int64_t step) { stop_at_ = step; }
  // Fault injection for tests: report the main loss of this step 100x too high, once.
  void inject_loss_spike_at(int64_t step) { spike_at_ = step; }

 private:
  RunConfig cfg_;
  model::ModelConfig mcfg_;
  std::string manifest_path_;
  model::CausalLm model_;
  int64_t stop_at_ = -1, spike_at_ = -1;
  dist::Comm* comm_ = nullptr;
};

// Asks a running fit() to checkpoint and return (what the signal handler does); for tests.
void request_stop();

}  // namespace dsforge::train
