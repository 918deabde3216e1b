// Pre-training a language model (DeepSeek-V3, GPT-2, LSTM) on a token shard: the task the pipeline's
// train stage runs through the one training loop.
//
// Rows are model::training_row_length(config, seq_len) tokens from the loader's seeded shuffle; the
// loss is the model's (next token, MTP weighted by train.mtp_loss_weight, the sequence-wise balance
// loss); after each step the MoE routing bias moves by train.bias_update_speed (aux-loss-free
// balancing), both following the schedule (DeepSeek-V3's changes them late in training).
#pragma once
#include <memory>
#include <string>

#include "dsforge/core/run_config.h"
#include "dsforge/model/causal_lm.h"
#include "dsforge/model/config.h"
#include "dsforge/train/optim.h"
#include "dsforge/train/task.h"

namespace dsforge::data {
class TokenLoader;
}

namespace dsforge::train {

class LmTask : public TrainTask {
 public:
  // `train_shard`: the token shard to train on; `cfg.train` gives seq_len, the loss weights and dropout.
  LmTask(const RunConfig& cfg, model::ModelConfig model_cfg, const std::string& train_shard);
  // Continues training `pretrained` (a loaded model folder): a fresh start keeps its weights
  // (init_weights does nothing); a checkpoint still replaces them on resume.
  LmTask(const RunConfig& cfg, model::CausalLm pretrained, const std::string& train_shard);
  ~LmTask() override;

  model::CausalLm& model() { return model_; }
  const model::ModelConfig& model_config() const { return mcfg_; }

  torch::nn::Module& module() override { return *model_; }
  void init_weights(double std, uint64_t seed) override;
  std::string describe() const override;
  std::string config_json() const override;
  MicroLoss micro_batch_loss(int64_t rows, int64_t first, int64_t count, int64_t step, c10::Device device) override;
  nlohmann::json data_position() const override;
  void set_data_position(const nlohmann::json& position) override;
  std::vector<at::Tensor> step_sums() override;
  Scalars after_step(int64_t step) override;
  void discard_step() override;
  void log_interval(int64_t step, Scalars& scalars, log::MetricsWriter& metrics, log::TensorBoardWriter& tb) override;
  int64_t tokens_per_row() const override { return seq_len_; }
  double flops_per_token() const override;
  std::optional<MemoryProbe> probe_memory(bool bf16) override;

 protected:  // ContinualTask, RecoveryTask and DistillTask compose their batches and losses from these
  // `model` trained from scratch (init_weights initialises it) or continued (`pretrained`).
  LmTask(const RunConfig& cfg, model::CausalLm model, const std::string& train_shard, bool pretrained);

  model::ModelConfig mcfg_;
  model::CausalLm model_;
  std::unique_ptr<data::TokenLoader> loader_;
  Schedule schedule_;
  int64_t seq_len_;
  double mtp_weight_, bias_speed_;
  model::DropoutRates dropout_;
  double last_load_ratio_ = 0;
  bool pretrained_ = false;
  std::string init_embeddings_, tokenizer_path_;  // train.init_embeddings and the run's tokenizer
};

}  // namespace dsforge::train
