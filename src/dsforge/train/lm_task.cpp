#include "dsforge/train/lm_task.h"

#include <ATen/ATen.h>

#include <cmath>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/log.h"
#include "dsforge/embed/vectors.h"
#include "dsforge/tokenizer/bpe.h"
#include "dsforge/train/embedding_init.h"
#include "dsforge/data/shards.h"
#include "dsforge/log/metrics.h"
#include "dsforge/log/tensorboard.h"
#include "dsforge/model/info.h"
#include "dsforge/train/memory.h"

namespace dsforge::train {
namespace {

// Loads of every MoE layer as fractions of the mean: for histograms, heatmaps and the balance scalars.
std::vector<std::vector<double>> relative_loads(const std::vector<at::Tensor>& loads) {
  std::vector<std::vector<double>> out;
  for (const auto& l : loads) {
    const double mean = l.mean().item<double>();
    if (mean <= 0) continue;
    at::Tensor rel = (l / mean).contiguous();
    out.emplace_back(rel.data_ptr<double>(), rel.data_ptr<double>() + rel.numel());
  }
  return out;
}

}  // namespace

LmTask::LmTask(const RunConfig& cfg, model::ModelConfig model_cfg, const std::string& train_shard)
    : LmTask(cfg, model::build_model(model_cfg), train_shard, /*pretrained=*/false) {}

LmTask::LmTask(const RunConfig& cfg, model::CausalLm pretrained, const std::string& train_shard)
    : LmTask(cfg, std::move(pretrained), train_shard, /*pretrained=*/true) {}

LmTask::LmTask(const RunConfig& cfg, model::CausalLm model, const std::string& train_shard, bool pretrained)
    : mcfg_(model->config()),
      model_(std::move(model)),
      seq_len_(cfg.train.seq_len),
      mtp_weight_(cfg.train.mtp_loss_weight),
      bias_speed_(cfg.train.bias_update_speed),
      dropout_{cfg.train.embedding_dropout, cfg.train.attention_dropout, cfg.train.dropout} {
  const auto& tc = cfg.train;
  schedule_ = Schedule{tc.schedule, tc.warmup_steps, tc.max_steps, tc.lr, tc.min_lr_ratio, tc.decay_fraction};
  loader_ = std::make_unique<data::TokenLoader>(train_shard, model::training_row_length(mcfg_, seq_len_), seq_len_,
                                                static_cast<uint64_t>(cfg.run.seed));
  model_->set_aux_alpha(tc.aux_loss_alpha);
  model_->set_label_smoothing(tc.label_smoothing);
  model_->set_dropout(dropout_);
  pretrained_ = pretrained;
  init_embeddings_ = tc.init_embeddings;
  tokenizer_path_ = path_join(cfg.run.out_dir, "tokenizer.json");
}

LmTask::~LmTask() = default;

void LmTask::init_weights(double std, uint64_t seed) {
  if (pretrained_) return;
  model_->init_weights(std, seed);
  if (init_embeddings_.empty()) return;
  const EmbeddingInit r = init_embeddings_from_vectors(*model_, tok::BpeTokenizer::load(tokenizer_path_), embed::load_vectors(init_embeddings_), std);
  log_info("train: ", r.initialised, " of ", r.word_tokens, " whole-word tokens start from the vectors in ", init_embeddings_);
}

std::string LmTask::describe() const { return fmt(model::count_parameters(*model_), " parameters"); }

std::string LmTask::config_json() const { return model::model_config_to_json(mcfg_); }

MicroLoss LmTask::micro_batch_loss(int64_t rows, int64_t first, int64_t count, int64_t step, c10::Device device) {
  at::Tensor batch = loader_->next_batch(rows, first, count).to(device);  // (count, S + 1 + D)
  const model::LossOutput out = model_->loss(batch, mtp_weight_ * mtp_weight_factor(schedule_, step));
  return {out.total, out.main, out.mtp};
}

nlohmann::json LmTask::data_position() const {
  return {{"loader_epoch", loader_->cursor().epoch}, {"loader_position", loader_->cursor().position}};
}

void LmTask::set_data_position(const nlohmann::json& p) {
  loader_->set_cursor({p.at("loader_epoch").get<int64_t>(), p.at("loader_position").get<int64_t>()});
}

std::vector<at::Tensor> LmTask::step_sums() { return model_->pending_expert_counts(); }

Scalars LmTask::after_step(int64_t step) {
  last_load_ratio_ = model_->update_expert_bias(bias_speed_ * bias_speed_factor(schedule_, step));
  return {};
}

void LmTask::discard_step() { model_->update_expert_bias(0.0); }  // drop this step's load counts

void LmTask::log_interval(int64_t step, Scalars& m, log::MetricsWriter& metrics, log::TensorBoardWriter& tb) {
  const auto loads = relative_loads(model_->expert_loads());
  if (loads.empty()) return;
  // Balance: max/mean load and coefficient of variation, averaged over MoE layers.
  double cv = 0;
  std::vector<double> all;
  for (const auto& l : loads) {
    double var = 0;
    for (double x : l) var += (x - 1.0) * (x - 1.0);
    cv += std::sqrt(var / static_cast<double>(l.size()));
    all.insert(all.end(), l.begin(), l.end());
  }
  m["expert_load_max_over_mean"] = last_load_ratio_;
  m["expert_load_cv"] = cv / static_cast<double>(loads.size());
  tb.add_histogram("train/expert_load", all, step);
  metrics.write_raw(nlohmann::json{{"kind", "expert_load"}, {"step", step}, {"layers", loads}}.dump());
}

double LmTask::flops_per_token() const { return model::train_flops_per_token(mcfg_, seq_len_); }

std::optional<MemoryProbe> LmTask::probe_memory(bool bf16) {
  return probe_training_memory(mcfg_, seq_len_, bf16, dropout_, mtp_weight_);
}

}  // namespace dsforge::train
