// What one kind of training supplies to the one training loop (train/trainer.h): a module, the loss
// of its next micro-batch, its data position, and hooks. Pre-training a language model (LmTask),
// fine-tuning a classifier, a sequence-to-sequence model or a regressor are tasks; the optimizer,
// schedule, clipping, precision, data parallelism, checkpoints, logging and early stopping are the
// loop's, the same for all.
//
//   class MyTask : public TrainTask { ... };
//   MyTask task(...);
//   Trainer trainer(cfg, task);                 // cfg.train.*: lr, schedule, clip, checkpoints, ...
//   trainer.set_callbacks({.evaluate = [&](int64_t step) { return Scalars{{"val_loss", ...}}; }});
//   TrainResult r = trainer.fit();
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "dsforge/train/memory.h"

namespace dsforge::log {
class MetricsWriter;
class TensorBoardWriter;
}  // namespace dsforge::log

namespace dsforge::train {

using Scalars = std::map<std::string, double>;

struct MicroLoss {
  at::Tensor total;  // what backward() runs on: the main loss and any auxiliary terms
  at::Tensor main;   // the loss the loop reports and smooths (a scalar)
  at::Tensor aux;    // an optional second reported loss (MTP); undefined when the task has none
};

class TrainTask {
 public:
  virtual ~TrainTask() = default;

  // The module whose trainable parameters the loop optimises and whose state it checkpoints.
  virtual torch::nn::Module& module() = 0;
  // A fresh start (no checkpoint): initialise what is not pretrained.
  virtual void init_weights(double std, uint64_t seed) = 0;
  // One line for the log: what is being trained.
  virtual std::string describe() const = 0;
  // The module's config, saved with each checkpoint (config.json).
  virtual std::string config_json() const = 0;
  // What else a checkpoint must agree on beyond the run config's data/model keys (a fine-tuning task's
  // data set and base model); "" for none. A checkpoint with another identity is refused.
  virtual std::string identity() const { return ""; }

  // The loss of the next micro-batch of `rows` examples, of which this rank computes rows
  // [first, first + count). Every rank calls it for every micro-batch; the data position moves past
  // all `rows`. `step` is the optimizer step the micro-batch belongs to.
  virtual MicroLoss micro_batch_loss(int64_t rows, int64_t first, int64_t count, int64_t step, c10::Device device) = 0;
  // Where the data stream stands, for exact resume.
  virtual nlohmann::json data_position() const = 0;
  virtual void set_data_position(const nlohmann::json& position) = 0;

  // Tensors the loop sums over ranks once per step, before after_step (MoE expert-load counts).
  virtual std::vector<at::Tensor> step_sums() { return {}; }
  // After each optimizer step (the MoE bias update). Returns scalars for the next log line.
  virtual Scalars after_step(int64_t step) { return {}; }
  // Instead of after_step, when a step is skipped or rolled back.
  virtual void discard_step() {}
  // Extra scalars and records at each log interval (expert balance); rank 0 only.
  virtual void log_interval(int64_t step, Scalars& scalars, log::MetricsWriter& metrics, log::TensorBoardWriter& tb) {}

  // Throughput and MFU: tokens per example row, and training FLOPs per token (0 = no MFU).
  virtual int64_t tokens_per_row() const { return 1; }
  virtual double flops_per_token() const { return 0; }
  // The memory a micro-batch needs, for fitting it to train.memory_gb (nullopt = no planning).
  virtual std::optional<MemoryProbe> probe_memory(bool bf16) { return std::nullopt; }
};

// What the loop calls back into. Tests inject faults through the same hooks.
struct TrainCallbacks {
  // Validation at train.eval_every (rank 0); must return "val_loss", may add more ("val_perplexity").
  std::function<Scalars(int64_t step)> evaluate;
  // Each step's reported loss before the loop judges it (skip, spike); may change it.
  std::function<void(int64_t step, double& loss)> on_step_loss;
  // Checkpoint and return as if interrupted once this step completes.
  std::function<bool(int64_t step)> stop_after;
};

}  // namespace dsforge::train
