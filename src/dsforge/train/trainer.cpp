#include "dsforge/train/trainer.h"

#include <ATen/ATen.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/log.h"
#include "dsforge/core/stop.h"
#include "dsforge/data/shards.h"
#include "dsforge/log/metrics.h"
#include "dsforge/log/tensorboard.h"
#include "dsforge/model/io.h"
#include "dsforge/train/checkpoint_manager.h"
#include "dsforge/train/data_parallel.h"
#include "dsforge/train/lm_task.h"
#include "dsforge/train/memory.h"
#include "dsforge/train/optim.h"
#include "dsforge/train/precision.h"
#include "dsforge/train/progress.h"

namespace dsforge::train {
namespace {

constexpr int64_t kMaxConsecutiveSkips = 5;
constexpr int64_t kSpikeWarmupSteps = 10;  // accepted steps before the loss average is trusted

// DSFORGE_KILL_RANK_AT=<rank>:<step> SIGKILLs that rank as it starts that step: how the distributed
// tests lose a rank. Read here, not part of any API.
int64_t kill_step_for_rank(int rank) {
  const char* v = std::getenv("DSFORGE_KILL_RANK_AT");
  if (!v) return -1;
  int r = -1;
  long long s = -1;
  if (std::sscanf(v, "%d:%lld", &r, &s) != 2) return -1;
  return r == rank ? static_cast<int64_t>(s) : -1;
}

}  // namespace

// Everything one fit() holds: the pieces of the loop and its running figures.
struct Trainer::Run {
  Run(dist::Comm* comm, const RunConfig& cfg, const std::string& task_identity)
      : dp(comm, cfg.dist.zero1, static_cast<uint64_t>(cfg.run.seed)),
        ckpt(cfg.run.out_dir, cfg.train.keep_checkpoints,
             task_identity.empty() ? checkpoint_hash(cfg) : hex64(fnv1a64(checkpoint_hash(cfg) + "|" + task_identity))) {}
  DataParallel dp;
  CheckpointManager ckpt;
  c10::Device device{c10::kCPU};
  c10::ScalarType amp_dtype = at::kFloat;
  std::unique_ptr<LossScaler> scaler;
  std::unique_ptr<AdamW> opt;
  std::vector<at::Tensor> params;
  Schedule schedule;
  int64_t micro = 0, accum = 1, local_micro = 0, global_batch = 0;
  std::unique_ptr<log::MetricsWriter> metrics;
  std::unique_ptr<log::TensorBoardWriter> tb;
  ProgressLine progress;
  TrainResult result;
  int64_t step = 0, first_step = 0;
  bool early_stopped_ck = false, stop_requested = false;
  // This step's figures.
  double lr = 0, loss = 0, aux = 0, gnorm = 0;
  bool has_aux = false;
  // The logging window.
  double loss_sum = 0, aux_sum = 0, train_seconds = 0, peak_gflops = 0;
  int64_t loss_n = 0, window_steps = 0, consecutive_skips = 0;
  std::chrono::steady_clock::time_point t_window, t_start;
  Scalars step_scalars;
  // Loss-spike detection: bias-corrected exponential average of accepted losses.
  double loss_ema = 0, ema_weight = 0;
  int64_t ema_steps = 0;
  // Early stopping keeps the best weights (by validation loss) in memory and on disk (checkpoints/best).
  double best_val = INFINITY;
  int64_t bad_evals = 0;
  TensorMap best_state;

  template <typename... Args>
  void say(const Args&... parts) {
    if (dp.lead()) log_info(parts...);
  }
};

Trainer::Trainer(RunConfig cfg, TrainTask& task) : cfg_(std::move(cfg)), task_(&task) {}

Trainer::Trainer(RunConfig cfg, model::ModelConfig model_cfg, const std::string& manifest_path) : cfg_(std::move(cfg)) {
  const data::Manifest manifest = data::read_manifest(manifest_path);
  if (manifest.vocab_size != model_cfg.vocab_size)
    throw ConfigError(fmt(manifest_path, ": shards use a vocabulary of ", manifest.vocab_size,
                          " tokens but the model's vocab_size is ", model_cfg.vocab_size));
  const std::string shard_dir = std::filesystem::path(manifest_path).parent_path().string();
  own_task_ = std::make_unique<LmTask>(cfg_, std::move(model_cfg), path_join(shard_dir, manifest.train.files.at(0)));
  task_ = own_task_.get();
}

Trainer::~Trainer() = default;

model::CausalLm& Trainer::model() {
  if (!own_task_) throw Error("Trainer::model: this trainer runs a task that is not a language model");
  return own_task_->model();
}

// Device, precision, the micro-batch plan, the optimizer and the data-parallel pieces.
void Trainer::setup(Run& r) {
  const auto& tc = cfg_.train;
  r.dp.agree("run config", to_toml(cfg_) + task_->config_json());
  r.device = resolve_device(cfg_.run.device);
  r.amp_dtype = autocast_dtype(tc.precision, r.device);
  r.scaler = std::make_unique<LossScaler>(r.amp_dtype == at::kHalf);
  task_->module().to(r.device);
  r.schedule = Schedule{tc.schedule, tc.warmup_steps, tc.max_steps, tc.lr, tc.min_lr_ratio, tc.decay_fraction};

  // Micro-batch and accumulation from the memory budget; the global batch is batch_size x grad_accum_steps,
  // and each rank takes an equal share of every micro-batch.
  const int world = r.dp.world();
  if (tc.batch_size % world != 0)
    throw ConfigError(fmt("key 'train.batch_size': ", tc.batch_size, " is not a multiple of the ", world,
                          " ranks (each rank takes batch_size / ranks rows of every micro-batch)"));
  r.global_batch = tc.batch_size * tc.grad_accum_steps;
  r.micro = tc.batch_size;
  r.accum = tc.grad_accum_steps;
  if (tc.fit_micro_batch && !r.device.is_cpu() && tc.memory_gb <= 0) {
    // The probe measures host allocations; a device's free memory is not read here, so plan only on request.
    r.say("train: micro-batch planning is off on ", r.device.str(), " (set train.memory_gb to plan; micro-batch ",
          tc.batch_size, " x ", tc.grad_accum_steps, " accumulation steps as configured)");
  } else if (tc.fit_micro_batch) {
    const int local_ranks = r.dp.local_world();
    const auto budget = static_cast<int64_t>(tc.memory_gb > 0 ? tc.memory_gb * (1LL << 30)
                                                               : 0.6 * static_cast<double>(available_memory_bytes()) / local_ranks);
    if (budget > 0) {
      if (auto probe = task_->probe_memory(r.amp_dtype == at::kBFloat16)) {
        const BatchPlan plan = plan_batch(*probe, r.global_batch / world, budget);
        r.micro = plan.micro_batch * world;
        r.accum = plan.accum_steps;
        r.say("train: ", world > 1 ? "per rank: " : "", plan.reason,
              world > 1 ? fmt("; global batch ", r.global_batch, " over ", world, " ranks") : std::string());
      }
    }
  }
  r.local_micro = r.micro / world;
  r.result.micro_batch = r.micro;
  r.result.accum_steps = r.accum;

  std::vector<std::pair<std::string, at::Tensor>> named;
  std::vector<std::string> names;
  for (auto& p : task_->module().named_parameters())
    if (p.value().requires_grad()) {
      named.emplace_back(p.key(), p.value());
      names.push_back(p.key());
      r.params.push_back(p.value());
    }
  r.opt = std::make_unique<AdamW>(named, AdamWOptions{tc.lr, tc.beta1, tc.beta2, tc.eps, tc.weight_decay},
                                  r.dp.owned(r.params));
  r.dp.attach(r.params, names, cfg_.dist.bucket_mb);
  if (r.dp.active()) r.say("dist: ", r.dp.describe(r.local_micro, *r.opt));
}

// Restores the newest checkpoint (rank 0 reads it; the others receive). False when there is none.
bool Trainer::restore(Run& r, bool with_position) {
  std::optional<LoadedCheckpoint> ck;
  std::string error;
  try {
    if (r.dp.lead()) ck = r.ckpt.load_latest();
    if (ck) {
      model::load_model_state(task_->module(), ck->data.model, ck->dir + "/model.safetensors");
      r.opt->load_state_dict(ck->data.optimizer, ck->dir + "/optimizer.safetensors");
    }
  } catch (const std::exception& e) {
    if (!r.dp.active()) throw;
    error = e.what();
  }
  r.dp.share_error(error);  // a refused checkpoint is refused on every rank
  if (!error.empty()) throw CheckpointError(error);
  // Scalars: found, step, loss scale and its clean steps, early stop.
  at::Tensor sc = at::zeros({5}, at::kDouble);
  nlohmann::json position;
  if (ck) {
    const nlohmann::json& st = ck->data.trainer_state;
    double* d = sc.data_ptr<double>();
    d[0] = 1;
    d[1] = static_cast<double>(st.at("step").get<int64_t>());
    d[2] = st.value("loss_scale", r.scaler->scale());
    d[3] = static_cast<double>(st.value("loss_scale_clean_steps", int64_t{0}));
    d[4] = st.value("early_stopped", false) ? 1 : 0;
    position = st;
  }
  r.dp.broadcast_scalars(sc);
  const double* d = sc.data_ptr<double>();
  if (d[0] == 0) return false;
  if (r.dp.active()) {
    r.dp.broadcast_module(task_->module());
    r.dp.broadcast_moments(*r.opt, ck ? &ck->data.optimizer : nullptr);
    position = nlohmann::json::parse(r.dp.share_text(position.dump()));  // every rank reads rank 0's data position
  }
  r.step = static_cast<int64_t>(d[1]);
  r.scaler->restore(d[2], static_cast<int64_t>(d[3]));
  if (with_position) task_->set_data_position(position);
  r.dp.scatter_rng(ck ? &ck->data.rng : nullptr, r.device, r.step);
  r.early_stopped_ck = d[4] != 0;
  if (ck) r.result.checkpoint = ck->dir;
  return true;
}

// A fresh start or a resume, then the writers and the throughput reference.
void Trainer::start(Run& r) {
  const auto& tc = cfg_.train;
  if (restore(r, /*with_position=*/true)) {
    if (!r.early_stopped_ck)
      r.say("train: resuming from ", r.result.checkpoint, " at step ", r.step,
            r.dp.world() > 1 ? fmt(" on ", r.dp.world(), " ranks") : std::string());
  } else {
    task_->init_weights(tc.init_std, static_cast<uint64_t>(cfg_.run.seed));
    r.dp.broadcast_module(task_->module());
    // The dropout stream, saved in every checkpoint; each rank draws its own.
    at::manual_seed(static_cast<uint64_t>(cfg_.run.seed) + 1000003ULL * static_cast<uint64_t>(r.dp.rank()));
    r.say("train: fresh start, ", task_->describe(), " on ", r.device.str(), ", ", tc.precision);
  }
  r.result.start_step = r.result.final_step = r.first_step = r.step;
}

// One optimizer step: accum micro-batches (each loss scaled by 1/accum: the gradient of one batch accum
// times larger, from the same rows in the same order), the step's reductions, then the checks that may
// skip it or roll it back, and the update.
Trainer::StepOutcome Trainer::step(Run& r) {
  const auto& tc = cfg_.train;
  r.lr = schedule_lr(r.schedule, r.step);
  r.opt->set_lr(r.lr);
  r.opt->zero_grad();
  r.loss = r.aux = 0;
  r.has_aux = false;
  for (int64_t m = 0; m < r.accum; ++m) {
    MicroLoss out;
    {
      AutocastScope autocast(r.device, r.amp_dtype);
      out = task_->micro_batch_loss(r.micro, r.dp.rank() * r.local_micro, r.local_micro, r.step, r.device);
    }
    r.dp.begin_backward(/*last_micro_batch=*/m == r.accum - 1);
    r.scaler->scale_loss(r.accum > 1 ? out.total / static_cast<double>(r.accum) : out.total).backward();
    r.loss += out.main.item<double>() / static_cast<double>(r.accum);
    if (out.aux.defined()) {
      r.aux += out.aux.item<double>() / static_cast<double>(r.accum);
      r.has_aux = true;
    }
  }
  r.stop_requested = stop_signal() != 0;
  if (r.dp.active()) {
    r.dp.finish_backward();
    if (r.step == r.first_step)
      r.say("dist: ", r.dp.launched_in_backward(), " of ", r.dp.bucket_count(),
            " gradient buckets started their all-reduce during the backward pass");
    std::vector<at::Tensor> sums = task_->step_sums();
    r.dp.reduce_step(r.loss, r.aux, r.stop_requested, sums);
  }
  if (callbacks_.on_step_loss) callbacks_.on_step_loss(r.step, r.loss);
  r.scaler->unscale(r.params);
  r.gnorm = clip_grad_norm(r.params, tc.grad_clip);

  if (!std::isfinite(r.loss) || !std::isfinite(r.gnorm)) {
    ++r.result.skipped_steps;
    task_->discard_step();
    if (r.scaler->enabled() && std::isfinite(r.loss)) {  // fp16 gradient overflow: a smaller scale, not a failure
      r.scaler->update(/*overflow=*/true);
      r.say("train: step ", r.step, " skipped: fp16 gradient overflow, loss scale now ", r.scaler->scale());
      ++r.step;
      return StepOutcome::kSkipped;
    }
    if (++r.consecutive_skips >= kMaxConsecutiveSkips)
      throw Error(fmt("train: ", r.consecutive_skips, " non-finite steps in a row ending at step ", r.step, " (loss ", r.loss,
                      ", grad norm ", r.gnorm, "); lower train.lr or check the data"));
    r.say("train: step ", r.step, " skipped: non-finite loss or gradient");
    ++r.step;
    return StepOutcome::kSkipped;
  }
  r.consecutive_skips = 0;
  if (tc.spike_factor > 0 && r.ema_steps >= kSpikeWarmupSteps && r.loss > tc.spike_factor * r.loss_ema / r.ema_weight) {
    // Roll back to the last checkpoint; the data position stays, so the batches since that checkpoint,
    // the offending one included, are skipped.
    task_->discard_step();
    const double mean = r.loss_ema / r.ema_weight;
    if (++r.result.rollbacks > tc.max_rollbacks)
      throw Error(fmt("train: loss spike at step ", r.step, " (", r.loss, " > ", tc.spike_factor, " x running mean ", mean,
                      ") after ", tc.max_rollbacks, " rollbacks (train.max_rollbacks); lower train.lr or inspect the data "
                      "near this step"));
    r.progress.clear();
    const int64_t spike_step = r.step;
    const bool rolled = restore(r, /*with_position=*/false);
    r.say("train: loss spike at step ", spike_step, " (", r.loss, " > ", tc.spike_factor, " x running mean ", mean, "); ",
          rolled ? "rolled back to " + r.result.checkpoint : std::string("no checkpoint yet, batch skipped"),
          ", data up to here skipped");
    if (r.dp.lead()) r.metrics->write(spike_step, {{"loss", r.loss}, {"rolled_back_to", static_cast<double>(r.step)}}, "rollback");
    if (!rolled) ++r.step;
    return StepOutcome::kRolledBack;
  }
  r.opt->step();
  r.dp.share_updated_params();
  r.scaler->update(/*overflow=*/false);
  r.step_scalars = task_->after_step(r.step);  // post-step hooks (the MoE bias update)
  ++r.step;
  ++r.window_steps;
  r.loss_sum += r.loss;
  r.aux_sum += r.aux;
  ++r.loss_n;
  r.loss_ema = 0.95 * r.loss_ema + 0.05 * r.loss;
  r.ema_weight = 0.95 * r.ema_weight + 0.05;
  ++r.ema_steps;
  return StepOutcome::kTrained;
}

// The progress line every step; metrics.jsonl, TensorBoard and a log line every train.log_every.
void Trainer::log_interval(Run& r) {
  const auto& tc = cfg_.train;
  const double window_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - r.t_window).count();
  const double tokens = static_cast<double>(r.window_steps * r.global_batch * task_->tokens_per_row());
  const double tps = tokens / std::max(window_s, 1e-9);
  const double mfu = r.peak_gflops > 0 ? tps * task_->flops_per_token() / (r.peak_gflops * 1e9) : 0.0;
  if (r.dp.lead() && r.progress.enabled()) {
    const double done_s = r.train_seconds + window_s;
    const double per_step = done_s / static_cast<double>(std::max<int64_t>(r.step - r.first_step, 1));
    r.progress.update({r.step, tc.max_steps, r.loss, r.lr, r.gnorm, tps, mfu, per_step * static_cast<double>(tc.max_steps - r.step)});
  }
  if (r.step % tc.log_every != 0 && r.step != tc.max_steps) return;
  r.result.last_loss = r.loss_sum / static_cast<double>(r.loss_n);
  r.result.tokens_per_second = tps;
  r.result.mfu = mfu;
  if (r.dp.lead()) {
    Scalars m = {{"loss", r.result.last_loss}, {"lr", r.lr}, {"grad_norm", r.gnorm}, {"tokens_per_sec", tps}, {"mfu", mfu}};
    if (r.has_aux) m["mtp_loss"] = r.aux_sum / static_cast<double>(r.loss_n);
    if (r.scaler->enabled()) m["loss_scale"] = r.scaler->scale();
    for (const auto& [k, v] : r.step_scalars) m[k] = v;
    task_->log_interval(r.step, m, *r.metrics, *r.tb);
    r.metrics->write(r.step, m);
    for (const auto& [k, v] : m) r.tb->add_scalar("train/" + k, v, r.step);
    r.tb->flush();
    r.progress.clear();
    // The status line shows each step's loss; the log line the mean since the previous log line.
    const auto load = m.find("expert_load_max_over_mean");
    log_info(fmt("step ", r.step, "/", tc.max_steps, "  mean loss ", r.result.last_loss, " (", r.loss_n, " steps)  lr ", r.lr,
                 "  gnorm ", r.gnorm, "  ", static_cast<int64_t>(tps), " tok/s  MFU ",
                 static_cast<int64_t>(1000 * mfu) / 10.0, "%"),
             load == m.end() ? "" : fmt("  load max/mean ", load->second));
  }
  r.loss_sum = r.aux_sum = 0;
  r.loss_n = r.window_steps = 0;
  r.train_seconds += window_s;
  r.t_window = std::chrono::steady_clock::now();
}

// Validation every train.eval_every steps (rank 0 runs the evaluator the caller passed in; every rank
// needs the loss for early stopping). True when early stopping ends the run.
bool Trainer::evaluate(Run& r) {
  const auto& tc = cfg_.train;
  if (!callbacks_.evaluate || (r.step % tc.eval_every != 0 && r.step != tc.max_steps)) return false;
  at::Tensor val = at::zeros({1}, at::kDouble);
  if (r.dp.lead()) {
    const Scalars ev = callbacks_.evaluate(r.step);
    const auto it = ev.find("val_loss");
    if (it == ev.end()) throw Error("train: the evaluator returned no \"val_loss\"");
    val[0] = it->second;
    r.metrics->write(r.step, ev, "eval");
    for (const auto& [k, v] : ev) r.tb->add_scalar("val/" + (k.rfind("val_", 0) == 0 ? k.substr(4) : k), v, r.step);
    r.tb->flush();
    r.progress.clear();
    std::string line = fmt("eval step ", r.step, ": val loss ", it->second);
    if (auto p = ev.find("val_perplexity"); p != ev.end()) line += fmt(", perplexity ", p->second);
    log_info(line);
  }
  r.dp.broadcast_scalars(val);
  const double val_loss = val[0].item<double>();
  r.t_window = std::chrono::steady_clock::now();  // keep eval time out of throughput
  if (tc.early_stopping_patience <= 0) return false;
  if (val_loss < r.best_val - tc.early_stopping_min_delta) {
    r.best_val = val_loss;
    r.result.best_step = r.step;
    r.bad_evals = 0;
    r.best_state.clear();
    for (const auto& [k, t] : model::model_state(task_->module())) r.best_state[k] = t.clone();
    if (r.dp.lead()) r.ckpt.save_best(r.step, r.best_state, task_->config_json());
    return false;
  }
  if (++r.bad_evals < tc.early_stopping_patience) return false;
  model::load_model_state(task_->module(), r.best_state, "best weights");
  r.result.early_stopped = true;
  r.result.best_val_loss = r.best_val;
  r.say("train: early stopping at step ", r.step, ": val loss has not improved by ", tc.early_stopping_min_delta, " for ",
        r.bad_evals, " evaluations; restored the best weights (step ", r.result.best_step, ", val loss ", r.best_val, ")");
  return true;
}

// A checkpoint: the collectives first (every rank takes part), then rank 0 writes.
void Trainer::save(Run& r) {
  CheckpointData data;
  data.optimizer = r.dp.gather_optimizer(*r.opt);
  data.rng = r.dp.gather_rng(r.device);
  if (!r.dp.lead()) return;
  data.model = model::model_state(task_->module());
  data.model_config_json = task_->config_json();
  data.trainer_state = task_->data_position();
  data.trainer_state["step"] = r.step;
  data.trainer_state["early_stopped"] = r.result.early_stopped;
  data.trainer_state["loss_scale"] = r.scaler->scale();
  data.trainer_state["loss_scale_clean_steps"] = r.scaler->clean_steps();
  data.trainer_state["seed"] = cfg_.run.seed;
  data.trainer_state["world_size"] = r.dp.world();
  r.result.checkpoint = r.ckpt.save(r.step, std::move(data));
}

TrainResult Trainer::fit() {
  const auto& tc = cfg_.train;
  if (tc.early_stopping_patience > 0 && !callbacks_.evaluate)
    throw ConfigError("key 'train.early_stopping_patience': early stopping needs a validation evaluator, and this "
                      "training has none");
  Run r(comm_, cfg_, task_->identity());
  setup(r);
  start(r);
  if (r.early_stopped_ck) {
    r.say("train: ", r.result.checkpoint, " ended by early stopping at step ", r.step, "; nothing to do");
    r.result.early_stopped = true;
    return r.result;
  }
  if (r.step >= tc.max_steps) {
    r.say("train: already at step ", r.step, " of ", tc.max_steps, "; nothing to do");
    return r.result;
  }
  if (r.dp.lead()) {
    r.metrics = std::make_unique<log::MetricsWriter>(path_join(cfg_.run.out_dir, "metrics.jsonl"));
    r.tb = std::make_unique<log::TensorBoardWriter>(path_join(cfg_.run.out_dir, "tb"));
  }
  // Model FLOPs utilisation against the measured matmul peak of this device and precision.
  const double flops = task_->flops_per_token();
  if (flops > 0)
    r.peak_gflops = (tc.peak_gflops > 0 ? tc.peak_gflops : measure_matmul_gflops(r.device, r.amp_dtype)) * r.dp.world();
  if (r.dp.lead())
    r.metrics->write(r.step, {{"peak_gflops", r.peak_gflops}, {"flops_per_token", flops},
                              {"micro_batch", static_cast<double>(r.micro)}, {"accum_steps", static_cast<double>(r.accum)},
                              {"world_size", static_cast<double>(r.dp.world())},
                              {"optimizer_bytes", static_cast<double>(r.opt->state_bytes())}},
                     "setup");

  StopSignals signals;
  struct ClearStop {
    ~ClearStop() { clear_stop(); }
  } clear_at_return;
  task_->module().train();
  const int64_t kill_at = kill_step_for_rank(r.dp.rank());
  r.t_window = r.t_start = std::chrono::steady_clock::now();
  while (r.step < tc.max_steps) {
    if (r.step == kill_at) std::raise(SIGKILL);
    if (step(r) != StepOutcome::kTrained) continue;
    log_interval(r);
    if (evaluate(r)) {
      save(r);
      r.result.final_step = r.step;
      return r.result;
    }
    const bool stop = (r.dp.active() ? r.stop_requested : stop_signal() != 0) ||
                      (callbacks_.stop_after && callbacks_.stop_after(r.step));
    if (stop) {
      save(r);
      r.result.interrupted = true;
      r.result.final_step = r.step;
      r.progress.clear();
      const int sig = stop_signal();
      r.say("train: ", sig == SIGINT ? "SIGINT received" : sig == SIGTERM ? "SIGTERM received" : "stop requested",
            "; checkpoint saved at step ", r.step, " in ", r.result.checkpoint, ". Run the same command again to resume.");
      return r.result;
    }
    if (r.step % tc.checkpoint_every == 0 || r.step == tc.max_steps) save(r);
  }
  r.result.final_step = r.step;
  r.progress.clear();
  const double total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - r.t_start).count();
  r.say("train: done at step ", r.step, " in ", format_duration(total_s));
  return r.result;
}

}  // namespace dsforge::train
