#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>

#include "dsforge/core/io.h"
#include "dsforge/data/shards.h"
#include "dsforge/eval/lm_eval.h"
#include "dsforge/model/deepseek.h"
#include "test_util.h"

using namespace dsforge;

TEST(Eval, UnigramBaselineHandComputed) {
  TempDir dir;
  // Train tokens: 0 0 1 (vocab 3, add-one): counts (3, 2, 1) / 6. Eval shard 2 0 1: the targets are
  // tokens 1.. = (0, 1): loss = -(ln 3/6 + ln 2/6) / 2.
  data::write_shard(path_join(dir.path, "t.bin"), {0, 0, 1}, 1, 3);
  data::write_shard(path_join(dir.path, "e.bin"), {2, 0, 1}, 1, 3);
  auto r = eval::unigram_baseline(path_join(dir.path, "t.bin"), path_join(dir.path, "e.bin"), 3);
  EXPECT_EQ(r.tokens, 2);
  const double expect = -(std::log(3.0 / 6) + std::log(2.0 / 6)) / 2;
  EXPECT_NEAR(r.loss, expect, 1e-12);
  EXPECT_NEAR(r.perplexity, std::exp(expect), 1e-12);
  // Bits per byte: token 0 stands for 3 bytes, token 1 for 1: 2 * expect nats over 4 bytes.
  const std::vector<int64_t> bytes = {3, 1, 2};
  auto b = eval::unigram_baseline(path_join(dir.path, "t.bin"), path_join(dir.path, "e.bin"), 3, &bytes);
  EXPECT_EQ(b.bytes, 4);
  EXPECT_NEAR(b.bits_per_byte, 2 * expect / std::log(2.0) / 4, 1e-12);
}

TEST(Eval, LmLossEqualsDirectCrossEntropyOverAllWindows) {
  TempDir dir;
  model::ModelConfig c = model::model_config_from_preset("nano");
  c.vocab_size = 50;
  c.num_hidden_layers = 2;
  model::DeepseekV3 m(c);
  model::init_weights(*m, 0.05, 3);
  std::vector<int32_t> toks(41);
  for (int i = 0; i < 41; ++i) toks[i] = (i * 13 + 5) % 50;
  data::write_shard(path_join(dir.path, "v.bin"), toks, 1, 50);
  // seq_len 8: windows of 9 tokens every 8 -> 5 windows, 40 targets; batch 2 -> 3 batches (last partial).
  auto r = eval::evaluate_lm(m.ptr(), path_join(dir.path, "v.bin"), 8, 2, 0);
  EXPECT_EQ(r.tokens, 40);
  at::NoGradGuard ng;
  m->eval();
  double sum = 0;
  for (int w = 0; w < 5; ++w) {
    std::vector<int64_t> x(toks.begin() + 8 * w, toks.begin() + 8 * w + 9);
    at::Tensor t = at::tensor(x, at::kLong).unsqueeze(0);
    at::Tensor logits = m->forward(t.narrow(1, 0, 8));
    sum += at::cross_entropy_loss(logits.squeeze(0), t.narrow(1, 1, 8).squeeze(0), {}, at::Reduction::Sum).item<double>();
  }
  EXPECT_NEAR(r.loss, sum / 40, 1e-5);
  EXPECT_NEAR(r.perplexity, std::exp(sum / 40), 1e-3);
  // Bits per byte with every token standing for 2 bytes: the loss in bits over 80 bytes.
  const std::vector<int64_t> two(50, 2);
  auto rb = eval::evaluate_lm(m.ptr(), path_join(dir.path, "v.bin"), 8, 2, 0, &two);
  EXPECT_EQ(rb.bytes, 80);
  EXPECT_NEAR(rb.bits_per_byte, sum / std::log(2.0) / 80, 1e-5);
}
