// dsforge export: GGUF writer/reader, q8_0, the deepseek2/gpt2 tensor layouts, Hugging Face folders
// (sharded, bf16, GPT-2's Conv1D layout) read back by every command. The llama.cpp comparison is in
// test_llama.cpp.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/deploy/export.h"
#include "dsforge/deploy/gguf.h"
#include "dsforge/model/io.h"
#include "test_util.h"
#include "tiny_model.h"

namespace dsforge {
namespace {

const std::vector<std::string> kDocs = {"the cat sat on the mat", "a dog ran in the park", "the sun is hot today",
                                        "birds sing in the morning", "the cat and the dog play"};

TEST(ExportGguf, Q8ZeroMatchesHandComputedBlocks) {
  // One block 0..31: d = 31 / 127, q_i = round(i * 127 / 31); a zero block has d = 0 and q = 0.
  std::vector<float> x(64, 0.0f);
  for (int i = 0; i < 32; ++i) x[i] = static_cast<float>(i);
  std::vector<uint8_t> q(2 * deploy::kQ8BlockBytes);
  deploy::quantize_q8_0(x.data(), 64, q.data());
  c10::Half d;
  std::memcpy(&d.x, q.data(), 2);
  EXPECT_NEAR(static_cast<float>(d), 31.0f / 127.0f, 1e-3);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(static_cast<int8_t>(q[2 + i]), static_cast<int8_t>(std::lround(i * 127.0 / 31.0))) << i;
  EXPECT_EQ(static_cast<int8_t>(q[2 + 31]), 127);
  for (size_t i = deploy::kQ8BlockBytes; i < q.size(); ++i) EXPECT_EQ(q[i], 0);
  std::vector<float> back(64);
  deploy::dequantize_q8_0(q.data(), 64, back.data());
  for (int i = 0; i < 64; ++i) EXPECT_LE(std::fabs(back[i] - x[i]), 0.5f * 31.0f / 127.0f + 1e-3f) << i;
}

TEST(ExportGguf, WriterAndReaderAgreeOnTheBinaryLayout) {
  TempDir dir;
  const std::string path = dir.path + "/t.gguf";
  deploy::GgufWriter w;
  w.set("general.architecture", std::string("gpt2"));
  w.set("a.u32", uint32_t{7});
  w.set("a.i32", int32_t{-7});
  w.set("a.f32", 0.5f);
  w.set("a.bool", true);
  w.set("a.strings", std::vector<std::string>{"x", "", "Ġy"});
  w.set("a.ints", std::vector<int32_t>{1, 3, 4});
  const at::Tensor m = at::arange(2 * 3 * 64, at::kFloat).reshape({2, 3, 64}) / 100.0;
  w.add_tensor("m.f32", m, deploy::GgmlType::F32);
  w.add_tensor("m.f16", m, deploy::GgmlType::F16);
  w.add_tensor("m.bf16", m, deploy::GgmlType::BF16);
  w.add_tensor("m.q8", m, deploy::GgmlType::Q8_0);
  w.add_tensor("v", at::ones({5}), deploy::GgmlType::F32);
  EXPECT_THROW(w.add_tensor("bad", at::ones({3, 5}), deploy::GgmlType::Q8_0), ConfigError);
  w.write(path);

  // The first bytes by hand: magic "GGUF", version 3, 5 tensors, 7 keys.
  const std::string raw = read_file(path);
  ASSERT_GE(raw.size(), 24u);
  EXPECT_EQ(raw.substr(0, 4), "GGUF");
  uint32_t version;
  uint64_t n_tensors, n_kv;
  std::memcpy(&version, raw.data() + 4, 4);
  std::memcpy(&n_tensors, raw.data() + 8, 8);
  std::memcpy(&n_kv, raw.data() + 16, 8);
  EXPECT_EQ(version, 3u);
  EXPECT_EQ(n_tensors, 5u);
  EXPECT_EQ(n_kv, 7u);

  const deploy::GgufFile f = deploy::read_gguf(path);
  EXPECT_EQ(std::get<uint32_t>(f.kv.at("a.u32")), 7u);
  EXPECT_EQ(std::get<int32_t>(f.kv.at("a.i32")), -7);
  EXPECT_EQ(std::get<float>(f.kv.at("a.f32")), 0.5f);
  EXPECT_TRUE(std::get<bool>(f.kv.at("a.bool")));
  EXPECT_EQ(std::get<std::vector<std::string>>(f.kv.at("a.strings")), (std::vector<std::string>{"x", "", "Ġy"}));
  EXPECT_EQ(f.tensors.at("m.f32").ne, (std::vector<int64_t>{64, 3, 2}));  // ggml order: fastest first
  for (const auto& [name, info] : f.tensors) EXPECT_EQ(info.offset % 32, 0u) << name;
  EXPECT_TRUE(at::equal(f.tensor("m.f32"), m));
  EXPECT_TRUE(at::allclose(f.tensor("m.f16"), m, 1e-3, 1e-3));
  EXPECT_TRUE(at::allclose(f.tensor("m.bf16"), m, 1e-2, 1e-2));
  EXPECT_LE((f.tensor("m.q8") - m).abs().max().item<float>(), m.abs().max().item<float>() / 127.0f);

  // A truncated file is refused, naming it.
  write_file_atomic(dir.path + "/cut.gguf", raw.substr(0, raw.size() - 40));
  EXPECT_THROW_MSG(deploy::read_gguf(dir.path + "/cut.gguf"), CheckpointError, "cut.gguf");
}

TEST(ExportGguf, DeepSeekLayoutSplitsKvBPerHead) {
  TempDir dir;
  const std::string model_dir = save_tiny_model(dir.path, kDocs, "nano");
  const auto report = deploy::export_gguf(model_dir, dir.path + "/m.gguf", deploy::GgmlType::F32);
  EXPECT_EQ(report.architecture, "deepseek2");
  const deploy::GgufFile f = deploy::read_gguf(dir.path + "/m.gguf");
  model::CausalLm m = model::load_pretrained(model_dir);
  const auto& c = m->config();
  auto u32 = [&](const std::string& k) { return static_cast<int64_t>(std::get<uint32_t>(f.kv.at("deepseek2." + k))); };
  EXPECT_EQ(u32("block_count"), c.num_hidden_layers);  // MTP layers not counted
  EXPECT_EQ(u32("attention.key_length"), c.kv_lora_rank + c.qk_rope_head_dim);
  EXPECT_EQ(u32("attention.value_length_mla"), c.v_head_dim);
  EXPECT_EQ(u32("attention.head_count_kv"), 1);
  EXPECT_EQ(u32("expert_gating_func"), 2);

  // Tensor count by hand: 3 global + per layer 9 attention (q_a, q_a_norm, q_b, kv_a, kv_a_norm, k_b, v_b,
  // output, attn_norm) + ffn_norm + 3 dense or (router, bias, 3 stacked, 3 shared).
  int64_t expected = 3;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) expected += 10 + (c.is_moe_layer(l) ? 8 : 3);
  EXPECT_EQ(static_cast<int64_t>(f.tensors.size()), expected);
  EXPECT_EQ(report.tensors, expected);

  // k_b and v_b put back together give kv_b.
  const auto state = model::model_state(*m);
  const int64_t H = c.num_attention_heads, dn = c.qk_nope_head_dim, dv = c.v_head_dim, dc = c.kv_lora_rank;
  const at::Tensor kb = f.tensor("blk.1.attn_k_b.weight");  // [H, d_c, d_n]
  const at::Tensor vb = f.tensor("blk.1.attn_v_b.weight");  // [H, d_v, d_c]
  EXPECT_EQ(kb.sizes(), (std::vector<int64_t>{H, dc, dn}));
  EXPECT_EQ(vb.sizes(), (std::vector<int64_t>{H, dv, dc}));
  const at::Tensor kvb = at::cat({kb.transpose(1, 2), vb}, 1).reshape({H * (dn + dv), dc});
  EXPECT_TRUE(at::equal(kvb, state.at("model.layers.1.self_attn.kv_b_proj.weight")));
  // Experts stacked in order: expert 3's up projection is slice 3.
  EXPECT_TRUE(at::equal(f.tensor("blk.1.ffn_up_exps.weight")[3], state.at("model.layers.1.mlp.experts.3.up_proj.weight")));

  // The tokenizer: one entry per embedding row, GPT-2 byte-to-unicode strings, merges "a b".
  const auto tokens = std::get<std::vector<std::string>>(f.kv.at("tokenizer.ggml.tokens"));
  EXPECT_EQ(static_cast<int64_t>(tokens.size()), c.vocab_size);
  EXPECT_EQ(std::get<std::vector<int32_t>>(f.kv.at("tokenizer.ggml.token_type"))[0], 3);  // <|endoftext|>: control
  const auto merges = std::get<std::vector<std::string>>(f.kv.at("tokenizer.ggml.merges"));
  ASSERT_FALSE(merges.empty());
  EXPECT_NE(merges[0].find(' '), std::string::npos);
  EXPECT_EQ(std::get<std::string>(f.kv.at("tokenizer.ggml.pre")), "gpt-2");

  // q8_0: every matrix whose rows are a multiple of 32 is q8_0, the norms f32.
  deploy::export_gguf(model_dir, dir.path + "/q.gguf", deploy::GgmlType::Q8_0);
  const deploy::GgufFile q = deploy::read_gguf(dir.path + "/q.gguf");
  EXPECT_EQ(q.tensors.at("token_embd.weight").type, deploy::GgmlType::Q8_0);
  EXPECT_EQ(q.tensors.at("blk.0.attn_norm.weight").type, deploy::GgmlType::F32);
  EXPECT_EQ(q.tensors.at("blk.1.exp_probs_b.bias").type, deploy::GgmlType::F32);
}

TEST(ExportGguf, ImportGivesBackTheSameModel) {
  TempDir dir;
  const std::string model_dir = save_tiny_model(dir.path, kDocs, "nano");
  deploy::export_gguf(model_dir, dir.path + "/m.gguf", deploy::GgmlType::F32);
  deploy::import_gguf(dir.path + "/m.gguf", dir.path + "/back");
  model::CausalLm a = model::load_pretrained(model_dir), b = model::load_pretrained(dir.path + "/back");
  at::NoGradGuard g;
  a->eval();
  b->eval();
  const at::Tensor x = at::arange(1, 33, at::kLong).unsqueeze(0);
  EXPECT_TRUE(at::allclose(a->forward(x), b->forward(x), 1e-5, 1e-5));  // MTP aside, the same network
  const auto ta = tok::BpeTokenizer::load(model_dir + "/tokenizer.json"), tb = tok::BpeTokenizer::load(dir.path + "/back/tokenizer.json");
  for (const std::string text : {"the cat sat on the mat", "birds sing, 42 times!\n  ok"}) EXPECT_EQ(ta.encode(text), tb.encode(text)) << text;
  EXPECT_THROW_MSG(deploy::import_gguf(model_dir + "/config.json", dir.path + "/x"), CheckpointError, "config.json");
}

TEST(ExportGguf, RefusesWhatLlamaCppCannotRun) {
  TempDir dir;
  model::ModelConfig mc = model::model_config_from_preset("nano");
  mc.moe_layer_freq = 2;
  const std::string model_dir = save_tiny_model(dir.path, kDocs, mc);
  EXPECT_THROW_MSG(deploy::export_gguf(model_dir, dir.path + "/m.gguf", deploy::GgmlType::F32), ConfigError, "moe_layer_freq");
  EXPECT_FALSE(file_exists(dir.path + "/m.gguf"));
  EXPECT_THROW_MSG(deploy::parse_ggml_type("q4_k"), ConfigError, "q8_0");
}

at::Tensor logits_of(model::CausalLm& m) {
  at::NoGradGuard g;
  m->eval();
  return m->forward(at::arange(1, 17, at::kLong).unsqueeze(0) % m->config().vocab_size);
}

TEST(ExportHf, ShardedBf16FolderLoadsBack) {
  TempDir dir;
  const std::string model_dir = save_tiny_model(dir.path, kDocs, "nano");
  model::CausalLm original = model::load_pretrained(model_dir);
  const at::Tensor ref = logits_of(original);

  const auto r32 = deploy::export_hf(model_dir, dir.path + "/hf32", {"f32", deploy::parse_byte_size("200KB")});
  EXPECT_GT(r32.shards, 1);
  const auto index = nlohmann::json::parse(read_file(dir.path + "/hf32/model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), r32.weight_bytes);
  EXPECT_EQ(index["weight_map"].size(), model::model_state(*original).size());
  for (int i = 1; i <= r32.shards; ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "/hf32/model-%05d-of-%05d.safetensors", i, r32.shards);
    EXPECT_TRUE(file_exists(dir.path + name)) << name;
  }
  for (const char* f : {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"})
    EXPECT_TRUE(file_exists(dir.path + "/hf32/" + f)) << f;
  const auto config = nlohmann::json::parse(read_file(dir.path + "/hf32/config.json"));
  EXPECT_EQ(config["architectures"][0], "DeepseekV3ForCausalLM");
  EXPECT_EQ(config["torch_dtype"], "float32");
  model::CausalLm back32 = model::load_pretrained(dir.path + "/hf32");
  EXPECT_TRUE(at::equal(logits_of(back32), ref));

  deploy::export_hf(model_dir, dir.path + "/hf16", {"bf16", deploy::parse_byte_size("5GB")});
  EXPECT_FALSE(file_exists(dir.path + "/hf16/model.safetensors.index.json"));
  const auto st = load_safetensors(dir.path + "/hf16/model.safetensors");
  EXPECT_EQ(st.tensors.at("model.embed_tokens.weight").scalar_type(), at::kBFloat16);
  EXPECT_EQ(st.tensors.at("model.layers.1.mlp.gate.e_score_correction_bias").scalar_type(), at::kFloat);
  EXPECT_EQ(nlohmann::json::parse(read_file(dir.path + "/hf16/config.json"))["torch_dtype"], "bfloat16");
  model::CausalLm back16 = model::load_pretrained(dir.path + "/hf16");
  EXPECT_LT((logits_of(back16) - ref).abs().max().item<float>(), 0.05f);

  EXPECT_THROW_MSG(deploy::export_hf(model_dir, dir.path + "/hf32", {}), ConfigError, "not empty");
  EXPECT_THROW_MSG(deploy::export_hf(model_dir, dir.path + "/x", {"f8", 1000}), ConfigError, "f8");
  EXPECT_FALSE(file_exists(dir.path + "/x"));
  EXPECT_EQ(deploy::parse_byte_size("5GB"), 5000000000ull);
  EXPECT_EQ(deploy::parse_byte_size("2MiB"), 2097152ull);
  EXPECT_THROW_MSG(deploy::parse_byte_size("5 parsecs"), ConfigError, "unit");
}

// A safetensors file written by hand, the way other tools write it (no dsforge metadata).
void write_foreign_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors) {
  nlohmann::ordered_json header;
  header["__metadata__"] = {{"format", "pt"}};
  std::string data;
  for (const auto& [name, t] : tensors) {
    const at::Tensor c = t.to(at::kFloat).contiguous();
    const size_t begin = data.size();
    data.append(static_cast<const char*>(c.data_ptr()), c.numel() * 4);
    header[name] = {{"dtype", "F32"}, {"shape", c.sizes().vec()}, {"data_offsets", {begin, data.size()}}};
  }
  std::string h = header.dump();
  const uint64_t n = h.size();
  std::string file(reinterpret_cast<const char*>(&n), 8);
  write_file_atomic(path, file + h + data);
}

TEST(ExportHf, Gpt2UsesConv1DLayoutBothWays) {
  TempDir dir;
  model::ModelConfig mc = model::model_config_from_preset("gpt2-tiny");
  mc.hidden_size = 64;
  mc.intermediate_size = 96;
  mc.num_hidden_layers = 2;
  mc.max_position_embeddings = 64;
  const std::string model_dir = save_tiny_model(dir.path, kDocs, mc);
  model::CausalLm m = model::load_pretrained(model_dir);
  const at::Tensor ref = logits_of(m);

  deploy::export_hf(model_dir, dir.path + "/hf", {});
  const auto st = load_safetensors(dir.path + "/hf/model.safetensors");
  EXPECT_EQ(st.tensors.at("transformer.h.0.attn.c_attn.weight").sizes(), (std::vector<int64_t>{64, 192}));  // [in, out]
  EXPECT_EQ(st.tensors.at("transformer.h.0.mlp.c_fc.weight").sizes(), (std::vector<int64_t>{64, 96}));
  EXPECT_EQ(nlohmann::json::parse(read_file(dir.path + "/hf/config.json"))["architectures"][0], "GPT2LMHeadModel");
  model::CausalLm back = model::load_pretrained(dir.path + "/hf");
  EXPECT_TRUE(at::equal(logits_of(back), ref));

  // A checkpoint as the original GPT-2 files store it: no "transformer." prefix, mask buffers, no metadata.
  std::map<std::string, at::Tensor> foreign;
  for (const auto& [name, t] : st.tensors) foreign[name.substr(std::string("transformer.").size())] = t;
  foreign["h.0.attn.bias"] = at::ones({1, 1, 64, 64}).tril();
  make_dirs(dir.path + "/foreign");
  write_foreign_safetensors(dir.path + "/foreign/model.safetensors", foreign);
  write_file_atomic(dir.path + "/foreign/config.json", read_file(dir.path + "/hf/config.json"));
  model::CausalLm theirs = model::load_pretrained(dir.path + "/foreign");
  EXPECT_TRUE(at::allclose(logits_of(theirs), ref, 1e-6, 1e-6));
}

}  // namespace
}  // namespace dsforge
