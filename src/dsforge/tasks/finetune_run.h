// What the fine-tuning tasks (classify, seq2seq, regress) share to run through the one training loop:
// an epoch-shuffled stream of example indices with an exact resume position, the run config a
// fine-tuning run trains with, and the call that trains a task and returns its per-epoch losses.
//
// Fine-tuning defaults, all overridable with --train.key=value: AdamW betas 0.9 / 0.999, gradient
// clipping at 1, warmup over 5% of the steps then linear decay to 0 (schedule "wsd" with
// decay_fraction 0.95 and min_lr_ratio 0), the MoE bias speed of train.bias_update_speed, one log line
// per epoch, one checkpoint at the end (in --out when given).
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dsforge/core/run_config.h"
#include "dsforge/train/task.h"

namespace dsforge::tasks {

// Indices 0..n-1, reshuffled every epoch (shuffle_in_place with seed and epoch), served in batches
// that continue into the next epoch; the position is (epoch, offset).
class ExampleStream {
 public:
  ExampleStream(int64_t n, uint64_t seed);
  // This rank's rows [first, first + count) of the next `rows` examples; the stream moves past `rows`.
  std::vector<int64_t> next(int64_t rows, int64_t first, int64_t count);
  nlohmann::json position() const { return {{"epoch", epoch_}, {"offset", offset_}}; }
  void set_position(const nlohmann::json& p);

 private:
  void reshuffle();
  int64_t n_;
  uint64_t seed_;
  int64_t epoch_ = 0, offset_ = 0;
  std::vector<int64_t> order_;
};

// The knobs every fine-tuning command has as flags; everything else comes from `overrides`.
struct FinetuneSchedule {
  int64_t examples = 0;  // training examples
  int64_t epochs = 1, batch = 32;
  double lr = 1e-3, weight_decay = 0.01;
  uint64_t seed = 0;
  std::string schedule = "wsd";  // "cosine" for the regressor (no warmup)
  double warmup_fraction = 0.05;
  double grad_clip = 1.0;
};
// The flags every fine-tuning command shares (epochs, batch, lr, weight_decay, seed), read from its
// options struct.
template <typename Options>
FinetuneSchedule finetune_schedule(int64_t examples, const Options& opt) {
  FinetuneSchedule s;
  s.examples = examples;
  s.epochs = opt.epochs;
  s.batch = opt.batch;
  s.lr = opt.lr;
  s.weight_decay = opt.weight_decay;
  s.seed = opt.seed;
  return s;
}

// The fine-tuning defaults above, then `overrides` ("train.beta2=0.98"), validated. max_steps is
// epochs x ceil(examples / batch).
RunConfig finetune_run_config(const FinetuneSchedule& s, const std::vector<std::string>& overrides,
                              const std::string& out_dir);

// Trains `task` with `cfg` through train::Trainer and returns the mean training loss of each epoch.
// Without an out_dir the loop's checkpoints and logs go to a temporary folder, removed after.
// `evaluate`, when given, is the loop's validation (train.eval_every; early stopping reads its val_loss).
std::vector<double> run_finetune(train::TrainTask& task, RunConfig cfg, int64_t steps_per_epoch, const std::string& what,
                                 std::function<train::Scalars(int64_t)> evaluate = nullptr);

}  // namespace dsforge::tasks
