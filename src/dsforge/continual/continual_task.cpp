#include "dsforge/continual/continual_task.h"

#include <ATen/ATen.h>

#include <cmath>
#include <sstream>

#include "dsforge/compress/distill.h"
#include "dsforge/core/error.h"
#include "dsforge/data/shards.h"
#include "dsforge/model/info.h"

namespace dsforge::continual {

Strategy parse_strategy(const std::string& text) {
  Strategy s;
  std::stringstream ss(text);
  std::string part;
  int parts = 0;
  bool finetune = false;
  while (std::getline(ss, part, '+')) {
    ++parts;
    bool* flag = part == "ewc" ? &s.ewc : part == "online-ewc" ? &s.online_ewc : part == "l2sp" ? &s.l2sp
               : part == "replay" ? &s.replay : part == "lwf" ? &s.lwf : nullptr;
    if (part == "finetune") {
      finetune = true;
      continue;
    }
    if (!flag)
      throw ConfigError(fmt("key 'continual.strategy': unknown strategy '", part, "' in \"", text,
                            "\" (expected finetune, ewc, online-ewc, l2sp, replay, lwf, or a '+'-joined combination such as replay+ewc)"));
    if (*flag) throw ConfigError(fmt("key 'continual.strategy': '", part, "' is named twice in \"", text, "\""));
    *flag = true;
  }
  if (parts == 0) throw ConfigError("key 'continual.strategy': empty (expected finetune, ewc, online-ewc, l2sp, replay, lwf)");
  if (finetune && parts > 1)
    throw ConfigError(fmt("key 'continual.strategy': \"", text, "\": finetune is plain training and combines with nothing"));
  std::string name;
  for (auto [on, n] : {std::pair{s.ewc, "ewc"}, {s.online_ewc, "online-ewc"}, {s.l2sp, "l2sp"}, {s.replay, "replay"}, {s.lwf, "lwf"}})
    if (on) name += (name.empty() ? "" : "+") + std::string(n);
  s.name = name.empty() ? "finetune" : name;
  return s;
}

ContinualTask::ContinualTask(const RunConfig& cfg, model::CausalLm model, const std::string& train_shard, ContinualParts parts)
    : LmTask(cfg, std::move(model), train_shard), parts_(std::move(parts)), seed_(static_cast<uint64_t>(cfg.run.seed)) {
  if (parts_.replay) {
    const int64_t window = model::training_row_length(mcfg_, seq_len_);
    if (parts_.replay->window() != window)
      throw ConfigError(fmt("replay: reservoir windows of ", parts_.replay->window(), " tokens, the training rows have ", window));
  }
  if (parts_.teacher) {
    parts_.teacher->eval();
    for (auto& p : parts_.teacher->parameters()) p.set_requires_grad(false);
  }
}

std::string ContinualTask::describe() const {
  std::string s = LmTask::describe();
  for (const auto& t : parts_.penalty.terms()) s += fmt(", ", t.name, " (strength ", t.strength, ")");
  if (parts_.replay) s += fmt(", replay ", parts_.replay_ratio, " of each batch from ", parts_.replay->size(), " windows");
  if (parts_.teacher) s += fmt(", LwF alpha ", parts_.lwf_alpha, " T ", parts_.lwf_temperature);
  return s;
}

int64_t ContinualTask::replay_rows(int64_t rows) const {
  if (!parts_.replay || parts_.replay_ratio <= 0) return 0;
  return std::min<int64_t>(rows - 1, std::llround(parts_.replay_ratio * static_cast<double>(rows)));
}

train::MicroLoss ContinualTask::micro_batch_loss(int64_t rows, int64_t first, int64_t count, int64_t step, c10::Device device) {
  const int64_t n_replay = replay_rows(rows), n_new = rows - n_replay;
  at::Tensor batch;  // this rank's rows (count, S + 1 + D)
  if (n_replay == 0) {
    batch = loader_->next_batch(rows, first, count);
  } else {
    // The global micro-batch: n_new rows of the new domain, then n_replay reservoir rows drawn by a
    // generator seeded by (seed, step, micro-batch index): the same on every rank and after a resume.
    if (step != draw_step_) draw_step_ = step, draw_index_ = 0;
    SplitMix64 rng(seed_ ^ (0x9E3779B97F4A7C15ull * static_cast<uint64_t>(step + 1)) ^ (0xD1B54A32D192ED03ull * static_cast<uint64_t>(++draw_index_)));
    at::Tensor all = at::cat({loader_->next_batch(n_new), parts_.replay->draw(n_replay, rng)}, 0);
    batch = all.narrow(0, first, count);
  }
  batch = batch.to(device);
  const model::LossOutput out = model_->loss(batch, mtp_weight_ * train::mtp_weight_factor(schedule_, step));
  at::Tensor total = out.total;
  if (parts_.teacher) {
    if (!teacher_placed_) parts_.teacher->to(device), teacher_placed_ = true;
    at::Tensor inputs = batch.narrow(1, 0, seq_len_);  // (count, S)
    at::Tensor teacher_logits;
    {
      at::NoGradGuard no_grad;
      teacher_logits = parts_.teacher->forward(inputs);
    }
    at::Tensor kl = compress::distillation_kl(model_->forward(inputs), teacher_logits, parts_.lwf_temperature);
    last_kl_ = kl.item<double>();
    total = total + parts_.lwf_alpha * kl;
  }
  if (!parts_.penalty.empty()) {
    at::Tensor pen = parts_.penalty.value(*model_);
    last_penalty_ = pen.item<double>();
    total = total + pen;
  }
  return {total, out.main, out.mtp};
}

train::Scalars ContinualTask::after_step(int64_t step) {
  train::Scalars s = LmTask::after_step(step);
  if (!parts_.penalty.empty()) s["penalty"] = last_penalty_;
  if (parts_.teacher) s["lwf_kl"] = last_kl_;
  return s;
}

}  // namespace dsforge::continual
