#include "dsforge/compress/recovery.h"

#include <ATen/ATen.h>

#include <map>

#include "dsforge/compress/prune.h"
#include "dsforge/compress/prune_units.h"
#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/log.h"
#include "dsforge/data/shards.h"
#include "dsforge/eval/lm_eval.h"
#include "dsforge/model/io.h"
#include "dsforge/train/lm_task.h"
#include "dsforge/train/trainer.h"

namespace dsforge::compress {
namespace {

// Language-model training of an already trained (pruned) model: LmTask over the given weights (no
// fresh initialisation), with magnitude masks kept after every optimizer step (or grown on the cubic
// schedule).
class RecoveryTask : public train::LmTask {
 public:
  RecoveryTask(const RunConfig& cfg, model::CausalLm pruned, const std::string& shard, RecoveryOptions o)
      : LmTask(cfg, std::move(pruned), shard), o_(std::move(o)) {
    if (o_.keep_zeros && o_.cubic_final <= 0)
      for (const auto& [name, t] : model::model_state(*model()))
        if (magnitude_prunable(name, t)) masks_[name] = (t != 0).to(t.scalar_type());
  }

  std::string describe() const override { return "recovery fine-tuning: " + LmTask::describe(); }
  std::string identity() const override { return o_.identity; }

  train::Scalars after_step(int64_t step) override {
    train::Scalars s = LmTask::after_step(step);
    if (!o_.keep_zeros) return s;
    at::NoGradGuard no_grad;
    TensorMap state = model::model_state(*model());  // views of the parameters
    if (o_.cubic_final > 0) {
      const int64_t t = step + 1, every = o_.prune_every;
      const int64_t t_update = std::min(t - t % every, o_.prune_end);  // the last schedule point reached
      const bool update_point = (t % every == 0 && t <= o_.prune_end) || t == o_.prune_end;
      if (masks_.empty() || update_point) {
        sparsity_ = cubic_sparsity(t == o_.prune_end ? t : t_update, o_.prune_end, o_.cubic_final);
        masks_ = magnitude_masks(state, sparsity_, o_.scope);
      }
      s["sparsity"] = sparsity_;
    }
    for (const auto& [name, mask] : masks_) state.at(name).mul_(mask);
    return s;
  }

 private:
  RecoveryOptions o_;
  std::map<std::string, at::Tensor> masks_;
  double sparsity_ = 0;
};

}  // namespace

FinetuneData finetune_data(const std::string& run_config, const std::vector<std::string>& overrides, int64_t steps,
                           const std::string& work_dir, const std::string& model_dir, int64_t vocab_size,
                           const std::string& what) {
  FinetuneData d;
  d.cfg = load_run_config(run_config, overrides);
  const std::string run_dir = d.cfg.run.out_dir;
  d.manifest_path = path_join(run_dir, "shards/manifest.json");
  if (!file_exists(d.manifest_path))
    throw ConfigError(fmt(what, ": ", d.manifest_path, ": not found (made by `dsforge tokenize --config ", run_config, "`)"));
  check_same_tokenizer(model_dir, path_join(run_dir, "tokenizer.json"), what);
  const data::Manifest manifest = data::read_manifest(d.manifest_path);
  if (manifest.vocab_size != vocab_size)
    throw ConfigError(fmt(what, ": ", d.manifest_path, ": shards use a vocabulary of ", manifest.vocab_size, " tokens, the model has ",
                          vocab_size));
  d.train_shard = path_join(run_dir, fmt("shards/", manifest.train.files.at(0)));
  d.cfg.run.out_dir = work_dir;
  if (steps > 0) {
    d.cfg.train.max_steps = steps;
    d.cfg.train.warmup_steps = std::min(d.cfg.train.warmup_steps, steps);
  }
  validate(d.cfg);
  return d;
}

RecoveryResult recover(model::CausalLm& m, const std::string& model_dir, const RecoveryOptions& o) {
  FinetuneData d = finetune_data(o.run_config, o.overrides, o.steps, o.work_dir, model_dir, m->config().vocab_size, "prune recovery");
  make_dirs(o.work_dir);
  log_info("prune: recovery fine-tuning for ", o.steps, " steps on ", d.train_shard, " (checkpoints in ", o.work_dir, ")");
  RecoveryTask task(d.cfg, m, d.train_shard, o);
  train::Trainer trainer(d.cfg, task);
  train::TrainCallbacks cb;
  cb.evaluate = eval::lm_validator(task.model(), d.manifest_path, d.cfg.train.seq_len, d.cfg.train.batch_size, d.cfg.eval.batches);
  trainer.set_callbacks(cb);
  const train::TrainResult r = trainer.fit();
  if (r.interrupted)
    throw Error(fmt("prune: recovery interrupted at step ", r.final_step, " (run the same command again to resume from ", o.work_dir, ")"));
  m = task.model();
  m->eval();
  return {r.final_step, r.last_loss};
}

}  // namespace dsforge::compress
