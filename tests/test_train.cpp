#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <cstring>
#include <map>
#include <fstream>
#include <nlohmann/json.hpp>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/log/tensorboard.h"
#include "dsforge/model/causal_lm.h"
#include "dsforge/model/io.h"
#include "dsforge/pipeline/stages.h"
#include "dsforge/model/info.h"
#include "dsforge/train/checkpoint.h"
#include "dsforge/train/memory.h"
#include "dsforge/train/optim.h"
#include "dsforge/train/precision.h"
#include "dsforge/train/progress.h"
#include "dsforge/eval/lm_eval.h"
#include "dsforge/train/trainer.h"
#include "test_util.h"

using namespace dsforge;
using namespace dsforge::train;

TEST(AdamW, OneStepMatchesHandComputation) {
  // w = 1, g = 0.5, lr = 0.1, betas (0.9, 0.95), eps 1e-8, wd 0.1 (decoupled):
  // w <- w (1 - lr wd) = 0.99; m = 0.05, v = 0.0125; m^ = 0.5, v^ = 0.25; w <- 0.99 - 0.1 * 0.5 / (0.5 + 1e-8)
  at::Tensor w = at::ones({2, 2}, at::kDouble).requires_grad_();
  at::Tensor norm = at::ones({2}, at::kDouble).requires_grad_();
  AdamW opt({{"w", w}, {"n", norm}}, {0.1, 0.9, 0.95, 1e-8, 0.1});
  w.mutable_grad() = at::full({2, 2}, 0.5, at::kDouble);
  norm.mutable_grad() = at::full({2}, 0.5, at::kDouble);
  opt.step();
  EXPECT_NEAR(w[0][0].item<double>(), 0.99 - 0.1 * 0.5 / (0.5 + 1e-8), 1e-12);
  EXPECT_NEAR(norm[0].item<double>(), 1.0 - 0.1 * 0.5 / (0.5 + 1e-8), 1e-12);  // 1-D: no decay
  // State round trip.
  AdamW other({{"w", w}, {"n", norm}}, {0.1, 0.9, 0.95, 1e-8, 0.1});
  other.load_state_dict(opt.state_dict(), "mem");
  EXPECT_EQ(other.steps(), 1);
  EXPECT_TRUE(at::equal(other.params()[0].exp_avg_sq, opt.params()[0].exp_avg_sq));
}

TEST(Schedule, WarmupCosineBreakpoints) {
  EXPECT_NEAR(warmup_cosine_lr(0, 10, 110, 1.0, 0.1), 0.1, 1e-12);
  EXPECT_NEAR(warmup_cosine_lr(9, 10, 110, 1.0, 0.1), 1.0, 1e-12);
  EXPECT_NEAR(warmup_cosine_lr(10, 10, 110, 1.0, 0.1), 1.0, 1e-12);
  EXPECT_NEAR(warmup_cosine_lr(60, 10, 110, 1.0, 0.1), 0.55, 1e-12);  // halfway: floor + (1-floor)/2
  EXPECT_NEAR(warmup_cosine_lr(110, 10, 110, 1.0, 0.1), 0.1, 1e-12);
  for (int s = 10; s < 110; ++s)
    EXPECT_GE(warmup_cosine_lr(s, 10, 110, 1.0, 0.1), warmup_cosine_lr(s + 1, 10, 110, 1.0, 0.1));
}

TEST(Clip, GlobalNormIsAtMostMax) {
  at::Tensor a = at::zeros({3}).requires_grad_(), b = at::zeros({4}).requires_grad_();
  a.mutable_grad() = at::full({3}, 3.0);
  b.mutable_grad() = at::full({4}, 4.0);
  double n = clip_grad_norm({a, b}, 1.0);
  EXPECT_NEAR(n, std::sqrt(27.0 + 64.0), 1e-9);
  double after = std::sqrt(a.grad().pow(2).sum().item<double>() + b.grad().pow(2).sum().item<double>());
  EXPECT_LE(after, 1.0 + 1e-6);
}

TEST(TensorBoard, RecordFramingAndEventBytes) {
  // Hand-encoded Event{wall_time=1.5, step=3, summary{value{tag="a", simple_value=2}}}.
  std::string e = log::encode_scalar_event("a", 2.0f, 3, 1.5);
  const unsigned char expect[] = {0x09, 0, 0, 0, 0, 0, 0, 0xF8, 0x3F,  // wall_time 1.5
                                  0x10, 0x03,                           // step 3
                                  0x2A, 0x0A, 0x0A, 0x08,               // summary (10 bytes) { value (8 bytes) {
                                  0x0A, 0x01, 'a',                      //   tag "a"
                                  0x15, 0, 0, 0, 0x40};                 //   simple_value 2.0f }}
  ASSERT_EQ(e.size(), sizeof expect);
  EXPECT_EQ(std::memcmp(e.data(), expect, sizeof expect), 0);
  std::string rec = log::frame_record(e);
  EXPECT_EQ(rec.size(), 8 + 4 + e.size() + 4);
  uint64_t len;
  std::memcpy(&len, rec.data(), 8);
  EXPECT_EQ(len, e.size());
}

TEST(Checkpoint, AtomicKeepLastAndCorruptionFallback) {
  TempDir dir;
  CheckpointData d;
  d.model = {{"w", at::ones({2})}};
  d.optimizer = {{"step", at::tensor({1}, at::kLong)}};
  d.model_config_json = "{}";
  for (int64_t s : {10, 20, 30}) {
    d.trainer_state = {{"step", s}};
    save_checkpoint(dir.path, s, d, 2);
  }
  auto latest = load_latest_checkpoint(dir.path);
  ASSERT_TRUE(latest);
  EXPECT_NE(latest->dir.find("step_0000030"), std::string::npos);
  EXPECT_FALSE(file_exists(path_join(dir.path, "checkpoints/step_0000010")));  // pruned
  // Corrupt the newest: loading falls back to step 20.
  std::string w = path_join(latest->dir, "model.safetensors");
  std::string bytes = read_file(w);
  bytes[bytes.size() - 1] ^= 1;
  write_file_atomic(w, bytes);
  latest = load_latest_checkpoint(dir.path);
  ASSERT_TRUE(latest);
  EXPECT_NE(latest->dir.find("step_0000020"), std::string::npos);
  // A half-written checkpoint (no DONE) is ignored.
  make_dirs(path_join(dir.path, "checkpoints/step_0000040.tmp"));
  EXPECT_NE(load_latest_checkpoint(dir.path)->dir.find("step_0000020"), std::string::npos);
}

namespace {
// A tiny run folder with a prepared corpus, tokenizer and shards.
RunConfig tiny_run(const std::string& dir) {
  std::string text;
  const char* words[] = {"red", "fox", "jumps", "over", "lazy", "dog", "small", "cat", "sleeps", "near", "river", "bank"};
  uint32_t x = 1;
  for (int i = 0; i < 400; ++i) {
    std::string line = std::string(words[i % 12]) + ":";
    for (int k = 0; k < 8; ++k) {
      x = x * 1103515245u + 12345u;
      line += " " + std::string(words[(x >> 16) % 12]);
    }
    text += line + "\n";
  }
  write_file_atomic(path_join(dir, "corpus.txt"), text);
  RunConfig cfg;
  cfg.run.out_dir = path_join(dir, "run");
  cfg.run.threads = 1;
  cfg.data.source = "files";
  cfg.data.paths = {path_join(dir, "corpus.txt")};
  cfg.data.val_fraction = 0.1;
  cfg.tokenizer.vocab_size = 300;
  cfg.model.config = "nano";
  cfg.train.seq_len = 16;
  cfg.train.batch_size = 4;
  cfg.train.max_steps = 12;
  cfg.train.warmup_steps = 2;
  cfg.train.log_every = 1;
  cfg.train.eval_every = 6;
  cfg.train.checkpoint_every = 100;
  cfg.eval.batches = 2;
  return cfg;
}

// tiny_run with its corpus prepared, tokenizer trained and shards written.
RunConfig prepared_tiny_run(const std::string& dir) {
  RunConfig cfg = tiny_run(dir);
  pipeline::configure_threads(cfg);
  pipeline::stage_prepare(cfg);
  pipeline::stage_tokenizer(cfg);
  pipeline::stage_tokenize(cfg);
  return cfg;
}

// The nano model sized for tiny_run's tokenizer, and its shards' manifest.
model::ModelConfig tiny_nano() {
  model::ModelConfig mc = model::load_model_config("nano");
  mc.vocab_size = 300;
  return mc;
}
std::string tiny_manifest(const RunConfig& cfg) { return path_join(cfg.run.out_dir, "shards/manifest.json"); }

std::vector<double> losses(const std::string& metrics) {
  std::vector<double> out;
  std::ifstream in(metrics);
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    if (j["kind"] == "train") out.push_back(j["loss"].get<double>());
  }
  return out;
}
}  // namespace

TEST(Trainer, ResumeIsBitwiseExact) {
  TempDir dir;
  RunConfig cfg = prepared_tiny_run(dir.path);
  const model::ModelConfig mc = tiny_nano();
  const std::string manifest = tiny_manifest(cfg);

  // Dropout everywhere: the resumed run must also continue the random stream (RNG state in the checkpoint).
  cfg.train.dropout = cfg.train.attention_dropout = cfg.train.embedding_dropout = 0.1;
  RunConfig a = cfg;  // uninterrupted
  a.run.out_dir = path_join(dir.path, "a");
  make_dirs(a.run.out_dir);
  Trainer(a, mc, manifest).fit();

  RunConfig b = cfg;  // stopped at step 5, then resumed
  b.run.out_dir = path_join(dir.path, "b");
  make_dirs(b.run.out_dir);
  Trainer first(b, mc, manifest);
  TrainCallbacks stop5;
  stop5.stop_after = [](int64_t step) { return step == 5; };
  first.set_callbacks(stop5);
  TrainResult r1 = first.fit();
  EXPECT_TRUE(r1.interrupted);
  EXPECT_EQ(r1.final_step, 5);
  Trainer second(b, mc, manifest);
  TrainResult r2 = second.fit();
  EXPECT_EQ(r2.start_step, 5);
  EXPECT_EQ(r2.final_step, 12);

  auto la = losses(path_join(a.run.out_dir, "metrics.jsonl")), lb = losses(path_join(b.run.out_dir, "metrics.jsonl"));
  ASSERT_EQ(la.size(), 12u);
  ASSERT_EQ(lb.size(), 12u);
  for (size_t i = 0; i < la.size(); ++i) EXPECT_EQ(la[i], lb[i]) << "step " << i + 1;

  // A checkpoint from another model config is refused with a clear message.
  RunConfig c = b;
  c.train.seq_len = 8;
  EXPECT_THROW_MSG(Trainer(c, mc, manifest).fit(), CheckpointError, "another data/tokenizer/model/seq_len/seed config");
}

TEST(Trainer, TrainsEveryModelTypeAndReloadsIt) {
  TempDir dir;
  RunConfig cfg = prepared_tiny_run(dir.path);
  const std::string manifest = tiny_manifest(cfg);
  for (const char* preset : {"gpt2-tiny", "lstm-tiny"}) {
    model::ModelConfig mc = model::model_config_from_preset(preset);
    mc.vocab_size = 300;
    mc.hidden_size = 64;
    mc.intermediate_size = 256;
    RunConfig r = cfg;
    r.run.out_dir = path_join(dir.path, preset);
    r.model.config = preset;
    r.train.max_steps = 30;
    r.train.eval_every = 100;
    make_dirs(r.run.out_dir);
    Trainer t(r, mc, manifest);
    t.fit();
    auto l = losses(path_join(r.run.out_dir, "metrics.jsonl"));
    ASSERT_EQ(l.size(), 30u) << preset;
    EXPECT_LT(l.back(), l.front() - 1.0) << preset;  // it learns
    model::save_pretrained(path_join(r.run.out_dir, "model"), *t.model());
    auto back = model::load_pretrained(path_join(r.run.out_dir, "model"));
    at::Tensor x = at::randint(300, {1, 10}, at::kLong);
    t.model()->eval();
    back->eval();
    EXPECT_TRUE(at::equal(t.model()->forward(x), back->forward(x))) << preset;
  }
}

TEST(Schedule, AllKindsAtTheirBreakpoints) {
  Schedule s{"constant", 10, 1000, 1.0, 0.1, 0.2};
  EXPECT_NEAR(schedule_lr(s, 4), 0.5, 1e-12);  // warmup (step + 1) / warmup
  EXPECT_NEAR(schedule_lr(s, 999), 1.0, 1e-12);
  s.kind = "wsd";  // stable until 80%, then linear to 0.1 at 100%
  EXPECT_NEAR(schedule_lr(s, 799), 1.0, 1e-12);
  EXPECT_NEAR(schedule_lr(s, 900), 0.55, 1e-12);
  EXPECT_NEAR(schedule_lr(s, 1000), 0.1, 1e-12);
  s.kind = "deepseek";  // DEEPSEEK.md §2.1 in fractions of training
  EXPECT_NEAR(schedule_lr(s, 675), 1.0, 1e-12);
  EXPECT_NEAR(schedule_lr(s, 676), 1.0, 1e-12);                // cosine starts at the peak
  EXPECT_NEAR(schedule_lr(s, 821), 0.55, 1e-12);               // halfway through the cosine: 0.1 + 0.9 / 2
  EXPECT_NEAR(schedule_lr(s, 966), 0.1, 1e-12);
  EXPECT_NEAR(schedule_lr(s, 988), 0.1, 1e-12);
  EXPECT_NEAR(schedule_lr(s, 989), 0.0332, 1e-12);
  EXPECT_DOUBLE_EQ(mtp_weight_factor(s, 675), 1.0);            // lambda 0.3 ...
  EXPECT_DOUBLE_EQ(mtp_weight_factor(s, 676), 1.0 / 3.0);      // ... then 0.1
  EXPECT_DOUBLE_EQ(bias_speed_factor(s, 965), 1.0);            // gamma ...
  EXPECT_DOUBLE_EQ(bias_speed_factor(s, 966), 0.0);            // ... then 0
  s.kind = "cosine";
  EXPECT_DOUBLE_EQ(mtp_weight_factor(s, 900), 1.0);
  s.kind = "linear";
  EXPECT_THROW_MSG(schedule_lr(s, 500), ConfigError, "schedule 'linear' is unknown");
}

TEST(Trainer, GradientAccumulationEqualsOneLargerBatch) {
  TempDir dir;
  RunConfig cfg = prepared_tiny_run(dir.path);
  const std::string manifest = tiny_manifest(cfg);
  const model::ModelConfig mc = tiny_nano();
  RunConfig big = cfg, acc = cfg;
  big.run.out_dir = path_join(dir.path, "big");
  big.train.batch_size = 4;
  big.train.max_steps = 3;
  acc.run.out_dir = path_join(dir.path, "acc");
  acc.train.batch_size = 2;
  acc.train.grad_accum_steps = 2;
  acc.train.max_steps = 3;
  acc.train.fit_micro_batch = false;  // keep 2 x 2 (the memory fit would pick 4 x 1)
  for (auto* r : {&big, &acc}) make_dirs(r->run.out_dir);
  Trainer a(big, mc, manifest), b(acc, mc, manifest);
  a.fit();
  TrainResult rb = b.fit();
  ASSERT_EQ(rb.micro_batch, 2);
  ASSERT_EQ(rb.accum_steps, 2);
  auto la = losses(path_join(big.run.out_dir, "metrics.jsonl")), lb = losses(path_join(acc.run.out_dir, "metrics.jsonl"));
  ASSERT_EQ(la.size(), 3u);
  ASSERT_EQ(lb.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(la[i], lb[i], 1e-4) << "step " << i + 1;
  auto sa = model::model_state(*a.model()), sb = model::model_state(*b.model());
  double max_diff = 0;
  for (const auto& [k, t] : sa) max_diff = std::max(max_diff, (t - sb.at(k)).abs().max().item<double>());
  EXPECT_LT(max_diff, 1e-4);  // float32 summation order differs; parameters agree to rounding
}

TEST(Trainer, EarlyStoppingRestoresTheBestWeights) {
  TempDir dir;
  RunConfig cfg = prepared_tiny_run(dir.path);
  const std::string manifest = tiny_manifest(cfg);
  const model::ModelConfig mc = tiny_nano();
  RunConfig r = cfg;
  r.run.out_dir = path_join(dir.path, "es");
  r.train.max_steps = 20;
  r.train.eval_every = 2;
  r.train.early_stopping_patience = 1;
  r.train.early_stopping_min_delta = 100.0;  // only the first evaluation can count as an improvement
  make_dirs(r.run.out_dir);
  Trainer t(r, mc, manifest);
  TrainCallbacks validate;
  validate.evaluate = eval::lm_validator(t.model(), manifest, r.train.seq_len, r.train.batch_size, r.eval.batches);
  t.set_callbacks(validate);
  TrainResult res = t.fit();
  EXPECT_TRUE(res.early_stopped);
  EXPECT_EQ(res.final_step, 4);
  EXPECT_EQ(res.best_step, 2);
  auto best = load_safetensors(path_join(r.run.out_dir, "checkpoints/best/model.safetensors"));
  EXPECT_EQ(best.metadata.at("step"), "2");
  auto now = model::model_state(*t.model());
  for (const auto& [k, v] : best.tensors) EXPECT_TRUE(at::equal(v, now.at(k))) << k;
  // The same command again does not train past the early stop.
  Trainer t_again(r, mc, manifest);
  validate.evaluate = eval::lm_validator(t_again.model(), manifest, r.train.seq_len, r.train.batch_size, r.eval.batches);
  t_again.set_callbacks(validate);
  TrainResult again = t_again.fit();
  EXPECT_TRUE(again.early_stopped);
  EXPECT_EQ(again.final_step, 4);
}

TEST(Loss, LabelSmoothingMatchesItsFormula) {
  // CE_eps = (1 - eps) * CE + eps * mean_k(-log p_k)
  at::Tensor logits = at::tensor({2.0, 0.5, -1.0, 0.0}, at::kDouble).view({1, 1, 4});
  at::Tensor target = at::tensor({1}, at::kLong).view({1, 1});
  at::Tensor logp = at::log_softmax(logits.view({4}), 0);
  const double eps = 0.1;
  const double expect = (1 - eps) * -logp[1].item<double>() + eps * -logp.mean().item<double>();
  EXPECT_NEAR(model::next_token_loss(logits, target, eps).item<double>(), expect, 1e-12);
  EXPECT_NEAR(model::next_token_loss(logits, target).item<double>(), -logp[1].item<double>(), 1e-12);
}

TEST(Trainer, DropoutChangesTrainingButNotEvaluation) {
  model::ModelConfig mc = model::load_model_config("nano");
  mc.vocab_size = 64;
  for (const char* preset : {"nano", "gpt2-tiny", "lstm-tiny"}) {
    model::ModelConfig c = model::load_model_config(preset);
    c.vocab_size = 64;
    model::CausalLm m = model::build_model(c);
    m->init_weights(0.02, 1);
    at::Tensor x = at::randint(64, {2, 12}, at::kLong);
    m->eval();
    at::Tensor ref = m->forward(x);
    m->set_dropout({0.2, 0.2, 0.2});
    EXPECT_TRUE(at::equal(m->forward(x), ref)) << preset << ": eval mode must not drop";
    m->train();
    EXPECT_FALSE(at::allclose(m->forward(x), ref)) << preset << ": train mode must drop";
    m->set_dropout({0, 0, 0});
    EXPECT_TRUE(at::allclose(m->forward(x), ref, 1e-5, 1e-6)) << preset << ": rate 0 is the identity";
  }
}

TEST(Memory, PlanPicksTheLargestDivisorThatFits) {
  MemoryProbe p;
  p.state_bytes = 1000;
  p.activation_base = 100;
  p.per_row_bytes = 100;
  // need(b) = 1000 + 1.1 * (100 + 100 b): b = 6 -> 1770, b = 4 -> 1550, b = 3 -> 1440.
  BatchPlan plan = plan_batch(p, 12, 1600);
  EXPECT_EQ(plan.micro_batch, 4);
  EXPECT_EQ(plan.accum_steps, 3);
  EXPECT_EQ(plan_batch(p, 12, 100000).micro_batch, 12);
  EXPECT_EQ(plan_batch(p, 7, 1500).micro_batch, 1);  // 7 is prime: 1 x 7
  EXPECT_THROW_MSG(plan_batch(p, 8, 1200), Error, "train.memory_gb");
}

TEST(Memory, ProbePredictsTheMeasuredPeak) {
  model::ModelConfig mc = model::load_model_config("nano");
  mc.vocab_size = 512;
  const int64_t row = model::training_row_length(mc, 32);
  EXPECT_EQ(row, 32 + 1 + mc.num_nextn_predict_layers);
  MemoryProbe p = probe_training_memory(mc, 32, /*bf16=*/false, {}, /*mtp_loss_weight=*/0.3);
  // A row's activations hold at least its logits and their gradient (S x V floats, twice).
  EXPECT_GT(p.per_row_bytes, 2 * 32 * 512 * 4);
  // Measure micro-batch 6 directly: the linear model from rows 1 and 2 must predict it within 10%.
  model::CausalLm m = model::build_model(mc);
  m->train();
  int64_t n_params = 0;
  for (const auto& q : m->parameters()) n_params += q.numel();
  at::Tensor batch = at::randint(512, {6, row}, at::kLong);
  int64_t measured = 0;
  {
    TensorMemoryTracker tracker;
    const int64_t base = tracker.current();
    at::Tensor loss = m->loss(batch, 0.3).total;
    const int64_t forward_end = tracker.current() - base;
    loss.backward();
    int64_t grad_bytes = 0;
    for (const auto& q : m->parameters())
      if (q.grad().defined()) grad_bytes += q.grad().numel() * 4;
    // Beyond the gradients (state_bytes counts them): the larger of the activations alive at the end
    // of forward and the step's peak.
    measured = std::max(forward_end, tracker.peak() - base - grad_bytes);
  }
  const int64_t predicted = p.activation_base + 6 * p.per_row_bytes;
  EXPECT_NEAR(static_cast<double>(predicted), static_cast<double>(measured), 0.1 * static_cast<double>(measured));
  EXPECT_EQ(p.state_bytes, n_params * 16);
}

TEST(Trainer, MemoryBudgetSplitsTheBatchWithTheSameResult) {
  TempDir dir;
  RunConfig cfg = prepared_tiny_run(dir.path);
  const std::string manifest = tiny_manifest(cfg);
  const model::ModelConfig mc = tiny_nano();
  // A budget between what micro-batch 2 and micro-batch 4 need.
  MemoryProbe p = probe_training_memory(mc, cfg.train.seq_len, false, {}, cfg.train.mtp_loss_weight);
  auto need = [&](int64_t b) { return p.state_bytes + 1.1 * static_cast<double>(p.activation_base + b * p.per_row_bytes); };
  RunConfig full = cfg, split = cfg;
  full.run.out_dir = path_join(dir.path, "full");
  split.run.out_dir = path_join(dir.path, "split");
  split.train.memory_gb = (need(2) + need(4)) / 2 / static_cast<double>(1LL << 30);
  full.train.max_steps = split.train.max_steps = 3;
  for (auto* r : {&full, &split}) make_dirs(r->run.out_dir);
  TrainResult rf = Trainer(full, mc, manifest).fit(), rs = Trainer(split, mc, manifest).fit();
  EXPECT_EQ(rf.micro_batch, 4);
  EXPECT_EQ(rs.micro_batch, 2);
  EXPECT_EQ(rs.accum_steps, 2);
  auto lf = losses(path_join(full.run.out_dir, "metrics.jsonl")), ls = losses(path_join(split.run.out_dir, "metrics.jsonl"));
  ASSERT_EQ(lf.size(), ls.size());
  for (size_t i = 0; i < lf.size(); ++i) EXPECT_NEAR(lf[i], ls[i], 1e-4);
  // A budget below the weights and optimizer state is refused, naming the key.
  RunConfig tiny = cfg;
  tiny.run.out_dir = path_join(dir.path, "tiny");
  tiny.train.memory_gb = 1e-6;
  EXPECT_THROW_MSG(Trainer(tiny, mc, manifest).fit(), Error, "train.memory_gb");
}

TEST(Trainer, LossSpikeRollsBackToTheLastCheckpoint) {
  TempDir dir;
  RunConfig cfg = prepared_tiny_run(dir.path);
  const std::string manifest = tiny_manifest(cfg);
  const model::ModelConfig mc = tiny_nano();
  cfg.run.out_dir = path_join(dir.path, "spike");
  cfg.train.max_steps = 16;
  cfg.train.checkpoint_every = 12;
  cfg.train.spike_factor = 3.0;
  make_dirs(cfg.run.out_dir);
  // The main loss of step 14 reported 100x too high, once.
  auto spike_at_14 = [] {
    TrainCallbacks cb;
    auto fired = std::make_shared<bool>(false);
    cb.on_step_loss = [fired](int64_t step, double& loss) {
      if (step == 14 && !*fired) loss *= 100.0, *fired = true;
    };
    return cb;
  };
  Trainer t(cfg, mc, manifest);
  t.set_callbacks(spike_at_14());
  TrainResult r = t.fit();
  EXPECT_EQ(r.rollbacks, 1);
  EXPECT_EQ(r.final_step, 16);
  // The record names the spike; steps 13 and 14 were trained twice (before and after the rollback).
  std::ifstream in(path_join(cfg.run.out_dir, "metrics.jsonl"));
  int rollbacks = 0, train_records = 0;
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    if (j["kind"] == "rollback") {
      ++rollbacks;
      EXPECT_EQ(j["step"], 14);
      EXPECT_EQ(j["rolled_back_to"], 12);
    }
    if (j["kind"] == "train") ++train_records;
  }
  EXPECT_EQ(rollbacks, 1);
  EXPECT_EQ(train_records, 18);
  // Without a threshold nothing is rolled back.
  RunConfig off = cfg;
  off.run.out_dir = path_join(dir.path, "off");
  off.train.spike_factor = 0;
  make_dirs(off.run.out_dir);
  Trainer t2(off, mc, manifest);
  t2.set_callbacks(spike_at_14());
  EXPECT_EQ(t2.fit().rollbacks, 0);
}

TEST(Precision, Bf16AutocastTrainsCloseToFloat32) {
  TempDir dir;
  RunConfig cfg = prepared_tiny_run(dir.path);
  const std::string manifest = tiny_manifest(cfg);
  const model::ModelConfig mc = tiny_nano();
  RunConfig f = cfg, b = cfg;
  f.run.out_dir = path_join(dir.path, "fp32");
  b.run.out_dir = path_join(dir.path, "bf16");
  b.train.precision = "bf16";
  for (auto* r : {&f, &b}) make_dirs(r->run.out_dir);
  Trainer tf(f, mc, manifest), tb(b, mc, manifest);
  tf.fit();
  tb.fit();
  auto lf = losses(path_join(f.run.out_dir, "metrics.jsonl")), lb = losses(path_join(b.run.out_dir, "metrics.jsonl"));
  ASSERT_EQ(lf.size(), lb.size());
  double max_diff = 0;
  for (size_t i = 0; i < lf.size(); ++i) max_diff = std::max(max_diff, std::abs(lf[i] - lb[i]));
  EXPECT_GT(max_diff, 0.0) << "bf16 must actually change the arithmetic";
  EXPECT_LT(max_diff, 0.05 * lf.front()) << "bf16 must stay close to float32";
  // Master weights stay float32.
  for (const auto& p : tb.model()->parameters()) EXPECT_EQ(p.scalar_type(), at::kFloat);
}

TEST(Precision, AutocastScopeAndLossScaler) {
  at::Tensor x = at::randn({4, 8}), w = at::randn({3, 8});
  {
    AutocastScope scope(c10::Device(c10::kCPU), at::kBFloat16);
    EXPECT_EQ(at::linear(x, w).scalar_type(), at::kBFloat16);
  }
  EXPECT_EQ(at::linear(x, w).scalar_type(), at::kFloat);  // restored
  EXPECT_THROW_MSG(autocast_dtype("fp16", c10::Device(c10::kCPU)), ConfigError, "fp16 needs a CUDA device");

  LossScaler s(true, 1024.0, /*growth_interval=*/3);
  EXPECT_DOUBLE_EQ(s.scale_loss(at::ones({})).item<double>(), 1024.0);
  at::Tensor p = at::zeros({2}).requires_grad_(true);
  p.mutable_grad() = at::full({2}, 2048.0);
  s.unscale({p});
  EXPECT_TRUE(at::equal(p.grad(), at::full({2}, 2.0)));
  s.update(true);
  EXPECT_DOUBLE_EQ(s.scale(), 512.0);  // overflow halves
  for (int i = 0; i < 3; ++i) s.update(false);
  EXPECT_DOUBLE_EQ(s.scale(), 1024.0);  // three clean steps double
  LossScaler off(false);
  EXPECT_DOUBLE_EQ(off.scale_loss(at::ones({})).item<double>(), 1.0);
}

TEST(Progress, LineAndDurations) {
  EXPECT_EQ(format_duration(42), "42s");
  EXPECT_EQ(format_duration(185), "3m05s");
  EXPECT_EQ(format_duration(3720), "1h02m");
  ProgressStats s{120, 800, 2.34567, 3e-3, 0.5, 9876.4, 0.4321, 185};
  EXPECT_EQ(format_progress(s), "step 120/800  step loss 2.3457  lr 3.00e-03  gnorm 0.500  9876 tok/s  MFU 43.2%  ETA 3m05s");
}

TEST(Flops, Gpt2AndLstmTrainingFlopsPerToken) {
  model::ModelConfig g = model::load_model_config("gpt2-tiny");
  const double d = static_cast<double>(g.hidden_size), I = static_cast<double>(g.intermediate_size);
  const double L = static_cast<double>(g.num_hidden_layers), V = static_cast<double>(g.vocab_size);
  // 6 N (matmul weights, tied head once) + 3 x causal attention (QK^T and PV over S/2 keys on average).
  const double expect = 6 * (L * (4 * d * d + 2 * d * I) + V * d) + 3 * L * 2 * 2 * d * 64;
  EXPECT_DOUBLE_EQ(model::train_flops_per_token(g, 128), expect);
  model::ModelConfig l = model::load_model_config("lstm-tiny");
  const double dl = static_cast<double>(l.hidden_size);
  EXPECT_DOUBLE_EQ(model::train_flops_per_token(l, 128),
                   6 * (l.num_hidden_layers * 8 * dl * dl + static_cast<double>(l.vocab_size) * dl));
}

namespace {
// A minimal protobuf reader, independent of the writer: field number -> raw values.
struct PbField {
  int wire;
  uint64_t varint = 0;
  std::string bytes;  // length-delimited or fixed64/fixed32 raw
};
std::multimap<int, PbField> pb_parse(const std::string& s) {
  std::multimap<int, PbField> out;
  size_t i = 0;
  auto varint = [&]() {
    uint64_t v = 0;
    for (int shift = 0;; shift += 7) {
      const auto b = static_cast<uint8_t>(s.at(i++));
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
  };
  while (i < s.size()) {
    const uint64_t key = varint();
    PbField f{static_cast<int>(key & 7), 0, {}};
    if (f.wire == 0) f.varint = varint();
    else if (f.wire == 1) { f.bytes = s.substr(i, 8); i += 8; }
    else if (f.wire == 5) { f.bytes = s.substr(i, 4); i += 4; }
    else if (f.wire == 2) { const auto n = varint(); f.bytes = s.substr(i, n); i += n; }
    else throw std::runtime_error("bad wire type");
    out.emplace(static_cast<int>(key >> 3), f);
  }
  return out;
}
double pb_double(const std::string& b) {
  double v;
  std::memcpy(&v, b.data(), 8);
  return v;
}
}  // namespace

TEST(TensorBoard, HistogramEventDecodes) {
  const std::vector<double> values = {0.5, 1.0, 1.0, 1.5, 2.5};
  auto event = pb_parse(log::encode_histogram_event("train/expert_load", values, 7, 1.5, /*buckets=*/4));
  EXPECT_EQ(event.find(2)->second.varint, 7u);  // step
  auto summary = pb_parse(event.find(5)->second.bytes);
  auto value = pb_parse(summary.find(1)->second.bytes);
  EXPECT_EQ(value.find(1)->second.bytes, "train/expert_load");
  auto h = pb_parse(value.find(5)->second.bytes);
  EXPECT_DOUBLE_EQ(pb_double(h.find(1)->second.bytes), 0.5);   // min
  EXPECT_DOUBLE_EQ(pb_double(h.find(2)->second.bytes), 2.5);   // max
  EXPECT_DOUBLE_EQ(pb_double(h.find(3)->second.bytes), 5.0);   // num
  EXPECT_DOUBLE_EQ(pb_double(h.find(4)->second.bytes), 6.5);   // sum
  EXPECT_DOUBLE_EQ(pb_double(h.find(5)->second.bytes), 0.25 + 1 + 1 + 2.25 + 6.25);
  // Buckets of width 0.5 over [0.5, 2.5]: limits 1.0, 1.5, 2.0, 2.5; counts 3, 1, 0, 1.
  const std::string limits = h.find(6)->second.bytes, counts = h.find(7)->second.bytes;
  ASSERT_EQ(limits.size(), 32u);
  const double want_limits[] = {1.0, 1.5, 2.0, 2.5}, want_counts[] = {3, 1, 0, 1};
  for (int i = 0; i < 4; ++i) {
    EXPECT_DOUBLE_EQ(pb_double(limits.substr(8 * i, 8)), want_limits[i]);
    EXPECT_DOUBLE_EQ(pb_double(counts.substr(8 * i, 8)), want_counts[i]);
  }
}

TEST(TensorBoard, TextEventDecodes) {
  const std::string md = "| gold \\ predicted | a | b |\n|---|---:|---:|\n| a | 3 | 1 |\n| b | 0 | 2 |\n";
  auto event = pb_parse(log::encode_text_event("finetune/confusion", md, 3, 1.5));
  EXPECT_EQ(event.find(2)->second.varint, 3u);
  auto value = pb_parse(pb_parse(event.find(5)->second.bytes).find(1)->second.bytes);
  EXPECT_EQ(value.find(1)->second.bytes, "finetune/confusion");
  auto tensor = pb_parse(value.find(8)->second.bytes);
  EXPECT_EQ(tensor.find(1)->second.varint, 7u);  // DT_STRING
  EXPECT_EQ(tensor.find(8)->second.bytes, md);   // string_val
  auto meta = pb_parse(value.find(9)->second.bytes);
  EXPECT_EQ(pb_parse(meta.find(1)->second.bytes).find(1)->second.bytes, "text");  // plugin_data.plugin_name
}
