// dsforge prune: masks and rankings against hand-computed expectations, structured pruning exact against
// the original model with the removed units switched off, masks kept through recovery steps of the one
// trainer, and the refusals (dense model, amount out of range, uneven groups) that write nothing.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "compress_fixture.h"
#include "dsforge/compress/prune.h"
#include "dsforge/compress/prune_units.h"
#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/model/deepseek.h"
#include "dsforge/model/io.h"
#include "test_util.h"

namespace dsforge {
namespace {

using compress::ExpertStats;

model::ModelConfig small_moe(int64_t n_group = 1) {
  model::ModelConfig c = model::model_config_from_preset("nano");
  c.vocab_size = 64;
  c.max_position_embeddings = 64;
  if (n_group > 1) {
    c.n_group = n_group;
    c.topk_group = 1;
  }
  return c;
}

model::CausalLm random_model(const model::ModelConfig& c, uint64_t seed = 3) {
  model::CausalLm m = model::build_model(c);
  m->init_weights(0.05, seed);
  m->eval();
  return m;
}

at::Tensor tokens_for(const model::ModelConfig& c, int64_t rows, int64_t len, uint64_t seed = 11) {
  auto gen = at::detail::createCPUGenerator(seed);
  return at::randint(c.vocab_size, {rows, len}, gen, at::kLong);
}

// Logits and MTP loss of `m` on `t` (eval mode, no gradient).
std::pair<at::Tensor, at::Tensor> outputs(model::CausalLm& m, const at::Tensor& t) {
  at::NoGradGuard g;
  m->eval();
  return {m->forward(t.narrow(1, 0, t.size(1) - 2)), m->loss(t, 0.3).mtp};
}

TEST(Prune, MagnitudeMasksMatchHandComputedValues) {
  TensorMap s;
  s["model.layers.0.self_attn.o_proj.weight"] = at::tensor({0.1f, -0.5f, 2.0f, -0.05f}).view({2, 2});
  s["model.layers.0.mlp.down_proj.weight"] = at::tensor({1.0f, 0.3f, -0.2f}).view({1, 3});
  s["model.embed_tokens.weight"] = at::full({2, 2}, 1e-6f);           // never pruned
  s["model.layers.1.mlp.gate.weight"] = at::full({2, 2}, 1e-6f);      // the router: never pruned
  s["model.layers.0.input_layernorm.weight"] = at::full({2}, 1e-6f);  // 1-D: never pruned
  // Global, 0.4 of 7 weights -> llround(2.8) = 3 smallest |w|: 0.05, 0.1, 0.2.
  auto g = compress::magnitude_masks(s, 0.4, "global");
  ASSERT_EQ(g.size(), 2u);
  EXPECT_TRUE(at::equal(g.at("model.layers.0.self_attn.o_proj.weight"), at::tensor({0.f, 1.f, 1.f, 0.f}).view({2, 2})));
  EXPECT_TRUE(at::equal(g.at("model.layers.0.mlp.down_proj.weight"), at::tensor({1.f, 1.f, 0.f}).view({1, 3})));
  // Per layer, 0.5: o_proj loses llround(2) = 2 (0.05, 0.1), down_proj llround(1.5) = 2 (0.2, 0.3).
  auto l = compress::magnitude_masks(s, 0.5, "layer");
  EXPECT_TRUE(at::equal(l.at("model.layers.0.self_attn.o_proj.weight"), at::tensor({0.f, 1.f, 1.f, 0.f}).view({2, 2})));
  EXPECT_TRUE(at::equal(l.at("model.layers.0.mlp.down_proj.weight"), at::tensor({1.f, 0.f, 0.f}).view({1, 3})));
  EXPECT_THROW_MSG(compress::magnitude_masks(s, 0.5, "row"), ConfigError, "global or layer");
}

TEST(Prune, CubicScheduleFollowsZhuGupta) {
  // s_t = s_f (1 - (1 - t / t_end)^3): 0 at the start, 0.8 * (1 - 0.5^3) = 0.7 half way, s_f from t_end on.
  EXPECT_DOUBLE_EQ(compress::cubic_sparsity(0, 100, 0.8), 0.0);
  EXPECT_NEAR(compress::cubic_sparsity(50, 100, 0.8), 0.7, 1e-12);
  EXPECT_NEAR(compress::cubic_sparsity(10, 100, 0.8), 0.8 * (1 - 0.9 * 0.9 * 0.9), 1e-12);
  EXPECT_DOUBLE_EQ(compress::cubic_sparsity(100, 100, 0.8), 0.8);
  EXPECT_DOUBLE_EQ(compress::cubic_sparsity(170, 100, 0.8), 0.8);
}

TEST(Prune, ExpertsRankedByLoadAndGateMassWithinGroups) {
  model::ModelConfig c = small_moe(/*n_group=*/2);  // 8 experts in groups {0..3}, {4..7}; top-2
  std::map<std::string, ExpertStats> stats;
  // score = load / sum + mass / sum. Layer 1: expert 2 is the weakest of group 0 (little load, little
  // mass), expert 5 of group 1 (no load at all). Expert 1 has low load but high mass: kept.
  const at::Tensor load = at::tensor({10., 1., 2., 10., 10., 0., 10., 10.}, at::kDouble);
  const at::Tensor mass = at::tensor({5., 9., 1., 5., 5., 0., 5., 5.}, at::kDouble);
  for (const char* p : {"model.layers.1.mlp", "model.layers.2.mlp", "model.layers.3.mlp", "model.layers.4.mlp"})
    stats[p] = {load, mass};
  stats["model.layers.3.mlp"] = {at::tensor({1., 9., 9., 9., 9., 9., 9., 1.}, at::kDouble), at::ones({8}, at::kDouble)};
  const auto keep = compress::experts_to_keep(c, stats, 0.25);  // 2 of 8: one per group
  EXPECT_EQ(keep.at("model.layers.1.mlp"), (std::vector<int64_t>{0, 1, 3, 4, 6, 7}));
  EXPECT_EQ(keep.at("model.layers.3.mlp"), (std::vector<int64_t>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(keep.at("model.layers.4.mlp"), (std::vector<int64_t>{0, 1, 3, 4, 6, 7}));  // the MTP block too
  // 1 of 8 cannot come out of two groups evenly; 0.75 leaves 1 per group with topk_group 1 < top-2.
  EXPECT_THROW_MSG(compress::experts_to_keep(c, stats, 0.125), ConfigError, "multiple of 2");
  EXPECT_THROW_MSG(compress::experts_to_keep(c, stats, 0.75), ConfigError, "too few for num_experts_per_tok");
  EXPECT_THROW_MSG(compress::experts_to_keep(c, stats, 0.01), ConfigError, "removes none");
}

TEST(Prune, RemovedExpertsAreReindexedInRouterBiasAndModules) {
  model::ModelConfig c = small_moe();
  model::CausalLm m = random_model(c);
  TensorMap s = model::model_state(*m);
  for (auto& [n, t] : s) t = t.clone();
  const std::string p = "model.layers.2.mlp";
  for (int64_t e = 0; e < 8; ++e) {  // tag router row, bias entry and expert weights with the expert number
    s[p + ".gate.weight"][e].fill_(static_cast<double>(e));
    s[p + ".gate.e_score_correction_bias"][e] = static_cast<double>(e) / 10;
    s[fmt(p, ".experts.", e, ".down_proj.weight")].fill_(static_cast<double>(e));
  }
  std::map<std::string, std::vector<int64_t>> keep;
  for (const char* q : {"model.layers.1.mlp", "model.layers.2.mlp", "model.layers.3.mlp", "model.layers.4.mlp"})
    keep[q] = {0, 1, 2, 3, 4, 5};
  keep[p] = {1, 2, 4, 5, 6, 7};
  compress::remove_experts(c, s, keep);
  EXPECT_EQ(c.n_routed_experts, 6);
  EXPECT_EQ(s.at(p + ".gate.weight").size(0), 6);
  for (int64_t j = 0; j < 6; ++j) {
    const double e = static_cast<double>(keep[p][static_cast<size_t>(j)]);
    EXPECT_EQ(s.at(p + ".gate.weight")[j][0].item<double>(), e) << j;
    EXPECT_NEAR(s.at(p + ".gate.e_score_correction_bias")[j].item<double>(), e / 10, 1e-6) << j;
    EXPECT_EQ(s.at(fmt(p, ".experts.", j, ".down_proj.weight"))[0][0].item<double>(), e) << j;
  }
  EXPECT_EQ(s.count(p + ".experts.6.down_proj.weight"), 0u);
  model::CausalLm pruned = model::build_model(c);
  model::load_model_state(*pruned, s, "test");  // every name and shape as a 6-expert model expects
}

TEST(Prune, ExpertStatisticsCountWhatTrainingCounts) {
  model::ModelConfig c = small_moe();
  model::CausalLm m = random_model(c);
  const at::Tensor t = tokens_for(c, 3, 20);
  const auto stats = compress::expert_statistics(*m, t);
  {
    at::NoGradGuard g;
    m->train();
    m->loss(t, 0.3);  // training forward: every MoE layer (MTP included) counts its assignments
    m->eval();
  }
  const auto counts = m->pending_expert_counts();
  ASSERT_EQ(counts.size(), 4u);  // layers 1-3 and the MTP block
  const char* names[] = {"model.layers.1.mlp", "model.layers.2.mlp", "model.layers.3.mlp", "model.layers.4.mlp"};
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_TRUE(at::equal(stats.at(names[i]).load, counts[i])) << names[i];
    // Weights are normalised over the top-2 and scaled by routed_scaling_factor: total mass = 2.5 per token.
    EXPECT_NEAR(stats.at(names[i]).mass.sum().item<double>(), 2.5 * counts[i].sum().item<double>() / 2, 1e-6);
  }
}

// Removing experts equals the original model whose router can never pick them (the routing bias of
// the removed ones at -1e4); with group-limited routing too.
TEST(Prune, PrunedExpertsComputeTheOriginalWithThoseExpertsUnselectable) {
  for (int64_t groups : {1, 2}) {
    model::ModelConfig c = small_moe(groups);
    model::CausalLm m = random_model(c, 5);
    const at::Tensor t = tokens_for(c, 2, 18);
    const auto keep = compress::experts_to_keep(c, compress::expert_statistics(*m, t), 0.25);
    model::ModelConfig pc = c;
    TensorMap s = model::model_state(*m);
    for (auto& [n, x] : s) x = x.clone();
    compress::remove_experts(pc, s, keep);
    model::CausalLm pruned = model::build_model(pc);
    model::load_model_state(*pruned, s, "test");
    // Negative control: while the original may still pick the removed experts, the outputs differ.
    EXPECT_GT((outputs(m, t).first - outputs(pruned, t).first).abs().max().item<double>(), 1e-3) << "groups " << groups;
    for (auto& [p, kept] : keep) {
      at::NoGradGuard g;
      at::Tensor bias = model::model_state(*m).at(p + ".gate.e_score_correction_bias");
      for (int64_t e = 0; e < 8; ++e)
        if (!std::binary_search(kept.begin(), kept.end(), e)) bias[e] = -1e4;
    }
    auto [la, ma] = outputs(m, t);
    auto [lb, mb] = outputs(pruned, t);
    EXPECT_LT((la - lb).abs().max().item<double>(), 1e-4) << "groups " << groups;
    EXPECT_NEAR(ma.item<double>(), mb.item<double>(), 1e-5) << "groups " << groups;
  }
}

TEST(Prune, PrunedHeadsComputeTheOriginalWithThoseHeadsZeroed) {
  model::ModelConfig c = small_moe();
  model::CausalLm m = random_model(c, 7);
  TensorMap orig = model::model_state(*m);
  {
    at::NoGradGuard g;  // make head 2 of layer 0 the weakest there: it must be the one removed
    orig.at("model.layers.0.self_attn.o_proj.weight").view({c.hidden_size, 4, c.v_head_dim}).select(1, 2).mul_(0.01);
  }
  TensorMap s;
  for (auto& [n, x] : orig) s[n] = x.clone();
  model::ModelConfig pc = c;
  const auto removed = compress::prune_heads(pc, s, 0.25);  // 1 of 4 heads per layer
  EXPECT_EQ(pc.num_attention_heads, 3);
  ASSERT_EQ(removed.size(), 5u);  // 4 layers + the MTP block
  EXPECT_EQ(removed.at("model.layers.0.self_attn"), (std::vector<int64_t>{2}));
  model::CausalLm pruned = model::build_model(pc);
  model::load_model_state(*pruned, s, "test");
  const at::Tensor t = tokens_for(c, 2, 18);
  EXPECT_GT((outputs(m, t).first - outputs(pruned, t).first).abs().max().item<double>(), 1e-4);  // heads still on
  {
    at::NoGradGuard g;
    for (auto& [p, heads] : removed)
      for (int64_t h : heads) {
        orig.at(p + ".q_b_proj.weight").view({4, c.qk_head_dim(), -1})[h].zero_();
        orig.at(p + ".kv_b_proj.weight").view({4, c.qk_nope_head_dim + c.v_head_dim, -1})[h].zero_();
        orig.at(p + ".o_proj.weight").view({c.hidden_size, 4, c.v_head_dim}).select(1, h).zero_();
      }
  }
  auto [la, ma] = outputs(m, t);
  auto [lb, mb] = outputs(pruned, t);
  EXPECT_LT((la - lb).abs().max().item<double>(), 1e-4);
  EXPECT_NEAR(ma.item<double>(), mb.item<double>(), 1e-5);
  EXPECT_LT(model::count_parameters(*pruned), model::count_parameters(*m));
}

TEST(Prune, PrunedNeuronsComputeTheOriginalWithThoseNeuronsZeroed) {
  model::ModelConfig c = small_moe();
  model::CausalLm m = random_model(c, 9);
  TensorMap orig = model::model_state(*m);
  {
    at::NoGradGuard g;  // neuron 7 of the dense MLP and neuron 3 of expert 5 in layer 2 made the weakest
    for (const char* w : {"gate_proj", "up_proj"}) orig.at(fmt("model.layers.0.mlp.", w, ".weight"))[7].mul_(0.01);
    orig.at("model.layers.0.mlp.down_proj.weight").select(1, 7).mul_(0.01);
    for (const char* w : {"gate_proj", "up_proj"}) orig.at(fmt("model.layers.2.mlp.experts.5.", w, ".weight"))[3].mul_(0.01);
    orig.at("model.layers.2.mlp.experts.5.down_proj.weight").select(1, 3).mul_(0.01);
  }
  TensorMap s;
  for (auto& [n, x] : orig) s[n] = x.clone();
  model::ModelConfig pc = c;
  const auto removed = compress::prune_neurons(pc, s, 0.25);
  EXPECT_EQ(pc.intermediate_size, 320 - 80);
  EXPECT_EQ(pc.moe_intermediate_size, 48 - 12);
  const auto& dense = removed.at("model.layers.0.mlp");
  EXPECT_EQ(dense.size(), 80u);
  EXPECT_TRUE(std::binary_search(dense.begin(), dense.end(), 7));
  const auto& ex = removed.at("model.layers.2.mlp.experts.5");
  EXPECT_EQ(ex.size(), 12u);
  EXPECT_TRUE(std::binary_search(ex.begin(), ex.end(), 3));
  EXPECT_EQ(removed.at("model.layers.1.mlp.shared_experts").size(), 12u);
  model::CausalLm pruned = model::build_model(pc);
  model::load_model_state(*pruned, s, "test");
  {
    at::NoGradGuard g;
    for (auto& [p, neurons] : removed)
      for (int64_t i : neurons) {
        orig.at(p + ".gate_proj.weight")[i].zero_();
        orig.at(p + ".up_proj.weight")[i].zero_();
        orig.at(p + ".down_proj.weight").select(1, i).zero_();
      }
  }
  const at::Tensor t = tokens_for(c, 2, 18);
  auto [la, ma] = outputs(m, t);
  auto [lb, mb] = outputs(pruned, t);
  EXPECT_LT((la - lb).abs().max().item<double>(), 1e-4);
  EXPECT_NEAR(ma.item<double>(), mb.item<double>(), 1e-5);
}

TEST(Prune, BadRequestsAreRefusedAndWriteNothing) {
  TempDir dir;
  model::ModelConfig dense = small_moe();
  dense.n_routed_experts = 0;
  dense.num_experts_per_tok = 0;
  const std::string dense_dir = path_join(dir.path, "dense");
  model::CausalLm d = random_model(dense);
  model::save_pretrained(dense_dir, *d);
  const std::string out = path_join(dir.path, "out");
  compress::PruneOptions o;
  o.method = "experts";
  o.amount = 0.25;
  EXPECT_THROW_MSG(compress::prune_model(dense_dir, out, o), ConfigError, "dense model");
  o.method = "magnitude";
  for (double bad : {1.0, -0.1, 1.5}) {
    o.amount = bad;
    EXPECT_THROW_MSG(compress::prune_model(dense_dir, out, o), ConfigError, "must be in [0, 1)");
  }
  o.amount = 0.5;
  o.method = "channels";
  EXPECT_THROW_MSG(compress::prune_model(dense_dir, out, o), ConfigError, "magnitude, experts, heads or neurons");
  o.method = "magnitude";
  o.recover_steps = 5;
  EXPECT_THROW_MSG(compress::prune_model(dense_dir, out, o), ConfigError, "--config");
  EXPECT_FALSE(std::filesystem::exists(out));
  EXPECT_FALSE(std::filesystem::exists(out + ".partial"));
}

// Through the trainer: one-shot masks stay zero over the recovery steps while the other weights move;
// the cubic schedule ends exactly at the requested sparsity; expert pruning + recovery yields a smaller
// model folder that evaluates.
TEST(SlowPrune, RecoveryKeepsMasksAndGrowsTheCubicSchedule) {
  TempDir dir;
  const TinyRun run = make_tiny_run(dir.path, 6);
  const TensorMap before = model::load_folder_weights(run.model_dir).tensors;

  compress::PruneOptions o;
  o.method = "magnitude";
  o.amount = 0.5;
  o.scope = "layer";
  o.recover_steps = 4;
  o.run_config = run.config;
  o.overrides = {"train.lr=1e-2"};
  const auto r = compress::prune_model(run.model_dir, path_join(dir.path, "mag"), o);
  EXPECT_EQ(r.recover_steps, 4);
  const auto masks = compress::magnitude_masks(before, 0.5, "layer");
  const TensorMap after = model::load_folder_weights(path_join(dir.path, "mag")).tensors;
  int64_t moved = 0;
  for (const auto& [name, mask] : masks) {
    const at::Tensor w = after.at(name);
    EXPECT_EQ(((w != 0).to(at::kFloat) * (1 - mask)).sum().item<double>(), 0.0) << name;  // pruned stay zero
    moved += ((w != before.at(name)) & (mask > 0)).sum().item<int64_t>();
  }
  EXPECT_GT(moved, 1000);  // and the rest trained
  EXPECT_NEAR(static_cast<double>(r.zeros) / static_cast<double>(r.prunable), 0.5, 1e-3);
  const auto report = nlohmann::json::parse(read_file(path_join(dir.path, "mag/dsforge_pruning.json")));
  EXPECT_EQ(report["method"], "magnitude");
  EXPECT_TRUE(std::filesystem::exists(path_join(dir.path, "mag.recovery/metrics.jsonl")));

  o.schedule = "cubic";
  o.scope = "global";
  o.recover_steps = 6;
  o.prune_every = 2;
  o.prune_end = 0.5;  // final sparsity from step 3
  const auto rc = compress::prune_model(run.model_dir, path_join(dir.path, "cubic"), o);
  int64_t prunable = 0;
  for (const auto& [name, t] : before) prunable += compress::magnitude_prunable(name, t) ? t.numel() : 0;
  EXPECT_EQ(rc.prunable, prunable);
  EXPECT_EQ(rc.zeros, std::llround(0.5 * static_cast<double>(prunable)));

  compress::PruneOptions e;
  e.method = "experts";
  e.amount = 0.25;
  e.calib_path = run.corpus;
  e.recover_steps = 2;
  e.run_config = run.config;
  const auto re = compress::prune_model(run.model_dir, path_join(dir.path, "experts"), e);
  EXPECT_LT(re.params_after, re.params_before);
  model::CausalLm pm = model::load_pretrained(path_join(dir.path, "experts"));
  EXPECT_EQ(pm->config().n_routed_experts, 6);
  EXPECT_EQ(re.removed.size(), 4u);
  const std::string ev = pipeline::eval_text(path_join(dir.path, "experts"), run.corpus, 16, 0, 8, true);
  EXPECT_NE(ev.find("bits_per_byte"), std::string::npos);
}


// The command line: experts pruned, the folder smaller in `model info`, scored by `eval`, and the
// refusals as one-line errors with exit code 2.
TEST(CliPrune, ExpertsPrunedFolderIsReadByOtherCommands) {
  TempDir dir;
  const TinyRun run = make_tiny_run(dir.path, 4);
  const std::string out = path_join(dir.path, "pruned");
  CliRun p = run_cli(fmt("prune --model ", run.model_dir, " --out ", out, " --method experts --amount 0.25 --calib ", run.corpus), dir.path);
  ASSERT_EQ(p.code, 0) << p.err;
  EXPECT_NE(p.out.find("parameters"), std::string::npos) << p.out;
  CliRun before = run_cli("model info " + run.model_dir, dir.path), after = run_cli("model info " + out, dir.path);
  ASSERT_EQ(after.code, 0) << after.err;
  EXPECT_NE(before.out, after.out);
  EXPECT_NE(after.out.find("6"), std::string::npos);
  CliRun ev = run_cli(fmt("eval --model ", out, " --text ", run.corpus, " --seq-len 16"), dir.path);
  EXPECT_EQ(ev.code, 0) << ev.err;
  CliRun again = run_cli(fmt("prune --model ", run.model_dir, " --out ", out, " --method heads --amount 0.25"), dir.path);
  EXPECT_EQ(again.code, 2);
  EXPECT_NE(again.err.find("exists and is not empty"), std::string::npos) << again.err;
  CliRun bad = run_cli(fmt("prune --model ", run.model_dir, " --out ", out, "2 --method magnitude --amount 1"), dir.path);
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.err.find("[0, 1)"), std::string::npos) << bad.err;
  EXPECT_FALSE(std::filesystem::exists(out + "2"));
}

TEST(CliPrune, CurveScoresEveryPointBeforeAndAfterRecovery) {
  TempDir dir;
  const TinyRun run = make_tiny_run(dir.path, 4);
  const std::string out = path_join(dir.path, "curve");
  const std::string args = fmt("prune --curve --model ", run.model_dir, " --out ", out, " --methods heads,magnitude --amounts 0.25,0.5",
                               " --text ", run.corpus, " --recover-steps 2 --config ", run.config, " --train.lr=1e-3");
  CliRun r = run_cli(args, dir.path);
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  const auto j = nlohmann::json::parse(read_file(path_join(out, "curve.json")));
  ASSERT_EQ(j["points"].size(), 4u);
  EXPECT_EQ(j["recover_steps"], 2);
  // Every figure is `dsforge eval --text` of the folder it names, recomputed here.
  auto bpb = [&](const std::string& d) {
    return nlohmann::json::parse(pipeline::eval_text(d, run.corpus, 0, 0, 16, true))["bits_per_byte"].get<double>();
  };
  EXPECT_DOUBLE_EQ(j["bits_per_byte"].get<double>(), bpb(run.model_dir));
  EXPECT_DOUBLE_EQ(j["control_recovered_bits_per_byte"].get<double>(), bpb(path_join(out, "control-rec")));
  for (const auto& p : j["points"]) {
    const std::string d = path_join(out, p["method"].get<std::string>() + "-" + fmt(p["amount"].get<double>()));
    EXPECT_DOUBLE_EQ(p["bits_per_byte"].get<double>(), bpb(d)) << d;
    EXPECT_DOUBLE_EQ(p["bits_per_byte_recovered"].get<double>(), bpb(d + "-rec")) << d;
    EXPECT_EQ(nlohmann::json::parse(read_file(path_join(d + "-rec", "dsforge_pruning.json")))["recover_steps"], 2);
  }
  // Heads leave the model smaller the more are removed; magnitude pruning keeps every parameter.
  EXPECT_GT(j["points"][0]["parameters"].get<int64_t>(), j["points"][1]["parameters"].get<int64_t>());
  EXPECT_EQ(j["points"][2]["parameters"], j["points"][3]["parameters"]);
  const std::string html = read_file(path_join(out, "curve.html"));
  size_t charts = 0;
  for (size_t p = html.find("<svg class=\"chart\""); p != std::string::npos; p = html.find("<svg class=\"chart\"", p + 1)) ++charts;
  EXPECT_EQ(charts, 2u);  // one per method
  EXPECT_NE(read_file(path_join(out, "curve.md")).find("| heads | 0.25 |"), std::string::npos);
  // The same command again reuses every folder and writes the same curve.
  CliRun again = run_cli(args, dir.path);
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_NE(again.out.find("reusing"), std::string::npos);
  EXPECT_EQ(nlohmann::json::parse(read_file(path_join(out, "curve.json"))), j);
  CliRun bad = run_cli(fmt("prune --curve --model ", run.model_dir, " --out ", out, "2 --amounts 1.5 --text ", run.corpus), dir.path);
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.err.find("(0, 1)"), std::string::npos) << bad.err;
  CliRun no_method = run_cli(fmt("prune --model ", run.model_dir, " --out ", out, "3"), dir.path);
  EXPECT_EQ(no_method.code, 2);
  EXPECT_NE(no_method.err.find("--method and --amount"), std::string::npos) << no_method.err;
}

}  // namespace
}  // namespace dsforge
