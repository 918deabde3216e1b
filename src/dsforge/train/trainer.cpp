#include "dsforge/train/trainer.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/log.h"
#include "dsforge/core/safetensors.h"
#include "dsforge/data/shards.h"
#include "dsforge/eval/lm_eval.h"
#include "dsforge/log/metrics.h"
#include "dsforge/log/tensorboard.h"
#include "dsforge/model/info.h"
#include "dsforge/model/io.h"
#include "dsforge/train/checkpoint.h"
#include "dsforge/train/memory.h"
#include "dsforge/train/optim.h"
#include "dsforge/train/precision.h"
#include "dsforge/train/progress.h"

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
constexpr int64_t kSpikeWarmupSteps = 10;  // accepted steps before the loss average is trusted

// Random generator states the run consumes (dropout): the CPU one, and the device's.
TensorMap rng_states(c10::Device device) {
  TensorMap out;
  auto save = [&](const std::string& name, at::Generator gen) {
    std::lock_guard<std::mutex> lock(gen.mutex());
    out[name] = gen.get_state();
  };
  save("cpu", at::detail::getDefaultCPUGenerator());
  if (!device.is_cpu()) save(device.str(), at::globalContext().defaultGenerator(device));
  return out;
}

void restore_rng_states(const TensorMap& states, c10::Device device) {
  for (const auto& [name, state] : states) {
    // A state written on another device (a GPU checkpoint resumed on CPU) is skipped before its
    // generator is asked for, which would fail where that device does not exist.
    if (name != "cpu" && c10::Device(name) != device) continue;
    at::Generator gen = name == "cpu" ? at::detail::getDefaultCPUGenerator()
                                      : at::globalContext().defaultGenerator(c10::Device(name));
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(state);
  }
}

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

  // Device, precision, regularisation.
  const c10::Device device = resolve_device(cfg_.run.device);
  const c10::ScalarType amp_dtype = autocast_dtype(tc.precision, device);
  const model::DropoutRates dropout{tc.embedding_dropout, tc.attention_dropout, tc.dropout};
  model_->to(device);
  model_->set_aux_alpha(tc.aux_loss_alpha);
  model_->set_label_smoothing(tc.label_smoothing);
  model_->set_dropout(dropout);
  LossScaler scaler(amp_dtype == at::kHalf);

  // Micro-batch and accumulation from the memory budget; the global batch is batch_size x grad_accum_steps.
  const int64_t D = model_->extra_target_tokens();
  const int64_t row_len = tc.seq_len + 1 + D, global_batch = tc.batch_size * tc.grad_accum_steps;
  int64_t micro = tc.batch_size, accum = tc.grad_accum_steps;
  if (tc.fit_micro_batch) {
    const auto budget = static_cast<int64_t>(tc.memory_gb > 0 ? tc.memory_gb * (1LL << 30)
                                                               : 0.6 * static_cast<double>(available_memory_bytes()));
    if (budget > 0) {
      const MemoryProbe probe = probe_training_memory(mcfg_, row_len, amp_dtype == at::kBFloat16, dropout);
      const BatchPlan plan = plan_batch(probe, global_batch, budget);
      micro = plan.micro_batch;
      accum = plan.accum_steps;
      log_info("train: ", plan.reason);
    }
  }

  data::TokenLoader loader(train_shard, row_len, tc.seq_len, static_cast<uint64_t>(cfg_.run.seed));
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (auto& p : model_->named_parameters()) named.emplace_back(p.key(), p.value());
  AdamW opt(named, {tc.lr, tc.beta1, tc.beta2, tc.eps, tc.weight_decay});
  std::vector<at::Tensor> params;
  for (auto& [n, p] : named) params.push_back(p);

  // Fresh start or resume; the same restore serves loss-spike rollbacks.
  const std::string cfg_hash = checkpoint_hash(cfg_);
  TrainResult result;
  result.micro_batch = micro;
  result.accum_steps = accum;
  int64_t step = 0;
  auto restore = [&](const LoadedCheckpoint& ck, bool with_cursor) {
    const nlohmann::json& st = ck.data.trainer_state;
    const std::string saved_hash = st.value("config_hash", "");
    if (saved_hash != cfg_hash)
      throw CheckpointError(fmt(ck.dir, ": written by a run with another data/tokenizer/model/seq_len/seed config (hash ",
                                saved_hash, ", this run ", cfg_hash, "); use another run.out_dir or delete the checkpoints"));
    model::load_model_state(*model_, ck.data.model, ck.dir + "/model.safetensors");
    opt.load_state_dict(ck.data.optimizer, ck.dir + "/optimizer.safetensors");
    restore_rng_states(ck.data.rng, device);
    scaler.restore(st.value("loss_scale", scaler.scale()), st.value("loss_scale_clean_steps", int64_t{0}));
    step = st.at("step").get<int64_t>();
    if (with_cursor) loader.set_cursor({st.at("loader_epoch").get<int64_t>(), st.at("loader_position").get<int64_t>()});
  };
  if (auto loaded = load_latest_checkpoint(run_dir)) {
    restore(*loaded, /*with_cursor=*/true);
    result.checkpoint = loaded->dir;
    if (loaded->data.trainer_state.value("early_stopped", false)) {
      log_info("train: ", loaded->dir, " ended by early stopping at step ", step, "; nothing to do");
      result.start_step = result.final_step = step;
      result.early_stopped = true;
      return result;
    }
    log_info("train: resuming from ", loaded->dir, " at step ", step);
  } else {
    model_->init_weights(tc.init_std, static_cast<uint64_t>(cfg_.run.seed));
    at::manual_seed(static_cast<uint64_t>(cfg_.run.seed));  // the dropout stream, saved in every checkpoint
    log_info("train: fresh start, ", model::count_parameters(*model_), " parameters on ", device.str(), ", ", tc.precision);
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
    data.rng = rng_states(device);
    data.model_config_json = model::model_config_to_json(mcfg_);
    data.trainer_state = {{"step", at_step},
                          {"loader_epoch", loader.cursor().epoch},
                          {"loader_position", loader.cursor().position},
                          {"config_hash", cfg_hash},
                          {"early_stopped", result.early_stopped},
                          {"loss_scale", scaler.scale()},
                          {"loss_scale_clean_steps", scaler.clean_steps()},
                          {"seed", cfg_.run.seed}};
    result.checkpoint = save_checkpoint(run_dir, at_step, data, tc.keep_checkpoints);
  };

  // Model FLOPs utilisation against the measured matmul peak of this device and precision.
  const double flops_per_token = model::train_flops_per_token(mcfg_, tc.seq_len);
  const double peak_gflops = tc.peak_gflops > 0 ? tc.peak_gflops : measure_matmul_gflops(device, amp_dtype);
  metrics.write(step, {{"peak_gflops", peak_gflops}, {"flops_per_token", flops_per_token},
                       {"micro_batch", static_cast<double>(micro)}, {"accum_steps", static_cast<double>(accum)}},
                "setup");

  // Early stopping keeps the best weights (by validation loss) in memory and on disk (checkpoints/best).
  double best_val = INFINITY;
  int64_t best_step = -1, bad_evals = 0;
  TensorMap best_state;
  // Loss-spike detection: bias-corrected exponential average of accepted losses.
  double loss_ema = 0, ema_weight = 0;
  int64_t ema_steps = 0;

  SignalScope signals;
  ProgressLine progress;
  model_->train();
  const int64_t tokens_per_step = global_batch * tc.seq_len;
  const Schedule schedule{tc.schedule, tc.warmup_steps, tc.max_steps, tc.lr, tc.min_lr_ratio, tc.decay_fraction};
  auto t_window = std::chrono::steady_clock::now();
  const auto t_start = t_window;
  const int64_t first_step = step;
  double loss_sum = 0, mtp_sum = 0, train_seconds = 0;
  int64_t loss_n = 0, consecutive_skips = 0, window_steps = 0;
  while (step < tc.max_steps) {
    const double lr = schedule_lr(schedule, step);
    opt.set_lr(lr);
    // Gradient accumulation: N micro-batches, each loss scaled by 1/N, give the gradient of one batch N
    // times larger (the windows are the same ones, in the same order). MoE loads accumulate over all.
    opt.zero_grad();
    double loss = 0, mtp = 0;
    for (int64_t m = 0; m < accum; ++m) {
      at::Tensor batch = loader.next_batch(micro).to(device);  // (B, S + 1 + D)
      model::LossOutput out;
      {
        AutocastScope autocast(device, amp_dtype);
        out = model_->loss(batch, tc.mtp_loss_weight * mtp_weight_factor(schedule, step));
      }
      scaler.scale_loss(accum > 1 ? out.total / static_cast<double>(accum) : out.total).backward();
      loss += out.main.item<double>() / static_cast<double>(accum);
      if (out.mtp.defined()) mtp += out.mtp.item<double>() / static_cast<double>(accum);
    }
    if (step == spike_at_) {
      loss *= 100.0;
      spike_at_ = -1;
    }
    scaler.unscale(params);
    const double gnorm = clip_grad_norm(params, tc.grad_clip);
    if (!std::isfinite(loss) || !std::isfinite(gnorm)) {
      ++result.skipped_steps;
      model_->update_expert_bias(0.0);  // drop this step's load counts
      if (scaler.enabled() && std::isfinite(loss)) {  // fp16 gradient overflow: a smaller scale, not a failure
        scaler.update(/*overflow=*/true);
        log_info("train: step ", step, " skipped: fp16 gradient overflow, loss scale now ", scaler.scale());
        ++step;
        continue;
      }
      if (++consecutive_skips >= kMaxConsecutiveSkips)
        throw Error(fmt("train: ", consecutive_skips, " non-finite steps in a row ending at step ", step,
                        " (loss ", loss, ", grad norm ", gnorm, "); lower train.lr or check the data"));
      log_info("train: step ", step, " skipped: non-finite loss or gradient");
      ++step;
      continue;
    }
    consecutive_skips = 0;
    if (tc.spike_factor > 0 && ema_steps >= kSpikeWarmupSteps && loss > tc.spike_factor * loss_ema / ema_weight) {
      // Roll back to the last checkpoint; the loader keeps its position, so the batches since that
      // checkpoint, the offending one included, are skipped.
      model_->update_expert_bias(0.0);
      if (++result.rollbacks > tc.max_rollbacks)
        throw Error(fmt("train: loss spike at step ", step, " (", loss, " > ", tc.spike_factor, " x running mean ",
                        loss_ema / ema_weight, ") after ", tc.max_rollbacks,
                        " rollbacks (train.max_rollbacks); lower train.lr or inspect the data near this step"));
      progress.clear();
      auto ck = load_latest_checkpoint(run_dir);
      const int64_t spike_step = step;
      if (ck) restore(*ck, /*with_cursor=*/false);
      log_info("train: loss spike at step ", spike_step, " (", loss, " > ", tc.spike_factor, " x running mean ",
               loss_ema / ema_weight, "); ", ck ? "rolled back to " + ck->dir : std::string("no checkpoint yet, batch skipped"),
               ", data up to here skipped");
      metrics.write(spike_step, {{"loss", loss}, {"rolled_back_to", static_cast<double>(step)}}, "rollback");
      if (!ck) ++step;
      continue;
    }
    opt.step();
    scaler.update(/*overflow=*/false);
    const double load_ratio = model_->update_expert_bias(tc.bias_update_speed * bias_speed_factor(schedule, step));
    ++step;
    ++window_steps;
    loss_sum += loss;
    mtp_sum += mtp;
    ++loss_n;
    loss_ema = 0.95 * loss_ema + 0.05 * loss;
    ema_weight = 0.95 * ema_weight + 0.05;
    ++ema_steps;

    const double window_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_window).count();
    const double tps = static_cast<double>(window_steps * tokens_per_step) / std::max(window_s, 1e-9);
    const double mfu = tps * flops_per_token / (peak_gflops * 1e9);
    if (progress.enabled()) {
      const double done_s = train_seconds + window_s;
      const double per_step = done_s / static_cast<double>(std::max<int64_t>(step - first_step, 1));
      progress.update({step, tc.max_steps, loss, lr, gnorm, tps, mfu, per_step * static_cast<double>(tc.max_steps - step)});
    }
    if (step % tc.log_every == 0 || step == tc.max_steps) {
      result.last_loss = loss_sum / static_cast<double>(loss_n);
      result.tokens_per_second = tps;
      result.mfu = mfu;
      std::map<std::string, double> m = {{"loss", result.last_loss}, {"lr", lr}, {"grad_norm", gnorm},
                                         {"tokens_per_sec", tps}, {"mfu", mfu}};
      if (D > 0) m["mtp_loss"] = mtp_sum / static_cast<double>(loss_n);
      if (scaler.enabled()) m["loss_scale"] = scaler.scale();
      const auto loads = relative_loads(model_->expert_loads());
      if (!loads.empty()) {
        // Balance: max/mean load and coefficient of variation, averaged over MoE layers.
        double cv = 0;
        std::vector<double> all;
        for (const auto& l : loads) {
          double var = 0;
          for (double x : l) var += (x - 1.0) * (x - 1.0);
          cv += std::sqrt(var / static_cast<double>(l.size()));
          all.insert(all.end(), l.begin(), l.end());
        }
        m["expert_load_max_over_mean"] = load_ratio;
        m["expert_load_cv"] = cv / static_cast<double>(loads.size());
        tb.add_histogram("train/expert_load", all, step);
        metrics.write_raw(nlohmann::json{{"kind", "expert_load"}, {"step", step}, {"layers", loads}}.dump());
      }
      metrics.write(step, m);
      for (const auto& [k, v] : m) tb.add_scalar("train/" + k, v, step);
      tb.flush();
      progress.clear();
      log_info(fmt("step ", step, "/", tc.max_steps, "  loss ", result.last_loss, "  lr ", lr, "  gnorm ", gnorm, "  ",
                   static_cast<int64_t>(tps), " tok/s  MFU ", static_cast<int64_t>(1000 * mfu) / 10.0, "%"),
               loads.empty() ? "" : fmt("  load max/mean ", load_ratio));
      loss_sum = mtp_sum = 0;
      loss_n = window_steps = 0;
      train_seconds += window_s;
      t_window = std::chrono::steady_clock::now();
    }
    if (step % tc.eval_every == 0 || step == tc.max_steps) {
      eval::LmEval ev = eval::evaluate_lm(model_, val_shard, tc.seq_len, tc.batch_size, cfg_.eval.batches);
      metrics.write(step, {{"val_loss", ev.loss}, {"val_perplexity", ev.perplexity}}, "eval");
      tb.add_scalar("val/loss", ev.loss, step);
      tb.add_scalar("val/perplexity", ev.perplexity, step);
      tb.flush();
      progress.clear();
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
      progress.clear();
      log_info("train: ", g_stop == SIGINT ? "SIGINT received" : g_stop == SIGTERM ? "SIGTERM received" : "stop requested",
               "; checkpoint saved at step ", step, " in ", result.checkpoint, ". Run the same command again to resume.");
      return result;
    }
    if (step % tc.checkpoint_every == 0 || step == tc.max_steps) save(step);
  }
  result.final_step = step;
  progress.clear();
  const double total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  log_info("train: done at step ", step, " in ", format_duration(total_s));
  return result;
}

}  // namespace dsforge::train
