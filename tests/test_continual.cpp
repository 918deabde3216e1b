// Continual learning (src/dsforge/continual/): the EWC / L2-SP penalty and its gradient against hand
// computation, the diagonal Fisher against the closed form of softmax regression, the replay
// reservoir's uniformity (chi-square), the LwF distillation term, the forgetting metrics, and the
// tokenizer growth that keeps every old id and encoding.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "dsforge/compress/distill.h"
#include "dsforge/continual/continual_task.h"
#include "dsforge/continual/forgetting.h"
#include "dsforge/continual/penalty.h"
#include "dsforge/continual/replay.h"
#include "dsforge/continual/state.h"
#include "dsforge/continual/vocab_growth.h"
#include "dsforge/core/error.h"
#include "dsforge/core/io.h"
#include "dsforge/model/io.h"
#include "test_util.h"
#include "tiny_model.h"

using namespace dsforge;
using namespace dsforge::continual;

namespace {

struct OneParam : torch::nn::Module {
  at::Tensor w;
  explicit OneParam(at::Tensor init) { w = register_parameter("w", init); }
};

// Softmax regression without bias: logits = W x.
struct Softmax : torch::nn::Module {
  at::Tensor w;
  Softmax(int64_t k, int64_t d) { w = register_parameter("w", at::randn({k, d}, at::kDouble) * 0.8); }
};

}  // namespace

TEST(ContinualPenalty, EwcAndL2spValueAndGradientByHand) {
  OneParam m(at::tensor({1.0, 2.0, -1.0}, at::kFloat));
  QuadraticPenalty pen;
  // EWC: lambda/2 * sum F (w - a)^2 = 3/2 * (0.5 * 1 + 2 * 1 + 3 * 0) = 3.75; gradient lambda F (w - a) = [1.5, 6, 0].
  pen.add({"ewc", {{"w", at::tensor({0.5, 2.0, 3.0}, at::kFloat)}}, {{"w", at::tensor({0.0, 1.0, -1.0}, at::kFloat)}}, 3.0});
  // L2-SP: alpha/2 * ||w - w0||^2 = 0.05 * (0 + 1 + 4) = 0.25; gradient alpha (w - w0) = [0, 0.1, -0.2].
  pen.add({"l2sp", {}, {{"w", at::tensor({1.0, 1.0, 1.0}, at::kFloat)}}, 0.1});
  at::Tensor v = pen.value(m);
  EXPECT_NEAR(v.item<double>(), 4.0, 1e-6);
  v.backward();
  at::Tensor g = m.w.grad();
  EXPECT_NEAR(g[0].item<double>(), 1.5, 1e-6);
  EXPECT_NEAR(g[1].item<double>(), 6.1, 1e-6);
  EXPECT_NEAR(g[2].item<double>(), -0.2, 1e-6);
}

TEST(ContinualPenalty, AnchorOfAnotherShapeIsRefusedByName) {
  OneParam m(at::zeros({3}));
  QuadraticPenalty pen;
  pen.add({"ewc", {{"w", at::ones({4})}}, {{"w", at::zeros({4})}}, 1.0});
  try {
    pen.value(m);
    FAIL() << "no error";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("'w'"), std::string::npos) << e.what();
  }
  QuadraticPenalty other;
  other.add({"ewc", {{"v", at::ones({3})}}, {{"v", at::zeros({3})}}, 1.0});
  EXPECT_THROW(other.value(m), CheckpointError);
}

TEST(ContinualFisher, EmpiricalMatchesSoftmaxRegressionClosedForm) {
  at::manual_seed(3);
  const int64_t k = 3, d = 4, n = 40;
  Softmax m(k, d);
  at::Tensor x = at::randn({n, d}, at::kDouble), y = at::randint(0, k, {n}, at::kLong);
  TensorMap f = estimate_fisher(
      m, n, [&](int64_t i) { return FisherSample{at::matmul(x[i], m.w.t()).unsqueeze(0), y.narrow(0, i, 1)}; },
      FisherKind::kEmpirical, 0);
  // d/dW_kj -log p(y | x) = (p_k - [k = y]) x_j, so F_kj = 1/n sum_i (p_ik - [k = y_i])^2 x_ij^2.
  at::Tensor expect = at::zeros({k, d}, at::kDouble);
  {
    at::NoGradGuard ng;
    for (int64_t i = 0; i < n; ++i) {
      at::Tensor p = at::softmax(at::matmul(m.w, x[i]), 0);
      at::Tensor e = p.clone();
      e[y[i].item<int64_t>()] -= 1.0;
      expect += at::outer(e.square(), x[i].square()) / static_cast<double>(n);
    }
  }
  EXPECT_TRUE(at::allclose(f.at("w").to(at::kDouble), expect, 1e-5, 1e-7)) << f.at("w") << expect;
  EXPECT_FALSE(m.w.grad().defined());  // gradients cleared after
}

TEST(ContinualFisher, SampledConvergesToTheExpectedFisher) {
  at::manual_seed(4);
  const int64_t k = 3, d = 2, n_x = 4, draws = 6000;
  Softmax m(k, d);
  at::Tensor x = at::randn({n_x, d}, at::kDouble);
  TensorMap f = estimate_fisher(
      m, draws, [&](int64_t i) { return FisherSample{at::matmul(x[i % n_x], m.w.t()).unsqueeze(0), at::zeros({1}, at::kLong)}; },
      FisherKind::kSampled, 11);
  // With y ~ p: E[(p_k - [k = y])^2] = p_k (1 - p_k), so F_kj = mean over x of p_k (1 - p_k) x_j^2.
  at::Tensor expect = at::zeros({k, d}, at::kDouble);
  {
    at::NoGradGuard ng;
    for (int64_t i = 0; i < n_x; ++i) {
      at::Tensor p = at::softmax(at::matmul(m.w, x[i]), 0);
      expect += at::outer(p * (1 - p), x[i].square()) / static_cast<double>(n_x);
    }
  }
  const at::Tensor got = f.at("w").to(at::kDouble);
  // 6000 draws: each entry within 10% of the expectation (the standard error is about 2%).
  EXPECT_TRUE(at::allclose(got, expect, 0.10, 1e-6)) << got << expect;
  // The empirical Fisher with always-wrong labels (y = 0) is a different quantity: a negative control.
  TensorMap emp = estimate_fisher(
      m, n_x, [&](int64_t i) { return FisherSample{at::matmul(x[i], m.w.t()).unsqueeze(0), at::zeros({1}, at::kLong)}; },
      FisherKind::kEmpirical, 0);
  EXPECT_FALSE(at::allclose(emp.at("w").to(at::kDouble), expect, 0.10, 1e-6));
}

TEST(ContinualReplay, ReservoirKeepsAUniformSample) {
  // 20 items through a reservoir of 5, 4000 seeded runs: each item is kept 1000 times in expectation.
  const int64_t n = 20, cap = 5, runs = 4000;
  std::vector<double> hits(n, 0), first_k(n, 0);
  for (int64_t r = 0; r < runs; ++r) {
    Reservoir res(cap, 2, 1000 + static_cast<uint64_t>(r));
    for (int64_t i = 0; i < n; ++i) {
      const int64_t w[2] = {i, i};
      res.offer(w);
    }
    ASSERT_EQ(res.size(), cap);
    ASSERT_EQ(res.seen(), n);
    for (int64_t j = 0; j < res.size(); ++j) hits[static_cast<size_t>(res.row(j)[0])] += 1;
    for (int64_t j = 0; j < cap; ++j) first_k[static_cast<size_t>(j)] += 1;  // a biased sampler: the first 5
  }
  auto chi2 = [&](const std::vector<double>& h) {
    const double e = static_cast<double>(runs * cap) / static_cast<double>(n);
    double c = 0;
    for (double v : h) c += (v - e) * (v - e) / e;
    return c;
  };
  EXPECT_LT(chi2(hits), 43.82);      // chi-square, 19 degrees of freedom, p = 0.001
  EXPECT_GT(chi2(first_k), 43.82);   // the test can fail: keeping the first items is rejected
}

TEST(ContinualReplay, SaveLoadAndDraw) {
  Reservoir r(3, 4, 1);
  for (int64_t i = 0; i < 10; ++i) {
    const int64_t w[4] = {i, i + 1, i + 2, i + 3};
    r.offer(w);
  }
  Reservoir back = Reservoir::from_tensors(r.to_tensors(), 3, 4, 2, "test");
  EXPECT_EQ(back.seen(), 10);
  ASSERT_EQ(back.size(), 3);
  for (int64_t j = 0; j < 3; ++j)
    for (int64_t t = 0; t < 4; ++t) EXPECT_EQ(back.row(j)[t], r.row(j)[t]);
  SplitMix64 rng(5);
  at::Tensor rows = back.draw(7, rng);
  EXPECT_EQ(rows.sizes(), (std::vector<int64_t>{7, 4}));
  for (int64_t i = 0; i < 7; ++i) EXPECT_EQ(rows[i][1].item<int64_t>(), rows[i][0].item<int64_t>() + 1);
  // Shorter than the run's windows: refused, naming the origin.
  EXPECT_THROW(Reservoir::from_tensors(r.to_tensors(), 3, 5, 2, "replay.safetensors"), CheckpointError);
  // A smaller capacity keeps a subset of the stored rows.
  EXPECT_EQ(Reservoir::from_tensors(r.to_tensors(), 2, 4, 2, "test").size(), 2);
}

TEST(ContinualStrategy, ParsesNamesAndCombinations) {
  EXPECT_EQ(parse_strategy("finetune").name, "finetune");
  const Strategy s = parse_strategy("replay+ewc");
  EXPECT_TRUE(s.replay && s.ewc && !s.online_ewc && !s.lwf && !s.l2sp);
  EXPECT_EQ(s.name, "ewc+replay");
  EXPECT_TRUE(parse_strategy("online-ewc").needs_fisher());
  for (const char* bad : {"ewcc", "finetune+ewc", "ewc+ewc", ""}) {
    try {
      parse_strategy(bad);
      FAIL() << bad;
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("continual.strategy"), std::string::npos) << e.what();
    }
  }
}

TEST(ContinualLwf, DistillationKlByHand) {
  // One row, two classes, T = 2: p_t = softmax([0, 2] / 2), p_s = softmax([1, 0] / 2);
  // T^2 * sum p_t (log p_t - log p_s).
  at::Tensor s = at::tensor({1.0f, 0.0f}).reshape({1, 2}), t = at::tensor({0.0f, 2.0f}).reshape({1, 2});
  const double pt1 = 1 / (1 + std::exp(-1.0)), pt0 = 1 - pt1;     // softmax([0, 1])
  const double ps0 = 1 / (1 + std::exp(-0.5)), ps1 = 1 - ps0;     // softmax([0.5, 0])
  const double expect = 4 * (pt0 * std::log(pt0 / ps0) + pt1 * std::log(pt1 / ps1));
  EXPECT_NEAR(compress::distillation_kl(s, t, 2.0).item<double>(), expect, 1e-6);
  EXPECT_NEAR(compress::distillation_kl(t, t, 3.0).item<double>(), 0.0, 1e-7);
}

TEST(ContinualForgetting, MetricsByHand) {
  // Bits per byte: 3 domains, row i after learning domain i.
  const std::vector<std::vector<double>> r = {{1.0, 3.0, 4.0}, {1.5, 1.2, 3.5}, {2.0, 1.6, 1.1}};
  const std::vector<double> b = {5.0, 5.0, 6.0};
  const ForgettingSummary s = summarize_forgetting(r, b);
  EXPECT_NEAR(s.acc, (2.0 + 1.6 + 1.1) / 3, 1e-12);
  EXPECT_NEAR(s.bwt, ((2.0 - 1.0) + (1.6 - 1.2)) / 2, 1e-12);  // 0.7: forgetting
  EXPECT_NEAR(s.fwt, ((3.0 - 5.0) + (3.5 - 6.0)) / 2, 1e-12);  // -2.25
  EXPECT_NEAR(s.last, 1.1, 1e-12);
  StrategyRun ft{"finetune", r, s};
  std::vector<std::vector<double>> r2 = r;
  r2[2] = {1.2, 1.3, 1.12};
  StrategyRun ewc{"ewc", r2, summarize_forgetting(r2, b)};
  const auto j = forgetting_json({"a", "b", "c"}, b, {ft, ewc});
  // ewc's BWT = (0.2 + 0.1) / 2 = 0.15: 1 - 0.15 / 0.7 of the forgetting removed; last 1.12 / 1.1 - 1.
  EXPECT_NEAR(j["runs"][1]["bwt_vs_finetune"].get<double>(), 1 - 0.15 / 0.7, 1e-12);
  EXPECT_NEAR(j["runs"][1]["last_vs_finetune"].get<double>(), 1.12 / 1.1 - 1, 1e-12);
  EXPECT_THROW(summarize_forgetting({{1.0}}, {1.0}), ConfigError);
  EXPECT_NE(forgetting_table({"a", "b", "c"}, b, {ft, ewc}).find("| ewc |"), std::string::npos);
}

TEST(ContinualVocab, ExtendKeepsOldIdsAndEncodings) {
  std::vector<std::string> english;
  for (int i = 0; i < 60; ++i) english.push_back("the cat sat on the mat number " + std::to_string(i) + " and ran away");
  tok::BpeTokenizer::TrainOptions to;
  to.vocab_size = 300;
  const tok::BpeTokenizer base = tok::BpeTokenizer::train(english, to);
  // Bytes: 你 E4 BD A0, 好 E5 A5 BD. Every adjacent pair of "你好你好你好" occurs 3 times except (BD, E4)
  // (twice); the tie goes to the lexicographically greatest pair of byte strings: (E5, A5).
  const tok::BpeTokenizer grown = extend_tokenizer(base, {"你好你好你好"}, 1);
  ASSERT_EQ(grown.vocab_size(), base.vocab_size() + 1);
  EXPECT_EQ(grown.token_bytes(static_cast<int32_t>(base.vocab_size())), std::string("\xE5\xA5"));
  // More merges on Chinese text: old ids and merges unchanged, English encodes identically.
  const std::vector<std::string> chinese = {"学而时习之不亦说乎有朋自远方来不亦乐乎", "学而不思则罔思而不学则殆",
                                            "温故而知新可以为师矣", "知之为知之不知为不知是知也"};
  const tok::BpeTokenizer g2 = extend_tokenizer(base, chinese, 25);
  EXPECT_GT(g2.vocab_size(), base.vocab_size());
  EXPECT_LE(g2.vocab_size(), base.vocab_size() + 25);
  for (int32_t id = 0; id < base.vocab_size(); ++id) ASSERT_EQ(g2.token_bytes(id), base.token_bytes(id)) << id;
  for (size_t r = 0; r < base.merges().size(); ++r) ASSERT_EQ(g2.merges()[r], base.merges()[r]) << r;
  for (const auto& doc : english) EXPECT_EQ(g2.encode(doc), base.encode(doc)) << doc;
  EXPECT_EQ(g2.encode("a new sentence the model never saw, 12345!"), base.encode("a new sentence the model never saw, 12345!"));
  for (const auto& doc : chinese) {
    EXPECT_LT(g2.encode(doc).size(), base.encode(doc).size());
    EXPECT_EQ(g2.decode(g2.encode(doc)), doc);
  }
  // Survives tokenizer.json.
  const tok::BpeTokenizer again = tok::BpeTokenizer::from_json(g2.to_json(), "test");
  EXPECT_EQ(again.encode(chinese[0]), g2.encode(chinese[0]));
}

TEST(ContinualVocab, GrownModelRowsAreTheMeanOfTheirBytes) {
  TempDir dir;
  std::vector<std::string> docs;
  for (int i = 0; i < 40; ++i) docs.push_back("the river flows to the sea " + std::to_string(i));
  const std::string from = save_tiny_model(dir.path, docs);
  const std::string jsonl = path_join(dir.path, "train.jsonl");
  std::string lines;
  for (int i = 0; i < 20; ++i) lines += nlohmann::json{{"text", "温故而知新可以为师矣学而时习之"}}.dump() + "\n";
  write_file_atomic(jsonl, lines);
  const std::string out = path_join(dir.path, "grown");
  grow_model_folder(from, out, jsonl, 6, 1);
  const auto old_tok = tok::BpeTokenizer::load(path_join(from, "tokenizer.json"));
  const auto new_tok = tok::BpeTokenizer::load(path_join(out, "tokenizer.json"));
  const int64_t v0 = old_tok.vocab_size(), v1 = new_tok.vocab_size();
  ASSERT_EQ(v1, v0 + 6);
  model::CausalLm a = model::load_pretrained(from), b = model::load_pretrained(out);
  EXPECT_EQ(b->config().vocab_size, v1);
  const TensorMap sa = model::model_state(*a), sb = model::model_state(*b);
  for (const char* name : {"model.embed_tokens.weight", "lm_head.weight"}) {
    const at::Tensor ta = sa.at(name), tb = sb.at(name);
    ASSERT_EQ(tb.size(0), v1) << name;
    EXPECT_TRUE(at::equal(tb.narrow(0, 0, v0), ta)) << name;
    for (int64_t id = v0; id < v1; ++id) {
      at::Tensor mean = at::zeros_like(ta[0]);
      const std::string& bytes = new_tok.token_bytes(static_cast<int32_t>(id));
      for (unsigned char c : bytes) mean += ta[old_tok.encode(std::string(1, static_cast<char>(c)), false).at(0)];
      EXPECT_TRUE(at::allclose(tb[id], mean / static_cast<double>(bytes.size()), 1e-5, 1e-6)) << name << " row " << id;
    }
  }
  // On old tokens the grown model predicts as before (old columns of the logits unchanged).
  at::NoGradGuard ng;
  a->eval();
  b->eval();
  at::Tensor ids = at::tensor(std::vector<int64_t>{5, 9, 30, 7}, at::kLong).unsqueeze(0);
  EXPECT_TRUE(at::allclose(b->forward(ids).narrow(2, 0, v0), a->forward(ids), 1e-5, 1e-5));
}
