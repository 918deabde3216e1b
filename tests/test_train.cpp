#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/log/tensorboard.h"
#include "dsforge/model/causal_lm.h"
#include "dsforge/model/io.h"
#include "dsforge/pipeline/stages.h"
#include "dsforge/train/checkpoint.h"
#include "dsforge/train/optim.h"
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
  model::ModelConfig mc = model::load_model_config("nano");
  mc.vocab_size = 300;
  const std::string manifest = path_join(cfg.run.out_dir, "shards/manifest.json");

  RunConfig a = cfg;  // uninterrupted
  a.run.out_dir = path_join(dir.path, "a");
  make_dirs(a.run.out_dir);
  Trainer(a, mc, manifest).fit();

  RunConfig b = cfg;  // stopped at step 5, then resumed
  b.run.out_dir = path_join(dir.path, "b");
  make_dirs(b.run.out_dir);
  Trainer first(b, mc, manifest);
  first.set_stop_at(5);
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
  const std::string manifest = path_join(cfg.run.out_dir, "shards/manifest.json");
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
  const std::string manifest = path_join(cfg.run.out_dir, "shards/manifest.json");
  model::ModelConfig mc = model::load_model_config("nano");
  mc.vocab_size = 300;
  RunConfig big = cfg, acc = cfg;
  big.run.out_dir = path_join(dir.path, "big");
  big.train.batch_size = 4;
  big.train.max_steps = 3;
  acc.run.out_dir = path_join(dir.path, "acc");
  acc.train.batch_size = 2;
  acc.train.grad_accum_steps = 2;
  acc.train.max_steps = 3;
  for (auto* r : {&big, &acc}) make_dirs(r->run.out_dir);
  Trainer a(big, mc, manifest), b(acc, mc, manifest);
  a.fit();
  b.fit();
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
  const std::string manifest = path_join(cfg.run.out_dir, "shards/manifest.json");
  model::ModelConfig mc = model::load_model_config("nano");
  mc.vocab_size = 300;
  RunConfig r = cfg;
  r.run.out_dir = path_join(dir.path, "es");
  r.train.max_steps = 20;
  r.train.eval_every = 2;
  r.train.early_stopping_patience = 1;
  r.train.early_stopping_min_delta = 100.0;  // only the first evaluation can count as an improvement
  make_dirs(r.run.out_dir);
  Trainer t(r, mc, manifest);
  TrainResult res = t.fit();
  EXPECT_TRUE(res.early_stopped);
  EXPECT_EQ(res.final_step, 4);
  EXPECT_EQ(res.best_step, 2);
  auto best = load_safetensors(path_join(r.run.out_dir, "checkpoints/best/model.safetensors"));
  EXPECT_EQ(best.metadata.at("step"), "2");
  auto now = model::model_state(*t.model());
  for (const auto& [k, v] : best.tensors) EXPECT_TRUE(at::equal(v, now.at(k))) << k;
  // The same command again does not train past the early stop.
  TrainResult again = Trainer(r, mc, manifest).fit();
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
