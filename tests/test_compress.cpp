// dsforge quantize: per-channel int8 against hand-computed values, a quantised folder read back by
// every command (load_pretrained), exported to GGUF, and refused a second time.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <nlohmann/json.hpp>

#include "dsforge/compress/quantize.h"
#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/core/text.h"
#include "dsforge/deploy/export.h"
#include "dsforge/model/deepseek.h"
#include "dsforge/model/io.h"
#include "dsforge/tokenizer/bpe.h"
#include "test_util.h"
#include "tiny_model.h"

namespace dsforge {
namespace {

TEST(Quantize, RowsMatchHandComputedValues) {
  const at::Tensor w = at::tensor({0.7f, -2.0f, 0.5f, 0.1f, 0.2f, -0.3f, 0.0f, 0.0f, 0.0f}).view({3, 3});
  auto [q, scale] = compress::quantize_rows(w);
  // Row 0: s = 2/127; 0.7/s = 44.45 -> 44, -2/s = -127, 0.5/s = 31.75 -> 32.
  // Row 1: s = 0.3/127; 0.1/s = 42.33 -> 42, 0.2/s = 84.67 -> 85, -0.3/s = -127. Row 2: all zero.
  EXPECT_EQ(q.scalar_type(), at::kChar);
  const std::vector<int8_t> expect = {44, -127, 32, 42, 85, -127, 0, 0, 0};
  for (int i = 0; i < 9; ++i) EXPECT_EQ(q.view({-1})[i].item<int8_t>(), expect[i]) << i;
  EXPECT_NEAR(scale[0].item<float>(), 2.0f / 127, 1e-9);
  EXPECT_NEAR(scale[1].item<float>(), 0.3f / 127, 1e-9);
  EXPECT_EQ(scale[2].item<float>(), 0.0f);
  const at::Tensor back = compress::dequantize_rows(q, scale);
  EXPECT_LE((back - w).abs().max().item<float>(), 0.5f * 2.0f / 127 + 1e-6f);  // half a step at most
}

TEST(Quantize, FolderIsReadByEveryCommandAndRefusedTwice) {
  TempDir dir;
  const std::string model_dir = save_tiny_model(dir.path, {"the cat sat on the mat", "a dog ran in the park"}, "nano");
  const auto r = compress::quantize_model(model_dir, dir.path + "/int8", {});
  EXPECT_GT(r.tensors_quantized, 10);
  EXPECT_LT(r.max_relative_error, 1.0 / 127);  // at most half a step of the largest row, relative to the tensor's max
  EXPECT_LT(static_cast<double>(r.bytes_after), 0.5 * static_cast<double>(r.bytes_before));
  const auto st = load_safetensors(dir.path + "/int8/model.safetensors");
  EXPECT_EQ(st.tensors.at("model.layers.0.self_attn.q_a_proj.weight").scalar_type(), at::kChar);
  EXPECT_EQ(st.tensors.at("model.layers.0.self_attn.q_a_proj.weight_scale").scalar_type(), at::kFloat);
  EXPECT_EQ(st.tensors.at("model.embed_tokens.weight").scalar_type(), at::kFloat);  // embeddings kept by default
  EXPECT_EQ(st.tensors.at("model.layers.1.mlp.gate.weight").scalar_type(), at::kFloat);  // so is the router
  EXPECT_EQ(nlohmann::json::parse(read_file(dir.path + "/int8/config.json"))["quantization_config"]["scheme"], "int8-weight");

  model::CausalLm a = model::load_pretrained(model_dir), b = model::load_pretrained(dir.path + "/int8");
  at::NoGradGuard g;
  a->eval();
  b->eval();
  const at::Tensor x = at::arange(1, 33, at::kLong).unsqueeze(0);
  const at::Tensor la = a->forward(x), lb = b->forward(x);
  EXPECT_LT(((la - lb).abs().max() / la.abs().max()).item<float>(), 0.05f);
  // Each weight is exactly its dequantised int8 form.
  const auto sa = model::model_state(*a), sb = model::model_state(*b);
  const auto [q, s] = compress::quantize_rows(sa.at("model.layers.2.mlp.experts.5.down_proj.weight"));
  EXPECT_TRUE(at::equal(sb.at("model.layers.2.mlp.experts.5.down_proj.weight"), compress::dequantize_rows(q, s)));

  deploy::export_gguf(dir.path + "/int8", dir.path + "/int8.gguf", deploy::GgmlType::Q8_0);
  EXPECT_TRUE(file_exists(dir.path + "/int8.gguf"));
  EXPECT_THROW_MSG(compress::quantize_model(dir.path + "/int8", dir.path + "/again", {}), ConfigError, "already quantised");
  compress::QuantizeOptions bad;
  bad.scheme = "int3";
  EXPECT_THROW_MSG(compress::quantize_model(model_dir, dir.path + "/x", bad), ConfigError, "int3");
  EXPECT_FALSE(file_exists(dir.path + "/x"));
}

TEST(Quantize, W8a8DecodeUsesTheInt8RowsWithPerTokenActivations) {
  TempDir dir;
  const std::string model_dir = save_tiny_model(dir.path, {"the cat sat on the mat", "a dog ran in the park"}, "nano");
  compress::QuantizeOptions o;
  o.scheme = "w8a8";
  compress::quantize_model(model_dir, dir.path + "/w8a8", o);
  const auto qc = nlohmann::json::parse(read_file(dir.path + "/w8a8/config.json"))["quantization_config"];
  EXPECT_EQ(qc["scheme"], "w8a8");
  EXPECT_TRUE(qc.contains("activations"));

  model::CausalLm m = model::load_pretrained(dir.path + "/w8a8");
  auto* ds = dynamic_cast<model::DeepseekV3Impl*>(m.get());
  ASSERT_NE(ds, nullptr);
  // Every quantised linear of the model has its int8 rows, keyed by its float32 weight, with row sums.
  const auto st = load_safetensors(dir.path + "/w8a8/model.safetensors").tensors;
  int64_t quantised = 0;
  for (const auto& [name, t] : st) quantised += t.scalar_type() == at::kChar;
  EXPECT_EQ(static_cast<int64_t>(ds->int8_linears.size()), quantised);
  const auto params = model::model_state(*m);
  const at::Tensor& wq = params.at("model.layers.1.mlp.experts.3.up_proj.weight");
  const auto& l = ds->int8_linears.at(wq.data_ptr());
  EXPECT_TRUE(at::equal(l.q, st.at("model.layers.1.mlp.experts.3.up_proj.weight")));
  EXPECT_EQ(l.sums[2], l.q[2].to(at::kInt).sum().item<int32_t>());
  // An int8-weight folder keeps none (its arithmetic stays float32).
  compress::quantize_model(model_dir, dir.path + "/int8", {});
  const model::CausalLm int8_weight = model::load_pretrained(dir.path + "/int8");
  auto* plain = dynamic_cast<model::DeepseekV3Impl*>(int8_weight.get());
  ASSERT_NE(plain, nullptr);
  EXPECT_TRUE(plain->int8_linears.empty());

  // Decode: a prompt and three steps through the fused step, with the int8 rows and without them (the
  // same dequantised weights in float32). Activation rounding moves the logits a little, not much.
  m->eval();
  at::NoGradGuard g;
  auto run = [&](bool int8) {
    std::unordered_map<const void*, model::DeepseekV3Impl::Int8Linear> saved;
    if (!int8) saved.swap(ds->int8_linears);
    model::KvCache cache = ds->make_cache(1, 32);
    std::vector<at::Tensor> out{ds->forward_cached(at::arange(5, 13, at::kLong).unsqueeze(0), cache)};
    for (int64_t t : {40, 41, 42}) out.push_back(ds->forward_cached(at::full({1, 1}, t, at::kLong), cache));
    if (!int8) saved.swap(ds->int8_linears);
    return at::cat(out, 1);
  };
  const at::Tensor a = run(true), f = run(false);
  const double rel = ((a - f).abs().max() / f.abs().max()).item<double>();
  EXPECT_GT(rel, 0.0) << "the int8 path was not taken";
  EXPECT_LT(rel, 0.03);
  EXPECT_GT((a.argmax(-1) == f.argmax(-1)).to(at::kFloat).mean().item<double>(), 0.9);
  // A weight changed after loading (its version moved) is read in float32 again: with every weight
  // touched, the step equals the float32 one exactly.
  for (auto& p : m->parameters()) p.mul_(1.0);
  EXPECT_TRUE(at::equal(run(true), f));
}

TEST(Quantize, W8a8CalibrationGivesEachLinearTheLargestInputItSaw) {
  TempDir dir;
  const std::vector<std::string> docs{"the cat sat on the mat", "a dog ran in the park", "the bird sang in the tree"};
  const std::string model_dir = save_tiny_model(dir.path, docs, "nano");
  std::string text;
  for (int i = 0; i < 20; ++i) text += docs[static_cast<size_t>(i) % 3] + "\n";
  write_file_atomic(dir.path + "/calib.txt", text);
  compress::QuantizeOptions o;
  o.scheme = "w8a8";
  o.calib_path = dir.path + "/calib.txt";
  const auto r = compress::quantize_model(model_dir, dir.path + "/cal", o);
  EXPECT_GT(r.calib_tokens, 20);
  EXPECT_NEAR(r.calib_loss_w8a8, r.calib_loss_f32, 0.02 * r.calib_loss_f32);

  // Every quantised linear the decode step multiplies got a scale: those of the main layers but the
  // absorbed kv_b (MTP modules do not run in decode; the head is not quantised without --include-embeddings).
  const auto st = load_safetensors(dir.path + "/cal/model.safetensors").tensors;
  const int64_t layers = model::load_pretrained(model_dir)->config().num_hidden_layers;
  int64_t expected = 0, scales = 0;
  for (const auto& [name, t] : st) {
    scales += ends_with(name, "_input_scale");
    if (t.scalar_type() != at::kChar || name.find("kv_b_proj") != std::string::npos) continue;
    for (int64_t l = 0; l < layers; ++l) expected += name.rfind("model.layers." + std::to_string(l) + ".", 0) == 0;
  }
  EXPECT_GT(expected, 10);
  EXPECT_EQ(r.calibrated_linears, expected);
  EXPECT_EQ(scales, expected);

  // The first layer's q_a_proj reads RMSNorm(embedding) of each token, whatever the attention does: its
  // scale is the largest |x| of that over the calibration tokens, / 127, computed here through the modules.
  model::CausalLm f = model::load_pretrained(model_dir);
  auto* ds = dynamic_cast<model::DeepseekV3Impl*>(f.get());
  const auto tok = tok::BpeTokenizer::load(model_dir + "/tokenizer.json");
  std::vector<int64_t> ids{tok.eot_id()};
  for (int32_t id : tok.encode(text, false)) ids.push_back(id);
  at::NoGradGuard g;
  const at::Tensor x = ds->model->main_layers[0]->input_layernorm->forward(
      ds->model->embed_tokens->forward(at::tensor(ids, at::kLong)));
  EXPECT_NEAR(st.at("model.layers.0.self_attn.q_a_proj.weight_input_scale").item<float>(),
              x.abs().max().item<float>() / 127, 1e-6);
  EXPECT_EQ(st.count("model.layers.1.self_attn.kv_b_proj.weight_input_scale"), 0u);  // read per head, float32

  // Loaded, each linear carries its static scale and decode uses it: on calibration-like text the logits
  // stay near float32's, and they are not those of dynamic per-token scales.
  model::CausalLm m = model::load_pretrained(dir.path + "/cal");
  auto* dm = dynamic_cast<model::DeepseekV3Impl*>(m.get());
  const auto params = model::model_state(*m);
  EXPECT_FLOAT_EQ(dm->int8_linears.at(params.at("model.layers.0.self_attn.q_a_proj.weight").data_ptr()).input_scale,
                  st.at("model.layers.0.self_attn.q_a_proj.weight_input_scale").item<float>());
  m->eval();
  const at::Tensor prompt = at::tensor(std::vector<int64_t>(ids.begin(), ids.begin() + 12), at::kLong).unsqueeze(0);
  auto run = [&]() {
    model::KvCache cache = dm->make_cache(1, 16);
    return dm->forward_cached(prompt, cache);
  };
  const at::Tensor static_logits = run();
  for (auto& [p, l] : dm->int8_linears) l.input_scale = 0;
  const at::Tensor dynamic_logits = run();
  std::unordered_map<const void*, model::DeepseekV3Impl::Int8Linear> none;
  none.swap(dm->int8_linears);
  const at::Tensor float_logits = run();
  EXPECT_FALSE(at::equal(static_logits, dynamic_logits));
  // (A random tiny model's logits are small, so 8-bit rounding shows: the bound is on the same scale as
  // dynamic scales' error, and per-tensor scales may cost a little more than per-token ones, not much.)
  auto rel = [](const at::Tensor& a, const at::Tensor& b) { return ((a - b).norm() / b.norm()).item<float>(); };
  EXPECT_LT(rel(static_logits, float_logits), 0.15f);
  EXPECT_LT(rel(static_logits, float_logits), 1.5f * rel(dynamic_logits, float_logits));

  compress::QuantizeOptions bad;
  bad.calib_path = dir.path + "/calib.txt";  // int8-weight has no activation scales
  EXPECT_THROW_MSG(compress::quantize_model(model_dir, dir.path + "/bad", bad), ConfigError, "needs --scheme w8a8");
  bad.scheme = "w8a8";
  bad.calib_path = dir.path + "/missing.txt";
  EXPECT_THROW_MSG(compress::quantize_model(model_dir, dir.path + "/bad", bad), ConfigError, "missing.txt");
  EXPECT_FALSE(file_exists(dir.path + "/bad"));
}

}  // namespace
}  // namespace dsforge
