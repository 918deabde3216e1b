// Exported GGUF files run in real llama.cpp (the prebuilt binaries of the pinned npm package
// node-llama-cpp, installed by scripts/setup.sh under BUILD/node): the same tokens, the same next-token
// distributions, the same greedy continuation as dsforge on a briefly trained model.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "dsforge/core/io.h"
#include "dsforge/deploy/export.h"
#include "dsforge/model/generate.h"
#include "dsforge/model/io.h"
#include "dsforge/tokenizer/bpe.h"
#include "test_util.h"

namespace dsforge {
namespace {

// Why llama.cpp cannot be run here, or "" when it can.
std::string llama_missing() {
  if (std::system("node --version >/dev/null 2>&1") != 0) return "node is not installed";
  if (!file_exists(node_modules() + "/node-llama-cpp/package.json"))
    return "node-llama-cpp is not installed under " + node_modules() + " (scripts/setup.sh installs it)";
  return "";
}

nlohmann::json run_probe(const std::string& gguf, const nlohmann::json& request, const std::string& dir) {
  const std::string req = dir + "/request.json", out = dir + "/probe.json", err = dir + "/probe.err";
  write_file_atomic(req, request.dump());
  const std::string cmd = "DSFORGE_NODE_MODULES='" + node_modules() + "' timeout 300 node " + source_dir() +
                          "/tests/llama/probe.mjs '" + gguf + "' '" + req + "' >'" + out + "' 2>'" + err + "'";
  const int rc = std::system(cmd.c_str());
  if (rc != 0) throw std::runtime_error("probe.mjs failed (" + std::to_string(rc) + "): " + read_file(err));
  return nlohmann::json::parse(read_file(out));
}

// Sentences from a small grammar: enough structure for a tiny model to learn in a few seconds.
std::string make_text(uint64_t seed, int sentences) {
  const std::vector<std::string> subj = {"the cat", "a dog", "my friend", "the old man", "our teacher", "a small bird"};
  const std::vector<std::string> verb = {"sees", "likes", "finds", "carries", "paints", "follows"};
  const std::vector<std::string> obj = {"the red ball", "a green tree", "the river", "two apples", "the blue house", "a long road"};
  const std::vector<std::string> tail = {" today.", " again.", " in the morning.", ", and smiles.", " near the park.", "!"};
  std::mt19937_64 rng(seed);
  std::string text;
  for (int i = 0; i < sentences; ++i) {
    std::string s = subj[rng() % subj.size()] + " " + verb[rng() % verb.size()] + " " + obj[rng() % obj.size()] + tail[rng() % tail.size()];
    s[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(s[0])));
    text += s + (i % 5 == 4 ? "\n" : " ");
  }
  return text;
}

// A nano DeepSeek-V3 (or a tiny GPT-2) trained for `steps` Adam steps on the grammar's text.
std::string train_tiny(const std::string& dir, const tok::BpeTokenizer& tok, const std::string& preset, int steps) {
  model::ModelConfig mc = model::model_config_from_preset(preset);
  mc.vocab_size = tok.vocab_size();
  if (preset == "gpt2-tiny") {
    mc.hidden_size = 128;
    mc.intermediate_size = 256;
    mc.num_hidden_layers = 2;
    mc.max_position_embeddings = 256;
  }
  model::CausalLm m = model::build_model(mc);
  m->init_weights(0.02, 7);
  const auto ids = tok.encode(make_text(1, 3000), false);
  const int64_t S = 64, B = 8, row = S + 1 + model::mtp_depth(mc);
  std::vector<at::Tensor> params = m->parameters();
  std::vector<at::Tensor> m1, m2;
  for (auto& p : params) {
    m1.push_back(at::zeros_like(p));
    m2.push_back(at::zeros_like(p));
  }
  std::mt19937_64 rng(3);
  m->train();
  for (int step = 1; step <= steps; ++step) {
    at::Tensor batch = at::empty({B, row}, at::kLong);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t start = static_cast<int64_t>(rng() % (ids.size() - row));
      for (int64_t t = 0; t < row; ++t) batch[b][t] = ids[start + t];
    }
    for (auto& p : params) p.mutable_grad() = at::Tensor();
    m->loss(batch, 0.3).total.backward();
    at::NoGradGuard g;
    const double lr = 3e-3, b1 = 0.9, b2 = 0.99;
    for (size_t i = 0; i < params.size(); ++i) {
      if (!params[i].grad().defined()) continue;
      m1[i].mul_(b1).add_(params[i].grad(), 1 - b1);
      m2[i].mul_(b2).addcmul_(params[i].grad(), params[i].grad(), 1 - b2);
      const at::Tensor mh = m1[i] / (1 - std::pow(b1, step)), vh = m2[i] / (1 - std::pow(b2, step));
      params[i].sub_(lr * mh / (vh.sqrt() + 1e-8));
    }
  }
  const std::string out = dir + "/" + preset;
  model::save_pretrained(out, *m);
  tok.save(out + "/tokenizer.json");
  return out;
}

// Log-probabilities [S, V] (double) of every next token along `ids`, from dsforge.
at::Tensor dsforge_logprobs(const std::string& model_dir, const std::vector<int64_t>& ids) {
  model::CausalLm m = model::load_pretrained(model_dir);
  m->eval();
  at::NoGradGuard g;
  const at::Tensor x = at::tensor(ids, at::kLong).unsqueeze(0);
  return at::log_softmax(m->forward(x)[0].to(at::kDouble), -1);
}

at::Tensor json_matrix(const nlohmann::json& rows) {
  const int64_t S = static_cast<int64_t>(rows.size()), V = static_cast<int64_t>(rows[0].size());
  at::Tensor t = at::empty({S, V}, at::kDouble);
  auto a = t.accessor<double, 2>();
  for (int64_t s = 0; s < S; ++s)
    for (int64_t v = 0; v < V; ++v) a[s][v] = rows[s][v].is_number() ? rows[s][v].get<double>() : -INFINITY;
  return t;
}

at::Tensor centred(const at::Tensor& lp) { return lp - lp.mean(-1, true); }

// Bits per byte of `ids[1:]` under log-probabilities `lp` (row s predicts ids[s + 1]).
double bits_per_byte(const at::Tensor& lp, const std::vector<int64_t>& ids, const tok::BpeTokenizer& tok) {
  double nats = 0, bytes = 0;
  for (size_t s = 0; s + 1 < ids.size(); ++s) {
    nats -= lp[s][ids[s + 1]].item<double>();
    bytes += static_cast<double>(tok.token_bytes(static_cast<int32_t>(ids[s + 1])).size());
  }
  return nats / std::log(2.0) / bytes;
}

std::vector<int64_t> as_ids(const std::vector<int32_t>& v) { return {v.begin(), v.end()}; }

class SlowLlama : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const std::string why = llama_missing(); !why.empty()) GTEST_SKIP() << why;
  }
};

TEST_F(SlowLlama, DeepSeekGgufRunsInLlamaCppLikeDsforge) {
  TempDir dir;
  tok::BpeTokenizer::TrainOptions to;
  to.vocab_size = 512;
  const auto tok = tok::BpeTokenizer::train({make_text(1, 3000)}, to);
  const std::string model_dir = train_tiny(dir.path, tok, "nano", 150);
  deploy::export_gguf(model_dir, dir.path + "/f32.gguf", deploy::GgmlType::F32);
  deploy::export_gguf(model_dir, dir.path + "/q8.gguf", deploy::GgmlType::Q8_0);

  const auto held_out = as_ids(tok.encode(make_text(99, 40), false));
  const std::vector<int64_t> seq(held_out.begin(), held_out.begin() + 128);
  const std::vector<int64_t> prompt(held_out.begin(), held_out.begin() + 8);
  const std::vector<std::string> texts = {"Hello world, it's 2026!\n    indented line\tand a tab.", "The cat sees 12345 apples...",
                                          "naïve café — déjà vu", "  two  spaces\n\n\nthree newlines"};
  nlohmann::json request = {{"n_vocab", tok.vocab_size()}, {"tokenize", texts}, {"logprobs", {seq}},
                            {"greedy", {{{"prompt", prompt}, {"n", 32}}}}};
  const nlohmann::json f32 = run_probe(dir.path + "/f32.gguf", request, dir.path);

  // The embedded vocabulary tokenizes like dsforge.
  for (size_t i = 0; i < texts.size(); ++i)
    EXPECT_EQ(f32["tokens"][i].get<std::vector<int64_t>>(), as_ids(tok.encode(texts[i], false))) << texts[i];

  // Next-token distributions: centred log-probabilities within 1e-3 relative.
  const at::Tensor ours = dsforge_logprobs(model_dir, seq);
  const at::Tensor theirs = json_matrix(f32["logprobs"][0]);
  ASSERT_EQ(theirs.sizes(), ours.sizes());
  const double rel = ((centred(theirs) - centred(ours)).abs().max() / centred(ours).abs().max()).item<double>();
  EXPECT_LT(rel, 1e-3) << "max relative difference of centred log-probabilities";

  // The same greedy continuation.
  model::SampleOptions greedy;
  greedy.max_new_tokens = 32;
  const auto mine = model::generate(model::load_pretrained(model_dir), {prompt}, greedy)[0];
  const std::vector<int64_t> continuation(mine.end() - 32, mine.end());
  EXPECT_EQ(f32["greedy"][0].get<std::vector<int64_t>>(), continuation);

  // q8_0: the same top-1 token at >= 95% of positions, bits per byte within 1% of f32.
  const nlohmann::json q8 = run_probe(dir.path + "/q8.gguf", {{"n_vocab", tok.vocab_size()}, {"logprobs", {seq}}}, dir.path);
  const at::Tensor q = json_matrix(q8["logprobs"][0]);
  const double agree = (q.argmax(-1) == theirs.argmax(-1)).to(at::kDouble).mean().item<double>();
  EXPECT_GE(agree, 0.95);
  const double bpb32 = bits_per_byte(theirs, seq, tok), bpb8 = bits_per_byte(q, seq, tok);
  EXPECT_LT(std::fabs(bpb8 / bpb32 - 1), 0.01) << "f32 " << bpb32 << " q8_0 " << bpb8 << " bits per byte";
  EXPECT_LT(bpb32, 2.0) << "the model should have learned the grammar";
  std::printf("[ llama.cpp ] centred log-prob rel diff %.2e, q8_0 top-1 agreement %.3f, bits/byte f32 %.4f q8_0 %.4f\n",
              rel, agree, bpb32, bpb8);
}

TEST_F(SlowLlama, Gpt2GgufRunsInLlamaCppLikeDsforge) {
  TempDir dir;
  tok::BpeTokenizer::TrainOptions to;
  to.vocab_size = 512;
  const auto tok = tok::BpeTokenizer::train({make_text(1, 3000)}, to);
  const std::string model_dir = train_tiny(dir.path, tok, "gpt2-tiny", 100);
  deploy::export_gguf(model_dir, dir.path + "/g.gguf", deploy::GgmlType::F32);
  const auto held_out = as_ids(tok.encode(make_text(77, 30), false));
  const std::vector<int64_t> seq(held_out.begin(), held_out.begin() + 96);
  const std::vector<int64_t> prompt(held_out.begin(), held_out.begin() + 8);
  const nlohmann::json r = run_probe(dir.path + "/g.gguf",
                                     {{"n_vocab", tok.vocab_size()}, {"logprobs", {seq}}, {"greedy", {{{"prompt", prompt}, {"n", 32}}}}},
                                     dir.path);
  const at::Tensor ours = dsforge_logprobs(model_dir, seq), theirs = json_matrix(r["logprobs"][0]);
  const double rel = ((centred(theirs) - centred(ours)).abs().max() / centred(ours).abs().max()).item<double>();
  EXPECT_LT(rel, 1e-3);
  model::SampleOptions greedy;
  greedy.max_new_tokens = 32;
  const auto mine = model::generate(model::load_pretrained(model_dir), {prompt}, greedy)[0];
  EXPECT_EQ(r["greedy"][0].get<std::vector<int64_t>>(), std::vector<int64_t>(mine.end() - 32, mine.end()));
  std::printf("[ llama.cpp gpt2 ] centred log-prob rel diff %.2e\n", rel);
}

}  // namespace
}  // namespace dsforge
