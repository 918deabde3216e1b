#include "dsforge/continual/continue.h"

#include <ATen/ATen.h>

#include <chrono>

#include "dsforge/continual/continual_task.h"
#include "dsforge/continual/state.h"
#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/log.h"
#include "dsforge/data/shards.h"
#include "dsforge/eval/lm_eval.h"
#include "dsforge/model/io.h"
#include "dsforge/train/trainer.h"

namespace dsforge::continual {
namespace {

// The diagonal Fisher of `m` on fisher_samples windows of `shard` (a seeded shuffle of its windows).
TensorMap shard_fisher(model::CausalLm& m, const RunConfig& cfg, const std::string& shard, uint64_t seed, double& seconds) {
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t seq_len = cfg.train.seq_len;
  data::TokenLoader loader(shard, seq_len + 1, seq_len, seed);
  const bool was_training = m->is_training();
  m->eval();  // no dropout: the Fisher of the model as it predicts
  const c10::Device device = m->parameters().front().device();
  TensorMap f = estimate_fisher(
      *m, cfg.continual.fisher_samples,
      [&](int64_t) {
        at::Tensor w = loader.next_batch(1).to(device);  // (1, S + 1)
        at::Tensor logits = m->forward(w.narrow(1, 0, seq_len))[0];
        return FisherSample{logits, w[0].narrow(0, 1, seq_len)};
      },
      parse_fisher_kind(cfg.continual.fisher), seed);
  m->update_expert_bias(0.0);  // drop the routing counts these forwards accumulated
  if (was_training) m->train();
  seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return f;
}

// F <- gamma * F + F_new, anchored at `anchor`.
FisherAnchor fold_online(const std::optional<FisherAnchor>& old, const TensorMap& f_new, const TensorMap& anchor, double gamma) {
  FisherAnchor out{f_new, anchor};
  if (!old) return out;
  for (auto& [name, f] : out.fisher) {
    auto it = old->fisher.find(name);
    if (it != old->fisher.end() && it->second.sizes() == f.sizes()) f = gamma * it->second + f;
  }
  return out;
}

void check_shard_vocab(const std::string& shard, int64_t vocab, const std::string& what) {
  data::TokenShard s(shard);
  if (s.size() == 0) throw DataError(fmt(shard, ": ", what, " has no tokens"));
  int64_t max_id = 0;
  const uint64_t n = std::min<uint64_t>(s.size(), 1 << 20);
  for (uint64_t i = 0; i < n; ++i) max_id = std::max(max_id, s.at(i));
  if (max_id >= vocab)
    throw DataError(fmt(shard, ": ", what, " holds token id ", max_id, " but the model's vocabulary has ", vocab,
                        " tokens (encoded with another tokenizer?)"));
}

}  // namespace

void check_earlier_domain(const std::string& strategy_name, const std::string& from, bool old_data) {
  const Strategy strategy = parse_strategy(strategy_name);
  if ((strategy.needs_fisher() || strategy.replay) && !old_data && !has_state(from))
    throw ConfigError(fmt("continue: strategy '", strategy.name, "' needs the earlier domain's ",
                          strategy.replay ? "token windows" : "Fisher", ", but ", from,
                          " has no continual/ state (it was not written by `dsforge continue`): pass --old-data with "
                          "the text (or run folder) the model was trained on"));
}

ContinueOutcome continue_training(const ContinueSpec& spec) {
  const RunConfig& cfg = spec.cfg;
  const Strategy strategy = parse_strategy(cfg.continual.strategy);
  ContinueOutcome result;
  result.strategy = strategy.name;
  model::CausalLm m = model::load_pretrained(spec.from);
  const model::ModelConfig& mcfg = m->config();
  const int64_t window = model::training_row_length(mcfg, cfg.train.seq_len);
  const auto seed = static_cast<uint64_t>(cfg.run.seed);
  check_shard_vocab(spec.train_shard, mcfg.vocab_size, "the new domain's shard");

  // The state this stage starts from: the folder's own, or bootstrapped from the earlier domain's data.
  ContinualState state = load_state(spec.from, {cfg.continual.replay_capacity, window, seed ^ 0x5EEDull});
  if (!has_state(spec.from)) {
    if (!spec.old_shard.empty()) {
      check_shard_vocab(spec.old_shard, mcfg.vocab_size, "the old domain's shard");
      log_info("continue: ", spec.from, " has no continual state; estimating the ", cfg.continual.fisher, " Fisher on ",
               cfg.continual.fisher_samples, " windows of ", spec.old_shard, " and filling the replay reservoir from it");
      const TensorMap f = shard_fisher(m, cfg, spec.old_shard, seed ^ 0xF15E1ull, result.fisher_seconds);
      const TensorMap anchor = parameter_snapshot(*m);
      state.ewc.push_back({f, anchor});
      state.online = FisherAnchor{f, anchor};
      state.replay.emplace(cfg.continual.replay_capacity, window, seed ^ 0x5EEDull);
      state.replay->offer_shard(spec.old_shard, cfg.train.seq_len);
      state.domains.push_back({{"data", spec.old_shard}, {"strategy", "pretrained"}, {"model", spec.from}});
    } else {
      check_earlier_domain(cfg.continual.strategy, spec.from, false);
    }
  }
  if (strategy.needs_fisher() && (state.ewc.empty() || !state.online))
    throw CheckpointError(fmt(spec.from, "/continual: no Fisher (ewc.safetensors / online_ewc.safetensors) for strategy '",
                              strategy.name, "'"));
  if (strategy.replay && (!state.replay || state.replay->size() == 0))
    throw CheckpointError(fmt(spec.from, "/continual: no replay reservoir (replay.safetensors) for strategy 'replay'"));

  ContinualParts parts;
  parts.identity = fmt("continue|", strategy.name, "|", hex64(fnv1a64(read_file(path_join(spec.from, "model.safetensors")))));
  if (strategy.ewc)
    for (const auto& fa : state.ewc) parts.penalty.add({"ewc", fa.fisher, fa.anchor, cfg.continual.ewc_lambda});
  if (strategy.online_ewc) parts.penalty.add({"online-ewc", state.online->fisher, state.online->anchor, cfg.continual.ewc_lambda});
  if (strategy.l2sp) parts.penalty.add({"l2sp", {}, parameter_snapshot(*m), cfg.continual.l2sp_alpha});
  if (strategy.replay) {
    parts.replay = std::make_shared<const Reservoir>(*state.replay);
    parts.replay_ratio = cfg.continual.replay_ratio;
  }
  if (strategy.lwf) {
    parts.teacher = model::load_pretrained(spec.from);
    parts.lwf_alpha = cfg.continual.lwf_alpha;
    parts.lwf_temperature = cfg.continual.lwf_temperature;
  }
  result.ewc_terms = strategy.ewc ? static_cast<int64_t>(state.ewc.size()) : 0;
  result.replay_windows = parts.replay ? parts.replay->size() : 0;

  make_dirs(cfg.run.out_dir);
  ContinualTask task(cfg, m, spec.train_shard, std::move(parts));
  train::Trainer trainer(cfg, task);
  train::TrainCallbacks callbacks;
  if (!spec.val_manifest.empty())
    callbacks.evaluate = eval::lm_validator(m, spec.val_manifest, cfg.train.seq_len, cfg.train.batch_size, cfg.eval.batches);
  trainer.set_callbacks(callbacks);
  log_info("continue: ", spec.from, " -> ", spec.out_model, ", strategy ", strategy.name);
  const train::TrainResult r = trainer.fit();
  result.start_step = r.start_step;
  result.final_step = r.final_step;
  result.last_loss = r.last_loss;
  if (r.interrupted) {
    result.interrupted = true;
    return result;
  }

  // The state the next stage needs, at the final weights.
  const TensorMap f_new = shard_fisher(m, cfg, spec.train_shard, seed ^ 0xF15E2ull, result.fisher_seconds);
  const TensorMap anchor = parameter_snapshot(*m);
  state.ewc.push_back({f_new, anchor});
  if (cfg.continual.ewc_max_terms > 0 && static_cast<int64_t>(state.ewc.size()) > cfg.continual.ewc_max_terms)
    state.ewc.erase(state.ewc.begin(), state.ewc.end() - cfg.continual.ewc_max_terms);
  state.online = fold_online(state.online, f_new, anchor, cfg.continual.online_gamma);
  if (!state.replay) state.replay.emplace(cfg.continual.replay_capacity, window, seed ^ 0x5EEDull);
  {
    // A fresh stream for this stage's offers (Algorithm R needs independent draws, not the same ones).
    Reservoir next = Reservoir::from_tensors(state.replay->to_tensors(), cfg.continual.replay_capacity, window,
                                             seed ^ (0xA5A5ull + static_cast<uint64_t>(state.domains.size())), "replay");
    next.offer_shard(spec.train_shard, cfg.train.seq_len);
    state.replay = std::move(next);
  }
  nlohmann::json record = spec.domain.is_object() ? spec.domain : nlohmann::json::object();
  record["strategy"] = strategy.name;
  record["steps"] = r.final_step;
  record["fisher"] = cfg.continual.fisher;
  record["fisher_samples"] = cfg.continual.fisher_samples;
  record["train_shard"] = spec.train_shard;
  state.domains.push_back(record);

  // The folder is written beside its final place and renamed: never half written.
  const std::string tmp = spec.out_model + ".tmp";
  remove_all(tmp);
  model::save_pretrained(tmp, *m);
  const std::string tok = spec.tokenizer_json.empty() ? path_join(spec.from, "tokenizer.json") : spec.tokenizer_json;
  write_file_atomic(path_join(tmp, "tokenizer.json"), read_file(tok));
  model::save_training_info(tmp, {cfg.train.seq_len, r.final_step});
  save_state(tmp, state);
  remove_all(spec.out_model);  // this run's own output: a finished stage replaces it
  publish_dir(tmp, spec.out_model, "continued model");
  log_info("continue: wrote ", spec.out_model, " (", state.domains.size(), " domains in continual/state.json, replay ",
           state.replay->size(), " of ", state.replay->seen(), " windows)");
  return result;
}

}  // namespace dsforge::continual
