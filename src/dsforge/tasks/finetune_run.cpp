#include "dsforge/tasks/finetune_run.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/log.h"
#include "dsforge/core/shuffle.h"
#include "dsforge/train/trainer.h"

namespace dsforge::tasks {

ExampleStream::ExampleStream(int64_t n, uint64_t seed) : n_(n), seed_(seed) {
  if (n_ < 1) throw DataError("fine-tuning: no training examples");
  reshuffle();
}

void ExampleStream::reshuffle() {
  order_.resize(static_cast<size_t>(n_));
  for (int64_t i = 0; i < n_; ++i) order_[static_cast<size_t>(i)] = i;
  shuffle_in_place(order_, seed_ ^ (0x9E3779B97F4A7C15ull * static_cast<uint64_t>(epoch_ + 1)));
}

std::vector<int64_t> ExampleStream::next(int64_t rows, int64_t first, int64_t count) {
  std::vector<int64_t> out;
  for (int64_t i = 0; i < rows; ++i) {
    if (offset_ == n_) {
      ++epoch_;
      offset_ = 0;
      reshuffle();
    }
    const int64_t idx = order_[static_cast<size_t>(offset_++)];
    if (i >= first && i < first + count) out.push_back(idx);
  }
  return out;
}

void ExampleStream::set_position(const nlohmann::json& p) {
  const int64_t epoch = p.at("epoch").get<int64_t>(), offset = p.at("offset").get<int64_t>();
  if (epoch < 0 || offset < 0 || offset > n_)
    throw CheckpointError(fmt("fine-tuning: data position (epoch ", epoch, ", offset ", offset, ") is out of range for ", n_,
                              " examples (a checkpoint of another data set?)"));
  epoch_ = epoch;
  offset_ = offset;
  reshuffle();
}

RunConfig finetune_run_config(const FinetuneSchedule& s, const std::vector<std::string>& overrides,
                              const std::string& out_dir) {
  if (s.batch < 1 || s.epochs < 1) throw ConfigError("fine-tuning: --batch and --epochs must be at least 1");
  RunConfig cfg;
  const int64_t steps_per_epoch = (s.examples + s.batch - 1) / s.batch;
  const int64_t total = std::max<int64_t>(1, steps_per_epoch * s.epochs);
  cfg.run.out_dir = out_dir;
  cfg.run.seed = static_cast<int64_t>(s.seed);
  cfg.train.batch_size = s.batch;
  cfg.train.max_steps = total;
  cfg.train.lr = s.lr;
  cfg.train.weight_decay = s.weight_decay;
  cfg.train.beta2 = 0.999;
  cfg.train.schedule = s.schedule;
  cfg.train.warmup_steps = s.warmup_fraction > 0 ? std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(total) * s.warmup_fraction)) : 0;
  cfg.train.decay_fraction = 1.0 - s.warmup_fraction > 0 ? 1.0 - s.warmup_fraction : 1.0;
  cfg.train.min_lr_ratio = 0.0;
  cfg.train.grad_clip = s.grad_clip;
  cfg.train.fit_micro_batch = false;
  cfg.train.log_every = std::max<int64_t>(1, std::max(steps_per_epoch, total / 20));
  cfg.train.eval_every = total;
  cfg.train.checkpoint_every = total;
  cfg.train.keep_checkpoints = 1;
  for (const auto& o : overrides) apply_override(cfg, o);
  validate(cfg);
  return cfg;
}

std::vector<double> run_finetune(train::TrainTask& task, RunConfig cfg, int64_t steps_per_epoch, const std::string& what,
                                 std::function<train::Scalars(int64_t)> evaluate) {
  std::string temp;
  if (cfg.run.out_dir.empty()) {
    char tmpl[] = "/tmp/dsforge-finetune-XXXXXX";
    if (!::mkdtemp(tmpl)) throw IoError("fine-tuning: cannot create a temporary folder in /tmp");
    temp = cfg.run.out_dir = tmpl;
  }
  make_dirs(cfg.run.out_dir);
  // Per-epoch means from each step's reported loss (resumed steps are not seen again: their epochs
  // report the steps this run trained).
  std::vector<double> sums, counts;
  train::TrainCallbacks cb;
  cb.evaluate = std::move(evaluate);
  cb.on_step_loss = [&](int64_t step, double& loss) {
    const auto e = static_cast<size_t>(step / std::max<int64_t>(1, steps_per_epoch));
    if (sums.size() <= e) sums.resize(e + 1, 0.0), counts.resize(e + 1, 0.0);
    sums[e] += loss;
    counts[e] += 1;
  };
  try {
    train::Trainer trainer(cfg, task);
    trainer.set_callbacks(cb);
    const train::TrainResult r = trainer.fit();
    if (r.interrupted)
      throw Interrupted(temp.empty() ? fmt(what, ": interrupted at step ", r.final_step, " (checkpoint in ", cfg.run.out_dir,
                                           "); run the same command again to resume")
                                     : fmt(what, ": interrupted at step ", r.final_step, " (no --out folder: nothing kept)"));
  } catch (...) {
    if (!temp.empty()) remove_all(temp);
    throw;
  }
  if (!temp.empty()) remove_all(temp);
  std::vector<double> epochs;
  for (size_t e = 0; e < sums.size(); ++e)
    if (counts[e] > 0) epochs.push_back(sums[e] / counts[e]);
  for (size_t e = 0; e < epochs.size(); ++e) log_info(what, ": epoch ", e + 1, " train loss ", epochs[e]);
  return epochs;
}

}  // namespace dsforge::tasks
