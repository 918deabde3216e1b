// The model tests of DEEPSEEK.md §5 on nano-sized configs.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/nn/module.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <set>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/model/baselines.h"
#include "dsforge/model/config.h"
#include "dsforge/model/deepseek.h"
#include "dsforge/model/generate.h"
#include "dsforge/model/info.h"
#include "dsforge/model/io.h"
#include "dsforge/model/layers.h"
#include "reference/sampling.h"
#include "test_util.h"

using namespace dsforge;
using namespace dsforge::model;

namespace {
ModelConfig tiny(int64_t layers = 2) {
  ModelConfig c = model_config_from_preset("nano");
  c.vocab_size = 64;
  c.num_hidden_layers = layers;
  c.max_position_embeddings = 64;
  return c;
}

DeepseekV3 make(const ModelConfig& c, uint64_t seed = 0, bool dbl = false) {
  DeepseekV3 m(c);
  init_weights(*m, 0.1, seed);  // large init so that differences are visible
  if (dbl) m->to(at::kDouble);
  return m;
}

at::Tensor random_tokens(int64_t B, int64_t S, int64_t V, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  return at::randint(V, {B, S}, gen, at::kLong);
}

// micro with 3 layers (a dense one, two MoE) and 64 positions: every code path of the fused step.
ModelConfig micro3() {
  ModelConfig c = model_config_from_preset("micro");
  c.num_hidden_layers = 3;
  c.max_position_embeddings = 64;
  return c;
}

// The logits of tokens [B, S] fed one position at a time through the fused step, [B, S, V].
at::Tensor fused_steps(DeepseekV3& m, const at::Tensor& tokens) {
  KvCache cache = m->make_cache(tokens.size(0), tokens.size(1));
  std::vector<at::Tensor> out;
  for (int64_t t = 0; t < tokens.size(1); ++t) out.push_back(m->decode_step_fused(tokens.narrow(1, t, 1), cache));
  return at::cat(out, 1);
}

}  // namespace

TEST(ModelConfig, PresetParameterCountsMatchSpecification) {
  // DEEPSEEK.md §3.4: nano 1,014,272 main + 232,160 MTP; micro 9,134,464 + 1,590,720; mini 54,076,288 + 6,865,088.
  struct Row { const char* name; int64_t main, mtp; };
  for (Row r : {Row{"nano", 1014272, 232160}, Row{"micro", 9134464, 1590720}, Row{"mini", 54076288, 6865088}}) {
    auto p = count_params_formula(model_config_from_preset(r.name));
    EXPECT_EQ(p.main_total, r.main) << r.name;
    EXPECT_EQ(p.mtp, r.mtp) << r.name;
  }
  // The modules hold exactly that many parameters.
  DeepseekV3 m(model_config_from_preset("nano"));
  EXPECT_EQ(count_parameters(*m), 1014272 + 232160);
}

TEST(ModelConfig, ParsesARealDeepseekV3ConfigUnchanged) {
  // The HF config.json of DeepSeek-V3 (DEEPSEEK.md §3.2), with its bookkeeping keys.
  const std::string v3 = R"({
    "architectures": ["DeepseekV3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
    "auto_map": {"AutoConfig": "configuration_deepseek.DeepseekV3Config"}, "aux_loss_alpha": 0.001,
    "bos_token_id": 0, "eos_token_id": 1, "ep_size": 1, "first_k_dense_replace": 3, "hidden_act": "silu",
    "hidden_size": 7168, "initializer_range": 0.02, "intermediate_size": 18432, "kv_lora_rank": 512,
    "max_position_embeddings": 163840, "model_type": "deepseek_v3", "moe_intermediate_size": 2048,
    "moe_layer_freq": 1, "n_group": 8, "n_routed_experts": 256, "n_shared_experts": 1, "norm_topk_prob": true,
    "num_attention_heads": 128, "num_experts_per_tok": 8, "num_hidden_layers": 61, "num_key_value_heads": 128,
    "num_nextn_predict_layers": 1, "q_lora_rank": 1536, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
    "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": [128, 128]},
    "rms_norm_eps": 1e-06, "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0,
    "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096, "type": "yarn"}, "rope_theta": 10000,
    "routed_scaling_factor": 2.5, "scoring_func": "sigmoid", "seq_aux": true, "tie_word_embeddings": false,
    "topk_group": 4, "topk_method": "noaux_tc", "torch_dtype": "bfloat16", "transformers_version": "4.33.1",
    "use_cache": true, "v_head_dim": 128, "vocab_size": 129280})";
  ModelConfig c = model_config_from_json(v3, "v3.json");
  EXPECT_EQ(c.n_routed_experts, 256);
  EXPECT_EQ(c.rope_scaling.type, "yarn");
  auto p = count_params_formula(c);
  EXPECT_NEAR(static_cast<double>(p.main_total) / 1e9, 671.03, 0.01);  // §3.3 table
  EXPECT_NEAR(static_cast<double>(p.mtp) / 1e9, 11.61, 0.01);
  // §3.3 table: N_act excl. embedding 36.62B; training 250.4 GFLOP/token at 4K, 260.6 with MTP.
  ModelInfo info = model_info(c, 4096);
  EXPECT_NEAR(info.active_excl_embedding / 1e9, 36.62, 0.01);
  EXPECT_NEAR(info.train_flops_per_token_no_mtp / 1e9, 250.4, 0.1);
  EXPECT_NEAR(info.train_flops_per_token / 1e9, 260.6, 0.1);
  EXPECT_THROW_MSG(model_config_from_json(R"({"hidden_sise": 3})", "m.json"), ConfigError, "unknown key 'hidden_sise'");
  EXPECT_THROW_MSG(model_config_from_json(R"({"n_group": 3})", "m.json"), ConfigError, "'n_group' must divide");
}

TEST(Layers, RmsNormMatchesFormulaAndIsScaleInvariant) {
  RMSNorm n(8, 1e-6);
  n->to(at::kDouble);
  at::Tensor x = at::randn({3, 8}, at::kDouble);
  at::Tensor ref = x / at::sqrt(x.pow(2).mean(-1, true) + 1e-6);
  EXPECT_TRUE(at::allclose(n(x), ref, 1e-12, 1e-12));
  EXPECT_TRUE(at::allclose(n(x * 1000.0), n(x), 1e-5, 1e-5));  // up to eps
}

TEST(Layers, RopeRotatesInterleavedPairsAndKeepsRelativePositions) {
  ModelConfig c = tiny();
  RopeTables rope = make_rope_tables(c, 64);
  const int64_t dr = c.qk_rope_head_dim;
  // (a) pair i rotates by pos * theta^(-2i/d_r)
  at::Tensor x = at::zeros({1, 6, dr});
  x.select(1, 5).select(-1, 2).fill_(1.0);  // pair 1, even element, position 5
  at::Tensor y = apply_rope(x, rope, 0);
  const double ang = 5 * std::pow(10000.0, -2.0 * 1 / dr);
  EXPECT_NEAR(y[0][5][2].item<double>(), std::cos(ang), 1e-6);
  EXPECT_NEAR(y[0][5][3].item<double>(), std::sin(ang), 1e-6);
  // (b) <R(q,m), R(k,n)> depends on m - n only; (c) norms are preserved.
  at::Tensor q = at::randn({1, 1, dr}), k = at::randn({1, 1, dr});
  auto dot_at = [&](int64_t m, int64_t n) {
    return (apply_rope(q, rope, m) * apply_rope(k, rope, n)).sum().item<double>();
  };
  EXPECT_NEAR(dot_at(7, 3), dot_at(20, 16), 1e-4);
  EXPECT_NEAR(apply_rope(q, rope, 9).norm().item<double>(), q.norm().item<double>(), 1e-5);
}

TEST(Layers, YarnCorrectionRangeAndMscale) {
  ModelConfig c;
  c.qk_rope_head_dim = 64;
  c.rope_theta = 1e4;
  c.rope_scaling.type = "yarn";
  c.rope_scaling.factor = 40;
  c.rope_scaling.original_max_position_embeddings = 4096;
  c.max_position_embeddings = 163840;
  auto [low, high] = yarn_correction_range(c);
  EXPECT_EQ(low, 10);
  EXPECT_EQ(high, 23);
  EXPECT_NEAR(yarn_mscale(40, 1.0), 1.368888, 1e-6);
  EXPECT_NEAR(yarn_mscale(40, 1.0) * yarn_mscale(40, 1.0), 1.873854, 1e-6);
  EXPECT_NEAR(yarn_mscale(40, 0.707), 1.260804, 1e-6);
  RopeTables t = make_rope_tables(c, 2);
  // Position 1: the angle is the frequency itself. Pairs <= 10 unchanged, pairs >= 23 divided by 40.
  for (int i : {0, 10, 23, 31}) {
    double w = std::pow(1e4, -2.0 * i / 64);
    double expect = i <= 10 ? w : w / 40;
    EXPECT_NEAR(std::atan2(t.sin[1][i].item<double>(), t.cos[1][i].item<double>()), expect, 1e-6) << i;
  }
  c.max_position_embeddings = 4096;  // no extension: plain RoPE
  EXPECT_NEAR(make_rope_tables(c, 2).softmax_scale, 1 / std::sqrt(static_cast<double>(c.qk_head_dim())), 1e-12);
}

TEST(Mla, AbsorbedEqualsNaiveInDouble) {
  ModelConfig c = tiny();
  MlaAttention attn(c);
  init_weights(*attn, 0.2, 3);
  attn->to(at::kDouble);
  RopeTables rope = make_rope_tables(c, 64);
  at::Tensor x = at::randn({2, 9, c.hidden_size}, at::kDouble);
  at::Tensor a = attn(x, rope, 0, nullptr, false), b = attn(x, rope, 0, nullptr, true);
  EXPECT_LT((a - b).abs().max().item<double>(), 1e-10);
}

TEST(Model, KvCacheDecodingEqualsFullForward) {
  ModelConfig c = tiny(3);
  auto m = make(c, 1, /*dbl=*/true);
  m->eval();
  at::NoGradGuard ng;
  at::Tensor tokens = random_tokens(2, 20, c.vocab_size, 5);
  at::Tensor full = m->forward(tokens);
  for (CacheMode mode : {CacheMode::kLatentAbsorbed, CacheMode::kLatentExpanded, CacheMode::kFullKv}) {
    const int imode = static_cast<int>(mode);
    KvCache one = m->make_cache(2, 20, mode);
    std::vector<at::Tensor> steps;
    for (int64_t t = 0; t < 20; ++t) steps.push_back(m->forward_cached(tokens.narrow(1, t, 1), one));
    EXPECT_LT((at::cat(steps, 1) - full).abs().max().item<double>(), 1e-9) << "mode " << imode;
    KvCache chunked = m->make_cache(2, 20, mode);  // 7 + 13 prefill
    at::Tensor a = m->forward_cached(tokens.narrow(1, 0, 7), chunked);
    at::Tensor b = m->forward_cached(tokens.narrow(1, 7, 13), chunked);
    EXPECT_LT((at::cat({a, b}, 1) - full).abs().max().item<double>(), 1e-9) << "mode " << imode;
  }
  // The latent cache holds d_c + d_r values per token per layer; the full cache H (d_qk + d_v).
  const int64_t L = c.num_hidden_layers, H = c.num_attention_heads;
  EXPECT_EQ(m->make_cache(1, 10).bytes(), 10 * L * (c.kv_lora_rank + c.qk_rope_head_dim) * 8);
  EXPECT_EQ(m->make_cache(1, 10, CacheMode::kFullKv).bytes(), 10 * L * H * (c.qk_head_dim() + c.v_head_dim) * 8);
}

TEST(Model, IsCausal) {
  ModelConfig c = tiny();
  // float64: the MoE groups tokens by expert, so changing later tokens changes the matmul shapes of
  // earlier ones; differences stay at the float64 rounding floor.
  auto m = make(c, 2, /*dbl=*/true);
  m->eval();
  at::NoGradGuard ng;
  at::Tensor a = random_tokens(1, 16, c.vocab_size, 1), b = a.clone();
  b.narrow(1, 10, 6).copy_(random_tokens(1, 6, c.vocab_size, 9));
  at::Tensor la = m->forward(a), lb = m->forward(b);
  EXPECT_LT((la.narrow(1, 0, 10) - lb.narrow(1, 0, 10)).abs().max().item<double>(), 1e-12);
  EXPECT_GT((la.narrow(1, 10, 6) - lb.narrow(1, 10, 6)).abs().max().item<double>(), 0.0);
  // MTP slot j depends on tokens <= j + 1 only (its own input), not on later tokens.
  at::Tensor ha = m->hidden(a), hb = m->hidden(b);
  auto ma = m->mtp_logits(a, ha), mb = m->mtp_logits(b, hb);
  EXPECT_LT((ma[0].narrow(1, 0, 9) - mb[0].narrow(1, 0, 9)).abs().max().item<double>(), 1e-12);
}

// The fused single-token step (decode_fused.cpp) against the module path, in float32: one token at a
// time through decode_step_fused must give forward()'s logits, for the configurations whose code paths
// differ (q_lora or not, dense and MoE layers, sigmoid + groups or softmax routing, shared experts or
// none), and left-padded rows must equal their unpadded sequences decoded alone.
TEST(Model, FusedDecodeStepEqualsModulePath) {
  std::vector<std::pair<std::string, ModelConfig>> configs;
  configs.push_back({"tiny", tiny(3)});
  ModelConfig micro = model_config_from_preset("micro");
  micro.num_hidden_layers = 3;
  micro.max_position_embeddings = 64;
  configs.push_back({"micro (groups)", micro});
  ModelConfig v2 = tiny(2);
  v2.q_lora_rank = 0;
  v2.scoring_func = "softmax";
  v2.n_group = 1;
  v2.topk_group = 1;
  v2.n_shared_experts = 0;
  configs.push_back({"no q_lora, softmax, no shared", v2});
  for (const auto& [name, c] : configs) {
    auto m = make(c, 4);
    m->eval();
    at::NoGradGuard ng;
    const int64_t B = 2, S = 12;
    at::Tensor tokens = random_tokens(B, S, c.vocab_size, 11);
    at::Tensor full = m->forward(tokens);
    KvCache cache = m->make_cache(B, S);
    std::vector<at::Tensor> steps;
    for (int64_t t = 0; t < S; ++t) {
      at::Tensor l = m->decode_step_fused(tokens.narrow(1, t, 1), cache);
      ASSERT_TRUE(l.defined()) << name << ": the fused step did not apply";
      steps.push_back(l);
    }
    EXPECT_EQ(cache.len, S);
    const double scale = full.abs().max().item<double>();
    EXPECT_LT((at::cat(steps, 1) - full).abs().max().item<double>(), 1e-4 * scale) << name;
    // Several tokens per step (a prompt in chunks of 5, 4 and 3): each sees the chunk's earlier tokens.
    KvCache chunked = m->make_cache(B, S);
    std::vector<at::Tensor> chunks;
    for (auto [from, n] : {std::pair<int64_t, int64_t>{0, 5}, {5, 4}, {9, 3}}) {
      at::Tensor l = m->decode_step_fused(tokens.narrow(1, from, n), chunked);
      ASSERT_TRUE(l.defined()) << name << ": the fused step did not take " << n << " tokens";
      EXPECT_EQ(l.sizes(), (std::vector<int64_t>{B, n, c.vocab_size}));
      chunks.push_back(l);
    }
    EXPECT_EQ(chunked.len, S);
    EXPECT_LT((at::cat(chunks, 1) - full).abs().max().item<double>(), 1e-4 * scale) << name << " (chunks)";
  }
  // Left padding: row 1 holds 4 pad positions, then a sequence of 8; it must equal that sequence alone.
  ModelConfig c = configs[1].second;
  auto m = make(c, 5);
  m->eval();
  at::NoGradGuard ng;
  at::Tensor seq = random_tokens(1, 8, c.vocab_size, 12), other = random_tokens(1, 12, c.vocab_size, 13);
  at::Tensor batch = at::cat({other, at::cat({at::zeros({1, 4}, at::kLong), seq}, 1)}, 0);  // [2, 12]
  at::Tensor pad = at::zeros({2, 12}, at::kBool);
  pad[1].narrow(0, 0, 4).fill_(true);
  auto st = m->start_decode(2, 12, CacheMode::kLatentAbsorbed, pad);
  auto alone = m->start_decode(1, 8, CacheMode::kLatentAbsorbed, at::Tensor());
  std::vector<at::Tensor> padded_steps, alone_steps;
  for (int64_t t = 0; t < 12; ++t) {
    at::Tensor l = m->decode(batch.narrow(1, t, 1), *st);
    if (t >= 4) padded_steps.push_back(l[1]);
  }
  for (int64_t t = 0; t < 8; ++t) alone_steps.push_back(m->decode(seq.narrow(1, t, 1), *alone)[0]);
  at::Tensor a = at::cat(padded_steps, 0), b = at::cat(alone_steps, 0);
  EXPECT_LT((a - b).abs().max().item<double>(), 1e-4 * b.abs().max().item<double>());
  // A prompt prefilled into one row of a running batch (the server's newcomer), its positions before
  // marked as padding: the same logits as the prompt alone.
  auto cohort = m->start_decode(2, 12, CacheMode::kLatentAbsorbed, at::Tensor());
  m->decode(other.narrow(1, 0, 6), *cohort->rows_view(0, 1, 0));
  cohort->set_row_padding(1, 6 - 3);
  at::Tensor joined = m->decode(seq.narrow(1, 0, 3), *cohort->rows_view(1, 1, 6 - 3));
  auto alone3 = m->start_decode(1, 8, CacheMode::kLatentAbsorbed, at::Tensor());
  at::Tensor single = m->decode(seq.narrow(1, 0, 3), *alone3);
  EXPECT_LT((joined - single).abs().max().item<double>(), 1e-4 * single.abs().max().item<double>());
  // Training mode, grad mode or another dtype: not applicable, the caller takes the module path.
  KvCache cache = m->make_cache(1, 4);
  m->train();
  EXPECT_FALSE(m->decode_step_fused(seq.narrow(1, 0, 1), cache).defined());
  m->eval();
  {
    at::AutoGradMode grad(true);
    EXPECT_FALSE(m->decode_step_fused(seq.narrow(1, 0, 1), cache).defined());
  }
  EXPECT_FALSE(m->decode_step_fused(at::zeros({1, DeepseekV3Impl::kFusedMaxTokens + 1}, at::kLong), cache).defined());
  EXPECT_EQ(cache.len, 0);
}

// Several rows share the fused step among threads (experts, attention rows, the output head), each
// expert's rows summed into the residual on the calling thread in expert order: single-token steps
// give the same bits on one thread and on two. A prompt chunk of more rows than the few-row kernels take
// in the step (decode_rows_batch_tokens()) goes through OpenBLAS's sgemm, whose blocking follows its own
// thread count: equal within float rounding.
TEST(Model, FusedDecodeStepIsTheSameOnOneAndTwoThreads) {
  const ModelConfig c = micro3();
  auto m = make(c, 6);
  m->eval();
  at::NoGradGuard ng;
  const int64_t B = 6;
  const at::Tensor tokens = random_tokens(B, 12, c.vocab_size, 14);
  const int before = at::get_num_threads();
  std::vector<at::Tensor> steps, chunks;
  for (int threads : {1, 2}) {
    at::set_num_threads(threads);
    KvCache cache = m->make_cache(B, 12), chunked = m->make_cache(B, 12);
    std::vector<at::Tensor> out;
    for (int64_t t = 0; t < 12; ++t) out.push_back(m->decode_step_fused(tokens.narrow(1, t, 1), cache));
    out.push_back(m->decode_step_fused(tokens.narrow(1, 0, 8), chunked));
    for (const at::Tensor& l : out) ASSERT_TRUE(l.defined());
    chunks.push_back(out.back());
    out.pop_back();
    steps.push_back(at::cat(out, 1));
  }
  at::set_num_threads(before);
  EXPECT_TRUE(at::equal(steps[0], steps[1])) << "max difference " << (steps[0] - steps[1]).abs().max().item<double>();
  EXPECT_LT((chunks[0] - chunks[1]).abs().max().item<double>(), 1e-5 * chunks[0].abs().max().item<double>());
  EXPECT_LT((chunks[0] - steps[0].narrow(1, 0, 8)).abs().max().item<double>(), 1e-4 * chunks[0].abs().max().item<double>());
}

// decode_rows (the server's step with folded prompts): rows with different token counts in one step,
// each ending at the state's position. Each row's logits are the bits it gets with no other row in the
// step (the step stays within decode_rows_batch_tokens(), computed row by row), and match the module
// path's over the row's tokens from position 0 (RoPE is relative; left padding hides the rest).
TEST(Model, DecodeRowsGivesEachRowWhatItGetsAlone) {
  const ModelConfig c = micro3();
  auto m = make(c, 9);
  m->eval();
  at::NoGradGuard ng;
  const CausalLm lm = m.ptr();
  ASSERT_GE(m->decode_rows_batch_tokens(), 16);
  std::mt19937 rng(3);
  auto tokens = [&](size_t n) {
    std::vector<int64_t> t(n);
    for (auto& x : t) x = static_cast<int64_t>(rng() % static_cast<unsigned>(c.vocab_size));
    return t;
  };
  // Step 1 at position 9: row 0 a 10-token prompt (positions 0-9), row 2 a 4-token one (6-9);
  // step 2 at position 10: rows 0 and 2 their next tokens, row 3 a 3-token prompt (8-10).
  const std::vector<int64_t> p0 = tokens(10), p2 = tokens(4), p3 = tokens(3), next0 = tokens(1), next2 = tokens(1);
  struct Feed {
    int64_t row, pad;
    std::vector<int64_t> t;
  };
  const std::vector<std::vector<Feed>> steps = {{{0, 0, p0}, {2, 6, p2}}, {{0, 0, next0}, {2, 6, next2}, {3, 8, p3}}};
  auto run = [&](const std::vector<int64_t>& only) {  // the steps over the listed rows; logits per (step, row)
    auto state = lm->start_decode(4, 16, CacheMode::kLatentAbsorbed, at::Tensor());
    std::map<std::pair<int, int64_t>, at::Tensor> out;
    for (size_t k = 0; k < steps.size(); ++k) {
      std::vector<int64_t> rows;
      std::vector<std::vector<int64_t>> feed;
      for (const Feed& f : steps[k])
        if (std::count(only.begin(), only.end(), f.row)) {
          if (f.t.size() > 1) state->set_row_padding(f.row, f.pad);
          rows.push_back(f.row);
          feed.push_back(f.t);
        }
      if (rows.empty()) continue;
      auto view = state->rows_view(0, 4, 9 + static_cast<int64_t>(k));
      const at::Tensor l = lm->decode_rows(rows, feed, *view);
      EXPECT_TRUE(l.defined());
      EXPECT_EQ(view->len, 10 + static_cast<int64_t>(k));
      for (size_t i = 0; i < rows.size(); ++i) out[{static_cast<int>(k), rows[i]}] = l[static_cast<int64_t>(i)].clone();
    }
    return out;
  };
  const auto together = run({0, 2, 3});
  for (int64_t row : {0, 2, 3}) {
    const auto alone = run({row});
    for (const auto& [key, logits] : alone) EXPECT_TRUE(at::equal(logits, together.at(key))) << "step " << key.first << " row " << row;
  }
  // The module path from position 0: row 2's prompt and next token, row 3's prompt.
  auto reference = [&](std::vector<int64_t> seq) { return m->forward(at::tensor(seq, at::kLong).unsqueeze(0))[0][-1]; };
  std::vector<int64_t> seq2 = p2;
  const at::Tensor r2a = reference(seq2);
  seq2.push_back(next2[0]);
  const at::Tensor r2b = reference(seq2), r3 = reference(p3);
  for (auto [got, want] : {std::pair{together.at({0, 2}), r2a}, {together.at({1, 2}), r2b}, {together.at({1, 3}), r3}})
    EXPECT_LT((got - want).abs().max().item<double>(), 1e-4 * want.abs().max().item<double>());
  // Nothing to do for a model without it, and a row outside the state is refused.
  auto state = lm->start_decode(2, 16, CacheMode::kLatentAbsorbed, at::Tensor());
  EXPECT_THROW(lm->decode_rows({5}, {{1}}, *state), Error);
  CausalLm gpt2 = build_model(model_config_from_preset("gpt2-tiny"));
  gpt2->eval();
  auto gstate = gpt2->start_decode(1, 8, CacheMode::kLatentAbsorbed, at::Tensor());
  EXPECT_FALSE(gpt2->decode_rows({0}, {{1}}, *gstate).defined());
  EXPECT_EQ(gpt2->decode_rows_batch_tokens(), 0);
}

// bfloat16 decode weights (serve --weights bf16): half the bytes of the float32 linears; with weights
// that bfloat16 holds exactly the step gives float32's logits bit for bit (the same products in the same
// order, only read from half the bytes, where float32 takes the few-row kernels: AVX2 and AVX-512); with any weights, float32's within bfloat16 rounding; and a
// weight changed after the copy was made is read in float32 again.
TEST(Model, Bf16DecodeWeightsGiveTheFloatLogitsFromHalfTheBytes) {
  const ModelConfig c = micro3();
  auto m = make(c, 7);
  m->eval();
  at::NoGradGuard ng;
  const int64_t B = 2, S = 10;
  const at::Tensor tokens = random_tokens(B, S, c.vocab_size, 15);
  auto steps = [&] { return fused_steps(m, tokens); };
  // Random float32 weights: bfloat16 rounding, a small change.
  const at::Tensor f32 = steps();
  const int64_t kept = m->keep_bf16_weights();
  EXPECT_EQ(kept, 3 * 5 + 3 + 2 * 3 * (c.n_routed_experts + 1) + 1);  // attention 5 each, dense MLP, 2 MoE layers, head
  int64_t f32_bytes = 0, bf16_bytes = 0;
  for (const auto& [ptr, l] : m->bf16_linears) {
    EXPECT_EQ(l.w.scalar_type(), at::kBFloat16);
    bf16_bytes += l.w.numel() * 2;
    f32_bytes += l.w.numel() * 4;
  }
  EXPECT_EQ(2 * bf16_bytes, f32_bytes);
  const at::Tensor bf16 = steps();
  const double scale = f32.abs().max().item<double>();
  EXPECT_FALSE(at::equal(bf16, f32));
  // Per position within 2% of the logits' scale (measured 0.6-0.8%), but where rounding tips the router
  // to another expert (a near tie; measured at 1 of 20 positions here): 80% of them at least.
  int64_t close = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < S; ++t) close += (bf16[b][t] - f32[b][t]).abs().max().item<double>() < 2e-2 * scale;
  EXPECT_GE(close, B * S * 8 / 10);
  EXPECT_LT((bf16 - f32).abs().mean().item<double>(), 3e-2 * f32.abs().mean().item<double>());
  // A weight changed since (its version moved; here multiplied by one): float32 again, bit for bit.
  for (auto& p : m->parameters())
    if (m->bf16_linears.count(p.data_ptr())) p.mul_(1.0f);
  EXPECT_TRUE(at::equal(steps(), f32));
  // Weights that bfloat16 holds exactly: the same logits as float32, bit for bit.
  for (auto& p : m->parameters()) p.copy_(p.to(at::kBFloat16).to(at::kFloat));
  m->bf16_linears.clear();
  const at::Tensor exact = steps();
  m->keep_bf16_weights();
  EXPECT_TRUE(at::equal(steps(), exact)) << "max difference " << (steps() - exact).abs().max().item<double>();
}

TEST(Model, PackedWeightsDecodeTheSameAndKeepTheirBf16Copies) {
  // pack_weights moves every parameter into one 2 MB-aligned block, in module order, 64-byte aligned each:
  // the logits do not change (float32 and bfloat16 copies alike, bit for bit), the copies follow their
  // weights, and a weight changed afterwards still sends the step back to float32.
  const ModelConfig c = micro3();
  auto m = make(c, 9);
  m->eval();
  at::NoGradGuard ng;
  const int64_t B = 2, S = 6;
  const at::Tensor tokens = random_tokens(B, S, c.vocab_size, 16);
  auto steps = [&] { return fused_steps(m, tokens); };
  const at::Tensor f32 = steps(), module_path = m->forward(tokens);
  m->keep_bf16_weights();
  const at::Tensor bf16 = steps();
  ASSERT_FALSE(at::equal(bf16, f32));
  int64_t want = 0;
  for (const auto& p : m->parameters()) want += (p.numel() + 15) / 16 * 16 * 4;
  EXPECT_EQ(m->pack_weights(), want);
  const auto base = reinterpret_cast<uintptr_t>(m->parameters().front().data_ptr());
  EXPECT_EQ(base % (2 << 20), 0u);
  uintptr_t next = base;
  for (const auto& p : m->parameters()) {  // in module order, each on its own cache lines
    const auto at = reinterpret_cast<uintptr_t>(p.data_ptr());
    EXPECT_EQ(at, next);
    next = at + static_cast<uintptr_t>((p.numel() + 15) / 16 * 16 * 4);
  }
  EXPECT_EQ(static_cast<int64_t>(m->bf16_linears.size()), 3 * 5 + 3 + 2 * 3 * (c.n_routed_experts + 1) + 1);
  std::set<const void*> params;
  for (const auto& p : m->parameters()) params.insert(p.data_ptr());
  for (const auto& [key, copy] : m->bf16_linears) EXPECT_EQ(params.count(key), 1u);  // keyed by the moved weights
  EXPECT_TRUE(at::equal(steps(), bf16));
  for (auto& p : m->parameters()) p.mul_(1.0f);  // changed since: float32 again
  EXPECT_TRUE(at::equal(steps(), f32));
  m->bf16_linears.clear();
  EXPECT_TRUE(at::equal(steps(), f32));
  EXPECT_TRUE(at::equal(m->forward(tokens), module_path));
}

TEST(Routing, InvariantsAndGroupLimits) {
  ModelConfig c = model_config_from_preset("micro");  // 16 experts in 4 groups, top-2 groups, K = 4
  MoeGate gate(c);
  init_weights(*gate, 0.5, 4);
  at::Tensor x = at::randn({50, c.hidden_size});
  Routing r = gate(x);
  const int64_t per_group = c.n_routed_experts / c.n_group;
  for (int64_t t = 0; t < 50; ++t) {
    std::set<int64_t> experts, groups;
    for (int64_t k = 0; k < c.num_experts_per_tok; ++k) {
      experts.insert(r.indices[t][k].item<int64_t>());
      groups.insert(r.indices[t][k].item<int64_t>() / per_group);
    }
    EXPECT_EQ(static_cast<int64_t>(experts.size()), c.num_experts_per_tok);
    EXPECT_LE(static_cast<int64_t>(groups.size()), c.topk_group);
    EXPECT_NEAR(r.weights[t].sum().item<double>(), c.routed_scaling_factor, 1e-5);
  }
  // The chosen groups are those with the largest top-2 sums.
  at::Tensor g = r.scores.view({50, c.n_group, per_group});
  at::Tensor gscore = std::get<0>(g.topk(2, -1)).sum(-1);
  at::Tensor best = std::get<1>(gscore.topk(c.topk_group, -1));
  for (int64_t t = 0; t < 50; ++t)
    for (int64_t k = 0; k < c.num_experts_per_tok; ++k) {
      int64_t grp = r.indices[t][k].item<int64_t>() / per_group;
      EXPECT_TRUE((best[t] == grp).any().item<bool>());
    }
}

TEST(Routing, BiasChangesSelectionNotWeights) {
  ModelConfig c = tiny();
  MoeGate gate(c);
  init_weights(*gate, 0.5, 4);
  gate->e_score_correction_bias[5] = 100.0;
  at::Tensor x = at::randn({20, c.hidden_size});
  Routing r = gate(x);
  for (int64_t t = 0; t < 20; ++t) {
    EXPECT_TRUE((r.indices[t] == 5).any().item<bool>());
    // weight of expert 5 = sigmoid score / sum of selected sigmoid scores * route_scale
    at::Tensor s = r.scores[t].index_select(0, r.indices[t]);
    int64_t slot = (r.indices[t] == 5).nonzero().item<int64_t>();
    EXPECT_NEAR(r.weights[t][slot].item<double>(),
                (r.scores[t][5] / s.sum()).item<double>() * c.routed_scaling_factor, 1e-5);
  }
  EXPECT_FALSE(gate->e_score_correction_bias.requires_grad());
  for (const auto& p : gate->named_parameters()) EXPECT_EQ(p.key().find("bias"), std::string::npos);
}

TEST(Routing, BiasUpdateMovesAgainstTheLoadError) {
  ModelConfig c = tiny();
  DeepseekMoe moe(c);
  init_weights(*moe, 0.1, 1);
  moe->train();
  moe(at::randn({2, 8, c.hidden_size}));
  at::Tensor load = moe->load_counts().clone();
  const double mean = load.mean().item<double>();
  at::Tensor before = moe->gate->e_score_correction_bias.clone();
  moe->update_bias(0.001);
  at::Tensor delta = moe->gate->e_score_correction_bias - before;
  for (int64_t e = 0; e < c.n_routed_experts; ++e) {
    double l = load[e].item<double>(), d = delta[e].item<double>();
    if (l > mean) EXPECT_NEAR(d, -0.001, 1e-9);
    else if (l < mean) EXPECT_NEAR(d, 0.001, 1e-9);
    else EXPECT_EQ(d, 0.0);
  }
  EXPECT_EQ(moe->load_counts().sum().item<double>(), 0.0);  // counts reset
}

TEST(Routing, BiasUpdatesBalanceASkewedRouter) {
  ModelConfig c = tiny();
  DeepseekMoe moe(c);
  init_weights(*moe, 0.02, 1);
  {
    at::NoGradGuard ng;
    moe->gate->weight.select(0, 0).fill_(0.3);  // expert 0 favoured by every token
    moe->gate->weight.select(0, 1).fill_(0.3);
  }
  moe->train();
  // A fixed batch: drawn from the global stream (seeded at random in every process) this test saw
  // mean-of-last-20 ratios from 1.4 to 2.06 against the bound of 2 and failed now and then.
  at::manual_seed(3);
  at::Tensor x = at::randn({16, 32, c.hidden_size}).abs();
  moe(x);
  double first = moe->update_bias(0.0);
  // Near balance the saturated router flips groups of tokens together, so one step's ratio
  // oscillates; `last` is the mean over the final 20 updates.
  double last = 0;
  for (int i = 0; i < 200; ++i) {
    moe(x);
    const double r = moe->update_bias(0.01);
    if (i >= 180) last += r / 20.0;
  }
  EXPECT_GT(first, 3.0);
  EXPECT_LT(last, first / 2) << "first " << first << ", mean of the last 20 " << last;
}

TEST(Routing, SequenceBalanceLossIsAlphaUnderUniformRouting) {
  // E = 4, K = 2, S = 4: each token picks 2 experts so that every expert is picked twice per
  // sequence (f_i = 1), and all scores are equal (P_i = 1/E): the loss is alpha * sum_i 1/E = alpha.
  at::Tensor scores = at::full({2, 4, 4}, 0.3, at::kDouble).requires_grad_();
  at::Tensor idx = at::tensor({0, 1, 2, 3, 0, 1, 2, 3}, at::kLong).view({1, 4, 2}).expand({2, 4, 2}).contiguous();
  at::Tensor l = sequence_balance_loss(scores, idx, 4, 1e-4, true);
  EXPECT_NEAR(l.item<double>(), 1e-4, 1e-15);
  l.backward();
  EXPECT_TRUE(scores.grad().defined());  // gradient flows through P only
}

TEST(Moe, DispatchEqualsDenseReference) {
  ModelConfig c = tiny();
  DeepseekMoe moe(c);
  init_weights(*moe, 0.2, 6);
  moe->to(at::kDouble);
  moe->eval();
  at::Tensor x = at::randn({2, 5, c.hidden_size}, at::kDouble);
  at::Tensor y = moe(x);
  // Dense: every expert on every token, masked by the routing weights.
  at::Tensor flat = x.view({10, c.hidden_size});
  Routing r = moe->gate(flat);
  at::Tensor ref = moe->shared_experts(flat);
  for (int64_t e = 0; e < c.n_routed_experts; ++e) {
    at::Tensor w = (r.weights * (r.indices == e).to(at::kFloat)).sum(-1, true).to(at::kDouble);
    ref = ref + w * moe->experts[e]->as<SwiGluMlpImpl>()->forward(flat);
  }
  EXPECT_LT((y.view({10, -1}) - ref).abs().max().item<double>(), 1e-10);
}

TEST(Model, StateDictUsesHuggingFaceNames) {
  DeepseekV3 m(model_config_from_preset("nano"));
  auto state = model_state(*m);
  for (const char* k : {"model.embed_tokens.weight", "model.layers.0.self_attn.q_a_proj.weight",
                        "model.layers.0.self_attn.q_a_layernorm.weight", "model.layers.0.self_attn.kv_a_proj_with_mqa.weight",
                        "model.layers.0.self_attn.kv_a_layernorm.weight", "model.layers.0.self_attn.kv_b_proj.weight",
                        "model.layers.0.self_attn.o_proj.weight", "model.layers.0.mlp.gate_proj.weight",
                        "model.layers.1.mlp.gate.weight", "model.layers.1.mlp.gate.e_score_correction_bias",
                        "model.layers.1.mlp.experts.7.down_proj.weight", "model.layers.1.mlp.shared_experts.up_proj.weight",
                        "model.layers.4.enorm.weight", "model.layers.4.hnorm.weight", "model.layers.4.eh_proj.weight",
                        "model.layers.4.shared_head.norm.weight", "model.layers.4.mlp.gate.weight", "model.norm.weight",
                        "lm_head.weight"})
    EXPECT_TRUE(state.count(k)) << k;
  EXPECT_EQ(state.at("model.layers.0.self_attn.kv_a_proj_with_mqa.weight").sizes(), (std::vector<int64_t>{40, 128}));
}

TEST(Model, SaveLoadRoundTripAndMismatchRefused) {
  TempDir dir;
  ModelConfig c = tiny();
  auto m = make(c, 3);
  save_pretrained(dir.path, *m);
  auto back = load_pretrained(dir.path);
  at::Tensor tokens = random_tokens(1, 8, c.vocab_size, 2);
  m->eval();
  back->eval();
  EXPECT_TRUE(at::equal(m->forward(tokens), back->forward(tokens)));
  ModelConfig other = c;
  other.hidden_size = 64;
  DeepseekV3 wrong(other);
  EXPECT_THROW_MSG(load_model_state(*wrong, model_state(*m), "ck"), CheckpointError, "has shape");
}

TEST(Mtp, ZeroWeightGivesTheGradientsOfAModelWithoutMtp) {
  ModelConfig c = tiny();
  ModelConfig no_mtp = c;
  no_mtp.num_nextn_predict_layers = 0;
  auto a = make(c, 8, true), b = make(no_mtp, 8, true);
  // Same weights for the shared parts.
  {
    at::NoGradGuard ng;
    auto sb = model_state(*b);
    for (auto& p : a->named_parameters())
      if (sb.count(p.key())) p.value().copy_(sb.at(p.key()));
  }
  a->set_aux_alpha(0);
  b->set_aux_alpha(0);
  at::Tensor tokens = random_tokens(2, 12, c.vocab_size, 3);
  a->loss(tokens, 0.0).total.backward();
  b->loss(tokens.narrow(1, 0, 11), 0.0).total.backward();
  for (auto& p : b->named_parameters()) {
    at::Tensor ga = a->named_parameters()[p.key()].grad(), gb = p.value().grad();
    ASSERT_EQ(ga.defined(), gb.defined()) << p.key();  // idle experts get no gradient in either
    if (gb.defined()) {
      EXPECT_LT((ga - gb).abs().max().item<double>(), 1e-12) << p.key();
    }
  }
}

TEST(Mtp, TotalLossIsMainPlusLambdaMtpAndSlotsPredictTwoAhead) {
  ModelConfig c = tiny();
  auto m = make(c, 9);
  m->set_aux_alpha(0);
  at::Tensor tokens = random_tokens(2, 11, c.vocab_size, 4);  // S = 9, plus 1 + D
  LossOutput out = m->loss(tokens, 0.3);
  EXPECT_NEAR(out.total.item<double>(), out.main.item<double>() + 0.3 * out.mtp.item<double>(), 1e-5);
  at::Tensor h = m->hidden(tokens.narrow(1, 0, 9));
  auto mtp = m->mtp_logits(tokens, h);
  ASSERT_EQ(mtp.size(), 1u);
  EXPECT_EQ(mtp[0].size(1), 9);  // one slot per main position when the row carries D extra tokens
  // Slot j predicts token j + 2: the MTP loss equals CE(mtp logits, tokens[2:11]).
  at::Tensor ce = at::cross_entropy_loss(mtp[0].reshape({-1, c.vocab_size}), tokens.narrow(1, 2, 9).reshape({-1}));
  EXPECT_NEAR(ce.item<double>(), out.mtp.item<double>(), 1e-5);
  // With only S + 1 tokens, D = 1 gets S - 1 slots.
  EXPECT_EQ(m->mtp_logits(tokens.narrow(1, 0, 10), m->hidden(tokens.narrow(1, 0, 9)))[0].size(1), 8);
}

TEST(Model, GradientMatchesFiniteDifferences) {
  ModelConfig c = tiny(2);
  auto m = make(c, 11, true);
  m->set_aux_alpha(0);
  at::Tensor tokens = random_tokens(1, 8, c.vocab_size, 6);
  m->loss(tokens, 0.3).total.backward();
  // A few coordinates of MLA, RMSNorm and MoE weights; routing is piecewise constant, and these
  // small steps do not cross a top-K tie at this point.
  for (const char* name : {"model.layers.0.self_attn.kv_b_proj.weight", "model.layers.1.self_attn.q_a_layernorm.weight",
                           "model.layers.1.mlp.experts.3.up_proj.weight", "model.layers.1.mlp.shared_experts.down_proj.weight",
                           "model.layers.2.eh_proj.weight"}) {
    at::Tensor p = m->named_parameters()[name];
    at::Tensor g = p.grad().reshape({-1});
    at::Tensor flat = p.detach().view({-1});
    for (int64_t i : {int64_t(0), flat.numel() / 2, flat.numel() - 1}) {
      const double eps = 1e-6, orig = flat[i].item<double>();
      at::NoGradGuard ng;
      flat[i] = orig + eps;
      double up = m->loss(tokens, 0.3).total.item<double>();
      flat[i] = orig - eps;
      double down = m->loss(tokens, 0.3).total.item<double>();
      flat[i] = orig;
      double fd = (up - down) / (2 * eps);
      EXPECT_NEAR(g[i].item<double>(), fd, 1e-6 + 1e-4 * std::abs(fd)) << name << "[" << i << "]";
    }
  }
}

TEST(Model, OverfitsOneBatch) {
  ModelConfig c = tiny(2);
  DeepseekV3 m(c);
  init_weights(*m, 0.02, 0);
  at::Tensor tokens = random_tokens(2, 18, c.vocab_size, 12);
  std::vector<at::Tensor> params = m->parameters();
  for (auto& p : params) p.set_requires_grad(true);
  double first = 0, last = 0;
  // Plain Adam via our trainer's optimizer would couple the tests; use SGD-free torch ops here.
  std::vector<at::Tensor> m1, m2;
  for (auto& p : params) m1.push_back(at::zeros_like(p)), m2.push_back(at::zeros_like(p));
  for (int step = 1; step <= 150; ++step) {
    for (auto& p : params) p.mutable_grad() = at::Tensor();
    auto out = m->loss(tokens, 0.3);
    out.total.backward();
    if (step == 1) first = out.main.item<double>();
    last = out.main.item<double>();
    at::NoGradGuard ng;
    for (size_t i = 0; i < params.size(); ++i) {
      if (!params[i].grad().defined()) continue;
      m1[i].mul_(0.9).add_(params[i].grad(), 0.1);
      m2[i].mul_(0.99).addcmul_(params[i].grad(), params[i].grad(), 0.01);
      params[i].addcdiv_(m1[i] / (1 - std::pow(0.9, step)), (m2[i] / (1 - std::pow(0.99, step))).sqrt() + 1e-8, -1e-2);
    }
  }
  EXPECT_NEAR(first, std::log(64.0), 0.3);  // initial loss ~ ln V
  EXPECT_LT(last, 0.1);
}

TEST(Generate, BatchedLeftPaddedEqualsOneByOne) {
  ModelConfig c = tiny(2);
  auto m = make(c, 13, /*dbl=*/true);
  SampleOptions o;
  o.max_new_tokens = 6;  // greedy
  std::vector<std::vector<int64_t>> prompts = {{5, 9, 2, 7, 1}, {3, 3}, {8, 1, 4}};
  auto batched = generate(m.ptr(), prompts, o);
  for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(batched[i], generate(m.ptr(), {prompts[i]}, o)[0]) << "row " << i;
  // Stop tokens end a row early.
  o.stop_tokens = {batched[1][1]};
  auto stopped = generate(m.ptr(), {prompts[1]}, o);
  EXPECT_EQ(stopped[0].size(), 2u);
}

TEST(Generate, SamplingRules) {
  at::Tensor logits = at::tensor({2.0, 1.0, 0.5, -1.0}, at::kDouble);
  SampleOptions o;
  EXPECT_EQ(sample_token(logits, {}, o, 0.9), 0);  // greedy
  o.repetition_penalty = 3.0;                      // 2.0 -> 0.667 < 1.0: token 1 wins
  EXPECT_EQ(sample_token(logits, {0}, o, 0.0), 1);
  o.repetition_penalty = 1.0;
  o.temperature = 1.0;
  o.top_k = 1;
  for (double u : {0.0, 0.5, 0.999}) EXPECT_EQ(sample_token(logits, {}, o, u), 0);
  o.top_k = 0;
  // softmax(2, 1, 0.5, -1) = (0.6095, 0.2242, 0.1360, 0.0303): top_p 0.7 keeps {0, 1}; u = 0.8
  // lands in token 1's share of the renormalised mass (0.6095 / 0.8337 = 0.731 < 0.8).
  o.top_p = 0.7;
  EXPECT_EQ(sample_token(logits, {}, o, 0.8), 1);
  EXPECT_EQ(sample_token(logits, {}, o, 0.7), 0);
  for (double u = 0; u < 1; u += 0.01) EXPECT_LE(sample_token(logits, {}, o, u), 1);
  // Nothing truncated: evenly spaced u land on each token in proportion to its probability.
  o.top_p = 1.0;
  std::vector<int> hits(4, 0);
  const int n = 100000;
  for (int i = 0; i < n; ++i) ++hits[static_cast<size_t>(sample_token(logits, {}, o, (i + 0.5) / n))];
  const double expected[] = {0.609460, 0.224207, 0.135989, 0.030344};  // softmax(2, 1, 0.5, -1)
  for (int k = 0; k < 4; ++k) EXPECT_NEAR(hits[static_cast<size_t>(k)] / double(n), expected[k], 2e-5) << k;
}

TEST(Generate, SamplingEqualsTheSortedCdfInversion) {
  // The sampler selects without sorting the vocabulary; the definition sorts: probabilities (after
  // temperature and top-k) descending, ties by id, the shortest prefix with mass >= top_p, its CDF
  // renormalised and inverted at u (in id order when nothing is truncated). Large vocabularies (the
  // selection's rounds), ties, masked tokens.
  const auto reference = &dsforge::reference::sample_by_sorting;
  std::mt19937 rng(3);
  std::normal_distribution<double> normal(0.0, 2.0);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  int checked = 0;
  for (int64_t V : {5, 300, 4096}) {
    std::vector<double> logits(static_cast<size_t>(V));
    for (double& v : logits) v = std::round(normal(rng) * 4) / 4;  // quarter steps: many equal logits
    const at::Tensor t = at::tensor(logits, at::kDouble);
    for (double top_p : {1.0, 0.9, 0.5, 0.01})
      for (int64_t top_k : {0, 1, 3, 50}) {
        SampleOptions o;
        o.temperature = 0.7;
        o.top_p = top_p;
        o.top_k = top_k;
        for (int i = 0; i < 40; ++i) {
          const double u = i == 0 ? 0.0 : uniform(rng);
          EXPECT_EQ(sample_token(t, {}, o, u), reference(logits, o, u)) << "V=" << V << " top_p=" << top_p << " top_k=" << top_k << " u=" << u;
          ++checked;
        }
      }
  }
  EXPECT_EQ(checked, 3 * 4 * 4 * 40);
}

TEST(ModelInfo, MatchesSpecificationTable) {
  // DEEPSEEK.md §3.4: N_act 0.550M / 4.18M / 14.79M; train FLOPs/token with MTP 5.12M / 35.9M / 130.2M,
  // without 3.55M / 28.0M / 99.8M; latent cache 40 / 80 / 144 vs 160 / 640 / 896.
  struct Row { const char* name; int64_t S; double nact, f_mtp, f_no, mla, mha; };
  for (Row r : {Row{"nano", 128, 0.550, 5.12, 3.55, 40, 160}, Row{"micro", 256, 4.18, 35.9, 28.0, 80, 640},
                Row{"mini", 512, 14.79, 130.2, 99.8, 144, 896}}) {
    ModelInfo i = model_info(model_config_from_preset(r.name), r.S);
    EXPECT_NEAR(i.active_excl_embedding / 1e6, r.nact, 0.006) << r.name;
    EXPECT_NEAR(i.train_flops_per_token / 1e6, r.f_mtp, 0.06) << r.name;
    EXPECT_NEAR(i.train_flops_per_token_no_mtp / 1e6, r.f_no, 0.06) << r.name;
    EXPECT_EQ(i.kv_cache_mla, r.mla);
    EXPECT_EQ(i.kv_cache_mha, r.mha);
    int64_t sum = 0;
    for (const auto& [k, v] : i.breakdown) sum += v;
    EXPECT_EQ(sum, i.total + i.mtp) << r.name;
  }
}

TEST(Baselines, Gpt2SmallHasThePublishedParameterCount) {
  // GPT-2 small ("124M"): 124,439,808 parameters with the head tied to the token embedding.
  CausalLm g = build_model(model_config_from_preset("gpt2-small"));
  EXPECT_EQ(count_parameters(*g), 124439808);
  auto names = model_state(*g);
  for (const char* k : {"transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.ln_1.weight",
                        "transformer.h.0.attn.c_attn.weight", "transformer.h.0.attn.c_proj.bias",
                        "transformer.h.11.mlp.c_fc.weight", "transformer.h.11.mlp.c_proj.weight", "transformer.ln_f.bias"})
    EXPECT_TRUE(names.count(k)) << k;
  // HF GPT2Config names round-trip.
  ModelConfig back = model_config_from_json(model_config_to_json(g->config()), "gpt2.json");
  EXPECT_EQ(back.hidden_size, 768);
  EXPECT_EQ(back.model_type, "gpt2");
  EXPECT_THROW_MSG(model_config_from_json(R"({"model_type": "gpt2", "n_embd": 10, "n_head": 3})", "g.json"), ConfigError,
                   "'n_head' must divide n_embd");
}

namespace {
void check_decoder(const CausalLm& m, int64_t V) {
  at::NoGradGuard ng;
  m->eval();
  at::Tensor tokens = random_tokens(2, 12, V, 21);
  at::Tensor full = m->forward(tokens);
  auto st = m->start_decode(2, 12, CacheMode::kLatentAbsorbed, at::Tensor());
  at::Tensor a = m->decode(tokens.narrow(1, 0, 5), *st);
  std::vector<at::Tensor> steps{a};
  for (int64_t t = 5; t < 12; ++t) steps.push_back(m->decode(tokens.narrow(1, t, 1), *st));
  EXPECT_LT((at::cat(steps, 1) - full).abs().max().item<double>(), 1e-9);
  // Causality.
  at::Tensor b = tokens.clone();
  b.narrow(1, 8, 4).copy_(random_tokens(2, 4, V, 22));
  EXPECT_LT((m->forward(b).narrow(1, 0, 8) - full.narrow(1, 0, 8)).abs().max().item<double>(), 1e-12);
  // Batched, left-padded generation equals one prompt at a time.
  SampleOptions o;
  o.max_new_tokens = 5;
  std::vector<std::vector<int64_t>> prompts = {{1, 2, 3, 4, 5, 6}, {7, 8}, {9, 10, 11}};
  auto batched = generate(m, prompts, o);
  for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(batched[i], generate(m, {prompts[i]}, o)[0]) << "row " << i;
}
}  // namespace

TEST(Baselines, Gpt2DecodeCausalityAndBatching) {
  ModelConfig c = model_config_from_preset("gpt2-tiny");
  c.vocab_size = 40;
  c.num_hidden_layers = 2;
  c.hidden_size = 32;
  c.num_attention_heads = 4;
  c.intermediate_size = 128;
  CausalLm m = build_model(c);
  m->init_weights(0.2, 3);
  m->to(at::kDouble);
  check_decoder(m, c.vocab_size);
}

TEST(Baselines, LstmDecodeCausalityAndBatching) {
  ModelConfig c = model_config_from_preset("lstm-tiny");
  c.vocab_size = 40;
  c.hidden_size = 24;
  CausalLm m = build_model(c);
  m->init_weights(0.2, 3);
  m->to(at::kDouble);
  check_decoder(m, c.vocab_size);
}

TEST(Reference, LogitsMatchAnIndependentPythonImplementation) {
  if (std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "/usr/bin/python3 with torch (Debian python3-torch) not installed";
  TempDir dir;
  // micro-style routing (4 groups, top-2 groups, K = 4) on a small model, with a nonzero routing bias.
  ModelConfig c = model_config_from_preset("micro");
  c.vocab_size = 96;
  c.num_hidden_layers = 3;
  c.hidden_size = 64;
  c.max_position_embeddings = 64;
  DeepseekV3 m(c);
  init_weights(*m, 0.08, 17);
  {
    at::NoGradGuard ng;
    for (auto& moe : m->moe_layers())
      moe->gate->e_score_correction_bias.copy_(at::randn({c.n_routed_experts}) * 0.05);
  }
  const std::string model_dir = path_join(dir.path, "model");
  save_pretrained(model_dir, *m);
  const std::string tokens = "5 17 3 88 42 42 7 0 61 19 23 95 2 11";
  const std::string out = path_join(dir.path, "logits.safetensors");
  const std::string cmd = std::string(DSFORGE_CLI) + " model logits --checkpoint " + model_dir + " --tokens \"" + tokens +
                          "\" --out " + out + " >/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  const std::string result = path_join(dir.path, "result.json");
  const std::string ref = "/usr/bin/python3 " + source_dir() + "/tests/reference/deepseek_ref.py " + model_dir + " " + out +
                          " \"" + tokens + "\" > " + result;
  ASSERT_EQ(std::system(ref.c_str()), 0);
  auto j = nlohmann::json::parse(read_file(result));
  EXPECT_LT(j["logits_rel_err"].get<double>(), 1e-4) << j.dump();
  EXPECT_LT(j["mtp_rel_err"].get<double>(), 1e-4) << j.dump();
}
