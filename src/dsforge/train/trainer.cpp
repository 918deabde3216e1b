#include "dsforge/train/trainer.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>

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
#include "dsforge/core/safetensors.h"
#include "dsforge/data/shards.h"
#include "dsforge/dist/comm.h"
#include "dsforge/dist/reducer.h"
#include "dsforge/dist/zero.h"
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
    if (name.rfind("cpu.rank", 0) == 0) continue;  // another rank's stream (data parallelism)
    if (name != "cpu" && c10::Device(name) != device) continue;
    at::Generator gen = name == "cpu" ? at::detail::getDefaultCPUGenerator()
                                      : at::globalContext().defaultGenerator(c10::Device(name));
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(state);
  }
}

std::string fixed_mb(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MB", static_cast<double>(bytes) / (1 << 20));
  return buf;
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

// Fault injection for tests: DSFORGE_KILL_RANK_AT=<rank>:<step> SIGKILLs that rank as it starts that step.
int64_t kill_step_for_rank(int rank) {
  const char* v = std::getenv("DSFORGE_KILL_RANK_AT");
  if (!v) return -1;
  int r = -1;
  long long s = -1;
  if (std::sscanf(v, "%d:%lld", &r, &s) != 2) return -1;
  return r == rank ? static_cast<int64_t>(s) : -1;
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
  // Data parallelism: rank 0 leads (reads and writes files, logs); every rank computes.
  dist::Comm* comm = comm_;
  const int world = comm ? comm->world_size() : 1, rank = comm ? comm->rank() : 0;
  const bool lead = rank == 0;
  auto say = [&](const auto&... parts) {
    if (lead) log_info(parts...);
  };
  if (comm) comm->agree("run config", to_toml(cfg_) + model::model_config_to_json(mcfg_));

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

  // Micro-batch and accumulation from the memory budget; the global batch is batch_size x grad_accum_steps,
  // and each rank takes an equal share of every micro-batch.
  if (tc.batch_size % world != 0)
    throw ConfigError(fmt("key 'train.batch_size': ", tc.batch_size, " is not a multiple of the ", world,
                          " ranks (each rank takes batch_size / ranks rows of every micro-batch)"));
  const int64_t D = model_->extra_target_tokens();
  const int64_t row_len = tc.seq_len + 1 + D, global_batch = tc.batch_size * tc.grad_accum_steps;
  int64_t micro = tc.batch_size, accum = tc.grad_accum_steps;
  if (tc.fit_micro_batch) {
    const int local_ranks = comm ? comm->env().local_world_size : 1;
    const auto budget = static_cast<int64_t>(tc.memory_gb > 0 ? tc.memory_gb * (1LL << 30)
                                                               : 0.6 * static_cast<double>(available_memory_bytes()) / local_ranks);
    if (budget > 0) {
      const MemoryProbe probe = probe_training_memory(mcfg_, row_len, amp_dtype == at::kBFloat16, dropout);
      const BatchPlan plan = plan_batch(probe, global_batch / world, budget);
      micro = plan.micro_batch * world;
      accum = plan.accum_steps;
      say("train: ", world > 1 ? "per rank: " : "", plan.reason);
    }
  }
  const int64_t local_micro = micro / world;

  data::TokenLoader loader(train_shard, row_len, tc.seq_len, static_cast<uint64_t>(cfg_.run.seed));
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (auto& p : model_->named_parameters())
    if (p.value().requires_grad()) named.emplace_back(p.key(), p.value());
  std::vector<at::Tensor> params;
  std::vector<std::vector<int64_t>> shapes;
  for (auto& [n, p] : named) {
    params.push_back(p);
    shapes.push_back(p.sizes().vec());
  }
  // ZeRO-1: this rank keeps the moments of its share of the parameters only.
  const bool zero1 = comm && cfg_.dist.zero1;
  std::vector<int> owner;
  std::vector<bool> owned;
  if (zero1) {
    std::vector<int64_t> numels;
    for (const auto& p : params) numels.push_back(p.numel());
    owner = dist::partition_params(numels, world);
    for (int o : owner) owned.push_back(o == rank);
  }
  AdamW opt(named, {tc.lr, tc.beta1, tc.beta2, tc.eps, tc.weight_decay}, owned);
  std::unique_ptr<dist::GradReducer> reducer;
  if (comm) {
    reducer = std::make_unique<dist::GradReducer>(*comm, params, cfg_.dist.bucket_mb);
    int64_t full = 0;
    for (const auto& p : params) full += 2 * p.numel() * static_cast<int64_t>(p.element_size());
    say("dist: ", world, " ranks, ", local_micro, " rows per rank per micro-batch, ", reducer->bucket_count(),
        reducer->bucket_count() == 1 ? " gradient bucket" : " gradient buckets", " of <= ", cfg_.dist.bucket_mb,
        " MB; optimizer state ", fixed_mb(opt.state_bytes()),
        " on this rank", zero1 ? fmt(" (ZeRO-1; plain DDP would hold ", fixed_mb(full), ")") : std::string());
  }

  // What a checkpoint restores, sent from rank 0 to the others after it read the files.
  const std::string cfg_hash = checkpoint_hash(cfg_);
  TrainResult result;
  result.micro_batch = micro;
  result.accum_steps = accum;
  int64_t step = 0;
  auto broadcast_model = [&] {
    for (auto& [name, t] : model::model_state(*model_)) comm->broadcast(t, 0);
  };
  // Every rank's CPU random stream (dropout): "cpu" is rank 0's, "cpu.rank<r>" the others'.
  auto gather_rng = [&] {
    TensorMap states = rng_states(device);
    if (!comm) return states;
    at::Tensor mine = states.at("cpu");
    for (int r = 1; r < world; ++r) {
      at::Tensor t = rank == r ? mine.clone() : at::empty_like(mine);
      comm->broadcast(t, r);
      if (lead) states["cpu.rank" + std::to_string(r)] = t;
    }
    return states;
  };
  auto scatter_rng = [&](const TensorMap* states, int64_t at_step) {
    if (lead && states) restore_rng_states(*states, device);
    if (!comm) return;
    at::Tensor mine = rng_states(c10::Device(c10::kCPU)).at("cpu");
    for (int r = 1; r < world; ++r) {
      at::Tensor t = at::empty_like(mine);
      at::Tensor have = at::zeros({1}, at::kLong);
      if (lead && states) {
        auto it = states->find("cpu.rank" + std::to_string(r));
        if (it != states->end() && it->second.sizes().equals(mine.sizes())) {
          t.copy_(it->second);
          have.fill_(1);
        }
      }
      comm->broadcast(have, 0);
      comm->broadcast(t, 0);
      if (rank != r) continue;
      if (have.item<int64_t>() == 1) {
        at::Generator gen = at::detail::getDefaultCPUGenerator();
        std::lock_guard<std::mutex> lock(gen.mutex());
        gen.set_state(t);
      } else {  // a checkpoint of fewer ranks: a fresh stream of its own
        at::manual_seed(static_cast<uint64_t>(cfg_.run.seed) + 1000003ULL * static_cast<uint64_t>(r) +
                        static_cast<uint64_t>(at_step));
      }
    }
  };
  // The full optimizer state on rank 0 (ZeRO-1 gathers the shards).
  auto gather_optimizer = [&] {
    if (!zero1) return opt.state_dict();
    std::vector<at::Tensor> m(params.size()), v(params.size());
    for (size_t i = 0; i < params.size(); ++i)
      if (opt.owns(i)) {
        m[i] = opt.params()[i].exp_avg;
        v[i] = opt.params()[i].exp_avg_sq;
      }
    const auto options = params.front().options();
    dist::broadcast_from_owners(*comm, m, owner, shapes, options);
    dist::broadcast_from_owners(*comm, v, owner, shapes, options);
    TensorMap out;
    for (size_t i = 0; i < params.size(); ++i) {
      out["exp_avg." + named[i].first] = m[i];
      out["exp_avg_sq." + named[i].first] = v[i];
    }
    out["step"] = at::tensor(std::vector<int64_t>{opt.steps()}, at::kLong);
    return out;
  };
  // Restores the newest checkpoint (rank 0 reads it; the others receive). Returns false when there is none.
  bool early_stopped_ck = false;
  auto restore_latest = [&](bool with_cursor) {
    std::optional<LoadedCheckpoint> ck;
    std::string error;
    try {
      if (lead) ck = load_latest_checkpoint(run_dir);
      if (ck) {
        const nlohmann::json& st = ck->data.trainer_state;
        const std::string saved_hash = st.value("config_hash", "");
        if (saved_hash != cfg_hash)
          throw CheckpointError(fmt(ck->dir, ": written by a run with another data/tokenizer/model/seq_len/seed config (hash ",
                                    saved_hash, ", this run ", cfg_hash, "); use another run.out_dir or delete the checkpoints"));
        model::load_model_state(*model_, ck->data.model, ck->dir + "/model.safetensors");
        opt.load_state_dict(ck->data.optimizer, ck->dir + "/optimizer.safetensors");
      }
    } catch (const std::exception& e) {
      if (!comm) throw;
      error = e.what();
    }
    if (comm) {
      error = comm->share(error, 0);  // a refused checkpoint is refused on every rank
      if (!error.empty()) throw CheckpointError(error);
    }
    // Scalars: found, step, loader epoch and position, loss scale and its clean steps, optimizer step, early stop.
    at::Tensor sc = at::zeros({8}, at::kDouble);
    if (ck) {
      const nlohmann::json& st = ck->data.trainer_state;
      double* d = sc.data_ptr<double>();
      d[0] = 1;
      d[1] = static_cast<double>(st.at("step").get<int64_t>());
      d[2] = static_cast<double>(st.at("loader_epoch").get<int64_t>());
      d[3] = static_cast<double>(st.at("loader_position").get<int64_t>());
      d[4] = st.value("loss_scale", scaler.scale());
      d[5] = static_cast<double>(st.value("loss_scale_clean_steps", int64_t{0}));
      d[6] = static_cast<double>(opt.steps());
      d[7] = st.value("early_stopped", false) ? 1 : 0;
    }
    if (comm) comm->broadcast(sc, 0);
    const double* d = sc.data_ptr<double>();
    if (d[0] == 0) return false;
    if (comm) {
      broadcast_model();
      // Moments from rank 0's (full) file to their owners: all ranks in DDP, one rank under ZeRO-1.
      for (size_t i = 0; i < params.size(); ++i)
        for (const char* kind : {"exp_avg.", "exp_avg_sq."}) {
          at::Tensor t = lead ? ck->data.optimizer.at(kind + named[i].first).to(params[i].options()) : at::empty_like(params[i]);
          comm->broadcast(t, 0);
          if (!lead && opt.owns(i))
            (std::string(kind) == "exp_avg." ? opt.params()[i].exp_avg : opt.params()[i].exp_avg_sq).copy_(t);
        }
      opt.set_steps(static_cast<int64_t>(d[6]));
    }
    step = static_cast<int64_t>(d[1]);
    scaler.restore(d[4], static_cast<int64_t>(d[5]));
    if (with_cursor) loader.set_cursor({static_cast<int64_t>(d[2]), static_cast<int64_t>(d[3])});
    scatter_rng(ck ? &ck->data.rng : nullptr, step);
    early_stopped_ck = d[7] != 0;
    if (ck) result.checkpoint = ck->dir;
    return true;
  };

  // Fresh start or resume; the same restore serves loss-spike rollbacks.
  if (restore_latest(/*with_cursor=*/true)) {
    if (early_stopped_ck) {
      say("train: ", result.checkpoint, " ended by early stopping at step ", step, "; nothing to do");
      result.start_step = result.final_step = step;
      result.early_stopped = true;
      return result;
    }
    say("train: resuming from ", result.checkpoint, " at step ", step, world > 1 ? fmt(" on ", world, " ranks") : std::string());
  } else {
    model_->init_weights(tc.init_std, static_cast<uint64_t>(cfg_.run.seed));
    if (comm) broadcast_model();
    // The dropout stream, saved in every checkpoint; each rank draws its own.
    at::manual_seed(static_cast<uint64_t>(cfg_.run.seed) + 1000003ULL * static_cast<uint64_t>(rank));
    say("train: fresh start, ", model::count_parameters(*model_), " parameters on ", device.str(), ", ", tc.precision);
  }
  result.start_step = step;
  result.final_step = step;
  if (step >= tc.max_steps) {
    say("train: already at step ", step, " of ", tc.max_steps, "; nothing to do");
    return result;
  }

  std::unique_ptr<log::MetricsWriter> metrics;
  std::unique_ptr<log::TensorBoardWriter> tb;
  if (lead) {
    metrics = std::make_unique<log::MetricsWriter>(path_join(run_dir, "metrics.jsonl"));
    tb = std::make_unique<log::TensorBoardWriter>(path_join(run_dir, "tb"));
  }
  auto save = [&](int64_t at_step) {
    CheckpointData data;
    data.optimizer = gather_optimizer();  // collectives first: every rank takes part
    data.rng = gather_rng();
    if (!lead) return;
    data.model = model::model_state(*model_);
    data.model_config_json = model::model_config_to_json(mcfg_);
    data.trainer_state = {{"step", at_step},
                          {"loader_epoch", loader.cursor().epoch},
                          {"loader_position", loader.cursor().position},
                          {"config_hash", cfg_hash},
                          {"early_stopped", result.early_stopped},
                          {"loss_scale", scaler.scale()},
                          {"loss_scale_clean_steps", scaler.clean_steps()},
                          {"seed", cfg_.run.seed},
                          {"world_size", world}};
    result.checkpoint = save_checkpoint(run_dir, at_step, data, tc.keep_checkpoints);
  };

  // Model FLOPs utilisation against the measured matmul peak of this device and precision.
  const double flops_per_token = model::train_flops_per_token(mcfg_, tc.seq_len);
  const double peak_gflops = (tc.peak_gflops > 0 ? tc.peak_gflops : measure_matmul_gflops(device, amp_dtype)) * world;
  if (lead)
    metrics->write(step, {{"peak_gflops", peak_gflops}, {"flops_per_token", flops_per_token},
                          {"micro_batch", static_cast<double>(micro)}, {"accum_steps", static_cast<double>(accum)},
                          {"world_size", static_cast<double>(world)}, {"optimizer_bytes", static_cast<double>(opt.state_bytes())}},
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
  const bool show_progress = lead && progress.enabled();
  model_->train();
  const int64_t tokens_per_step = global_batch * tc.seq_len;
  const Schedule schedule{tc.schedule, tc.warmup_steps, tc.max_steps, tc.lr, tc.min_lr_ratio, tc.decay_fraction};
  const int64_t kill_at = kill_step_for_rank(rank);
  auto t_window = std::chrono::steady_clock::now();
  const auto t_start = t_window;
  const int64_t first_step = step;
  double loss_sum = 0, mtp_sum = 0, train_seconds = 0;
  int64_t loss_n = 0, consecutive_skips = 0, window_steps = 0;
  while (step < tc.max_steps) {
    if (step == kill_at) std::raise(SIGKILL);
    const double lr = schedule_lr(schedule, step);
    opt.set_lr(lr);
    // Gradient accumulation: N micro-batches, each loss scaled by 1/N, give the gradient of one batch N
    // times larger (the windows are the same ones, in the same order). MoE loads accumulate over all.
    // Across ranks, the reducer averages the gradients once, during the last micro-batch's backward.
    opt.zero_grad();
    double loss = 0, mtp = 0;
    for (int64_t m = 0; m < accum; ++m) {
      at::Tensor batch = loader.next_batch(micro, rank * local_micro, local_micro).to(device);  // (B/W, S + 1 + D)
      model::LossOutput out;
      {
        AutocastScope autocast(device, amp_dtype);
        out = model_->loss(batch, tc.mtp_loss_weight * mtp_weight_factor(schedule, step));
      }
      if (reducer) reducer->begin_backward(/*sync=*/m == accum - 1);
      scaler.scale_loss(accum > 1 ? out.total / static_cast<double>(accum) : out.total).backward();
      loss += out.main.item<double>() / static_cast<double>(accum);
      if (out.mtp.defined()) mtp += out.mtp.item<double>() / static_cast<double>(accum);
    }
    bool stop_requested = g_stop != 0;
    if (comm) {
      reducer->finish();
      if (step == first_step)
        say("dist: ", reducer->launched_in_backward(), " of ", reducer->bucket_count(),
            " gradient buckets started their all-reduce during the backward pass");
      // One all-reduce per step: the losses (means over ranks), a stop signal any rank saw (all stop at this
      // step), and the MoE expert-load counts (the bias update sees the whole global batch).
      std::vector<at::Tensor> counts = model_->pending_expert_counts();
      std::vector<at::Tensor> parts{at::tensor(std::vector<double>{loss, mtp, stop_requested ? 1.0 : 0.0}, at::kDouble)};
      for (const auto& c : counts) parts.push_back(c.to(at::kCPU, at::kDouble).reshape(-1));
      at::Tensor s = at::cat(parts);
      comm->allreduce_sum(s);
      const double* sp = s.data_ptr<double>();
      loss = sp[0] / world;
      mtp = sp[1] / world;
      stop_requested = sp[2] > 0;
      int64_t off = 3;
      for (auto& c : counts) {
        c.copy_(s.narrow(0, off, c.numel()).view(c.sizes()));
        off += c.numel();
      }
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
        say("train: step ", step, " skipped: fp16 gradient overflow, loss scale now ", scaler.scale());
        ++step;
        continue;
      }
      if (++consecutive_skips >= kMaxConsecutiveSkips)
        throw Error(fmt("train: ", consecutive_skips, " non-finite steps in a row ending at step ", step,
                        " (loss ", loss, ", grad norm ", gnorm, "); lower train.lr or check the data"));
      say("train: step ", step, " skipped: non-finite loss or gradient");
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
      const int64_t spike_step = step;
      const bool rolled = restore_latest(/*with_cursor=*/false);
      say("train: loss spike at step ", spike_step, " (", loss, " > ", tc.spike_factor, " x running mean ",
          loss_ema / ema_weight, "); ", rolled ? "rolled back to " + result.checkpoint : std::string("no checkpoint yet, batch skipped"),
          ", data up to here skipped");
      if (lead) metrics->write(spike_step, {{"loss", loss}, {"rolled_back_to", static_cast<double>(step)}}, "rollback");
      if (!rolled) ++step;
      continue;
    }
    opt.step();
    if (zero1) dist::broadcast_from_owners(*comm, params, owner, shapes, params.front().options());
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
    if (show_progress) {
      const double done_s = train_seconds + window_s;
      const double per_step = done_s / static_cast<double>(std::max<int64_t>(step - first_step, 1));
      progress.update({step, tc.max_steps, loss, lr, gnorm, tps, mfu, per_step * static_cast<double>(tc.max_steps - step)});
    }
    if (step % tc.log_every == 0 || step == tc.max_steps) {
      result.last_loss = loss_sum / static_cast<double>(loss_n);
      result.tokens_per_second = tps;
      result.mfu = mfu;
      if (lead) {
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
          tb->add_histogram("train/expert_load", all, step);
          metrics->write_raw(nlohmann::json{{"kind", "expert_load"}, {"step", step}, {"layers", loads}}.dump());
        }
        metrics->write(step, m);
        for (const auto& [k, v] : m) tb->add_scalar("train/" + k, v, step);
        tb->flush();
        progress.clear();
        log_info(fmt("step ", step, "/", tc.max_steps, "  loss ", result.last_loss, "  lr ", lr, "  gnorm ", gnorm, "  ",
                     static_cast<int64_t>(tps), " tok/s  MFU ", static_cast<int64_t>(1000 * mfu) / 10.0, "%"),
                 loads.empty() ? "" : fmt("  load max/mean ", load_ratio));
      }
      loss_sum = mtp_sum = 0;
      loss_n = window_steps = 0;
      train_seconds += window_s;
      t_window = std::chrono::steady_clock::now();
    }
    if (step % tc.eval_every == 0 || step == tc.max_steps) {
      // Rank 0 evaluates; every rank needs the loss for early stopping.
      at::Tensor val = at::zeros({2}, at::kDouble);
      if (lead) {
        eval::LmEval ev = eval::evaluate_lm(model_, val_shard, tc.seq_len, tc.batch_size, cfg_.eval.batches);
        val[0] = ev.loss;
        val[1] = ev.perplexity;
        metrics->write(step, {{"val_loss", ev.loss}, {"val_perplexity", ev.perplexity}}, "eval");
        tb->add_scalar("val/loss", ev.loss, step);
        tb->add_scalar("val/perplexity", ev.perplexity, step);
        tb->flush();
        progress.clear();
        log_info("eval step ", step, ": val loss ", ev.loss, ", perplexity ", ev.perplexity);
      }
      if (comm) comm->broadcast(val, 0);
      const double val_loss = val[0].item<double>();
      t_window = std::chrono::steady_clock::now();  // keep eval time out of throughput
      if (tc.early_stopping_patience > 0) {
        if (val_loss < best_val - tc.early_stopping_min_delta) {
          best_val = val_loss;
          best_step = step;
          bad_evals = 0;
          best_state.clear();
          for (const auto& [k, t] : model::model_state(*model_)) best_state[k] = t.clone();
          if (lead) {
            const std::string best_dir = path_join(run_dir, "checkpoints/best");
            make_dirs(best_dir);
            write_file_atomic(path_join(best_dir, "config.json"), model::model_config_to_json(mcfg_));
            save_safetensors(path_join(best_dir, "model.safetensors"), best_state, {{"format", "pt"}, {"step", std::to_string(step)}});
          }
        } else if (++bad_evals >= tc.early_stopping_patience) {
          model::load_model_state(*model_, best_state, "best weights");
          result.early_stopped = true;
          result.best_step = best_step;
          say("train: early stopping at step ", step, ": val loss has not improved by ", tc.early_stopping_min_delta,
              " for ", bad_evals, " evaluations; restored the best weights (step ", best_step, ", val loss ", best_val, ")");
          save(step);
          result.final_step = step;
          return result;
        }
      }
    }
    if ((comm ? stop_requested : g_stop != 0) || step == stop_at_) {
      save(step);
      result.interrupted = true;
      result.final_step = step;
      progress.clear();
      say("train: ", g_stop == SIGINT ? "SIGINT received" : g_stop == SIGTERM ? "SIGTERM received" : "stop requested",
          "; checkpoint saved at step ", step, " in ", result.checkpoint, ". Run the same command again to resume.");
      return result;
    }
    if (step % tc.checkpoint_every == 0 || step == tc.max_steps) save(step);
  }
  result.final_step = step;
  progress.clear();
  const double total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  say("train: done at step ", step, " in ", format_duration(total_s));
  return result;
}

}  // namespace dsforge::train
