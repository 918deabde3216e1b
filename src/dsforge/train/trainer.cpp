#include "dsforge/train/trainer.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cmath>
#include <filesystem>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/log.h"
#include "dsforge/data/shards.h"
#include "dsforge/eval/lm_eval.h"
#include "dsforge/log/metrics.h"
#include "dsforge/log/tensorboard.h"
#include "dsforge/model/io.h"
#include "dsforge/core/safetensors.h"
#include "dsforge/train/checkpoint.h"
#include "dsforge/train/optim.h"

namespace dsforge::train {
namespace {

std::atomic<int> g_stop{0};
extern "C" void on_stop_signal(int sig) { g_stop = sig; }

// Installs SIGINT/SIGTERM handlers for the lifetime of fit(), restoring the previous ones after.
struct SignalScope {
  struct sigaction old_int {}, old_term {};
  SignalScope() {
    g_stop = 0;
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
  }
  ~SignalScope() {
    sigaction(SIGINT, &old_int, nullptr);
    sigaction(SIGTERM, &old_term, nullptr);
  }
};

constexpr int64_t kMaxConsecutiveSkips = 5;

}  // namespace

void request_stop() { g_stop = SIGTERM; }

Trainer::Trainer(RunConfig cfg, model::ModelConfig model_cfg, std::string manifest_path)
    : cfg_(std::move(cfg)), mcfg_(std::move(model_cfg)), manifest_path_(std::move(manifest_path)) {
  model_ = model::build_model(mcfg_);
}

TrainResult Trainer::fit() {
  const auto& tc = cfg_.train;
  const std::string run_dir = cfg_.run.out_dir;
  const data::Manifest manifest = data::read_manifest(manifest_path_);
  if (manifest.vocab_size != mcfg_.vocab_size)
    throw ConfigError(fmt(manifest_path_, ": shards use a vocabulary of ", manifest.vocab_size,
                          " tokens but the model's vocab_size is ", mcfg_.vocab_size));
  const std::string shard_dir = std::filesystem::path(manifest_path_).parent_path().string();
  const std::string train_shard = path_join(shard_dir, manifest.train.files.at(0));
  const std::string val_shard = path_join(shard_dir, manifest.val.files.at(0));

  const int64_t D = model_->extra_target_tokens();
  data::TokenLoader loader(train_shard, tc.seq_len + 1 + D, tc.seq_len, static_cast<uint64_t>(cfg_.run.seed));
  model_->set_aux_alpha(tc.aux_loss_alpha);
  model_->set_label_smoothing(tc.label_smoothing);
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (auto& p : model_->named_parameters()) named.emplace_back(p.key(), p.value());
  AdamW opt(named, {tc.lr, tc.beta1, tc.beta2, tc.eps, tc.weight_decay});
  std::vector<at::Tensor> params;
  for (auto& [n, p] : named) params.push_back(p);

  // Fresh start or resume.
  const std::string cfg_hash = checkpoint_hash(cfg_);
  TrainResult result;
  int64_t step = 0;
  if (auto loaded = load_latest_checkpoint(run_dir)) {
    const std::string* ckpt = &loaded->dir;
    CheckpointData& data = loaded->data;
    const std::string saved_hash = data.trainer_state.value("config_hash", "");
    if (saved_hash != cfg_hash)
      throw CheckpointError(fmt(*ckpt, ": written by a run with another data/tokenizer/model/seq_len/seed config (hash ",
                                saved_hash, ", this run ", cfg_hash, "); use another run.out_dir or delete the checkpoints"));
    model::load_model_state(*model_, data.model, *ckpt + "/model.safetensors");
    opt.load_state_dict(data.optimizer, *ckpt + "/optimizer.safetensors");
    step = data.trainer_state.at("step").get<int64_t>();
    if (data.trainer_state.value("early_stopped", false)) {
      log_info("train: ", *ckpt, " ended by early stopping at step ", step, "; nothing to do");
      result.start_step = result.final_step = step;
      result.early_stopped = true;
      return result;
    }
    loader.set_cursor({data.trainer_state.at("loader_epoch").get<int64_t>(),
                       data.trainer_state.at("loader_position").get<int64_t>()});
    result.checkpoint = *ckpt;
    log_info("train: resuming from ", *ckpt, " at step ", step);
  } else {
    model_->init_weights(tc.init_std, static_cast<uint64_t>(cfg_.run.seed));
    log_info("train: fresh start, ", model::count_parameters(*model_), " parameters");
  }
  result.start_step = step;
  result.final_step = step;
  if (step >= tc.max_steps) {
    log_info("train: already at step ", step, " of ", tc.max_steps, "; nothing to do");
    return result;
  }

  log::MetricsWriter metrics(path_join(run_dir, "metrics.jsonl"));
  log::TensorBoardWriter tb(path_join(run_dir, "tb"));
  auto save = [&](int64_t at_step) {
    CheckpointData data;
    data.model = model::model_state(*model_);
    data.optimizer = opt.state_dict();
    data.model_config_json = model::model_config_to_json(mcfg_);
    data.trainer_state = {{"step", at_step},
                          {"loader_epoch", loader.cursor().epoch},
                          {"loader_position", loader.cursor().position},
                          {"config_hash", cfg_hash},
                          {"early_stopped", result.early_stopped},
                          {"seed", cfg_.run.seed}};
    result.checkpoint = save_checkpoint(run_dir, at_step, data, tc.keep_checkpoints);
  };

  // Early stopping keeps the best weights (by validation loss) in memory and on disk (checkpoints/best).
  double best_val = INFINITY;
  int64_t best_step = -1, bad_evals = 0;
  TensorMap best_state;

  SignalScope signals;
  model_->train();
  const int64_t tokens_per_step = tc.batch_size * tc.grad_accum_steps * tc.seq_len;
  const Schedule schedule{tc.schedule, tc.warmup_steps, tc.max_steps, tc.lr, tc.min_lr_ratio, tc.decay_fraction};
  auto t_window = std::chrono::steady_clock::now();
  const auto t_start = t_window;
  double loss_sum = 0, mtp_sum = 0;
  int64_t loss_n = 0, consecutive_skips = 0, window_steps = 0;
  while (step < tc.max_steps) {
    const double lr = schedule_lr(schedule, step);
    opt.set_lr(lr);
    // Gradient accumulation: N micro-batches, each loss scaled by 1/N, give the gradient of one batch N
    // times larger (the windows are the same ones, in the same order). MoE loads accumulate over all.
    opt.zero_grad();
    double loss = 0, mtp = 0;
    for (int64_t micro = 0; micro < tc.grad_accum_steps; ++micro) {
      at::Tensor batch = loader.next_batch(tc.batch_size);  // (B, S + 1 + D)
      model::LossOutput out = model_->loss(batch, tc.mtp_loss_weight * mtp_weight_factor(schedule, step));
      (tc.grad_accum_steps > 1 ? out.total / static_cast<double>(tc.grad_accum_steps) : out.total).backward();
      loss += out.main.item<double>() / static_cast<double>(tc.grad_accum_steps);
      if (out.mtp.defined()) mtp += out.mtp.item<double>() / static_cast<double>(tc.grad_accum_steps);
    }
    const double gnorm = clip_grad_norm(params, tc.grad_clip);
    if (!std::isfinite(loss) || !std::isfinite(gnorm)) {
      ++result.skipped_steps;
      if (++consecutive_skips >= kMaxConsecutiveSkips)
        throw Error(fmt("train: ", consecutive_skips, " non-finite steps in a row ending at step ", step,
                        " (loss ", loss, ", grad norm ", gnorm, "); lower train.lr or check the data"));
      log_info("train: step ", step, " skipped: non-finite loss or gradient");
      model_->update_expert_bias(0.0);  // drop this step's load counts
      ++step;
      continue;
    }
    consecutive_skips = 0;
    opt.step();
    const double load_ratio = model_->update_expert_bias(tc.bias_update_speed * bias_speed_factor(schedule, step));
    ++step;
    ++window_steps;
    loss_sum += loss;
    mtp_sum += mtp;
    ++loss_n;

    if (step % tc.log_every == 0 || step == tc.max_steps) {
      const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_window).count();
      const double tps = static_cast<double>(window_steps * tokens_per_step) / std::max(dt, 1e-9);
      result.last_loss = loss_sum / static_cast<double>(loss_n);
      result.tokens_per_second = tps;
      std::map<std::string, double> m = {{"loss", result.last_loss}, {"lr", lr}, {"grad_norm", gnorm},
                                         {"tokens_per_sec", tps}, {"expert_load_max_over_mean", load_ratio}};
      if (D > 0) m["mtp_loss"] = mtp_sum / static_cast<double>(loss_n);
      metrics.write(step, m);
      for (const auto& [k, v] : m) tb.add_scalar("train/" + k, v, step);
      tb.flush();
      log_info(fmt("step ", step, "/", tc.max_steps, "  loss ", result.last_loss, "  lr ", lr, "  gnorm ", gnorm,
                   "  ", static_cast<int64_t>(tps), " tok/s  load max/mean ", load_ratio));
      loss_sum = mtp_sum = 0;
      loss_n = window_steps = 0;
      t_window = std::chrono::steady_clock::now();
    }
    if (step % tc.eval_every == 0 || step == tc.max_steps) {
      eval::LmEval ev = eval::evaluate_lm(model_, val_shard, tc.seq_len, tc.batch_size, cfg_.eval.batches);
      metrics.write(step, {{"val_loss", ev.loss}, {"val_perplexity", ev.perplexity}}, "eval");
      tb.add_scalar("val/loss", ev.loss, step);
      tb.add_scalar("val/perplexity", ev.perplexity, step);
      tb.flush();
      log_info("eval step ", step, ": val loss ", ev.loss, ", perplexity ", ev.perplexity);
      t_window = std::chrono::steady_clock::now();  // keep eval time out of throughput
      if (tc.early_stopping_patience > 0) {
        if (ev.loss < best_val - tc.early_stopping_min_delta) {
          best_val = ev.loss;
          best_step = step;
          bad_evals = 0;
          best_state.clear();
          for (const auto& [k, t] : model::model_state(*model_)) best_state[k] = t.clone();
          const std::string best_dir = path_join(run_dir, "checkpoints/best");
          make_dirs(best_dir);
          write_file_atomic(path_join(best_dir, "config.json"), model::model_config_to_json(mcfg_));
          save_safetensors(path_join(best_dir, "model.safetensors"), best_state, {{"format", "pt"}, {"step", std::to_string(step)}});
        } else if (++bad_evals >= tc.early_stopping_patience) {
          model::load_model_state(*model_, best_state, "best weights");
          result.early_stopped = true;
          result.best_step = best_step;
          log_info("train: early stopping at step ", step, ": val loss has not improved by ", tc.early_stopping_min_delta,
                   " for ", bad_evals, " evaluations; restored the best weights (step ", best_step, ", val loss ", best_val, ")");
          save(step);
          result.final_step = step;
          return result;
        }
      }
    }
    if (g_stop != 0 || step == stop_at_) {
      save(step);
      result.interrupted = true;
      result.final_step = step;
      log_info("train: ", g_stop == SIGINT ? "SIGINT received" : g_stop == SIGTERM ? "SIGTERM received" : "stop requested", "; checkpoint saved at step ", step,
               " in ", result.checkpoint, ". Run the same command again to resume.");
      return result;
    }
    if (step % tc.checkpoint_every == 0 || step == tc.max_steps) save(step);
  }
  result.final_step = step;
  const double total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  log_info("train: done at step ", step, " in ", total_s, " s");
  return result;
}

}  // namespace dsforge::train
